//! Order placed → payment created exactly once, end to end: the real service,
//! a real MariaDB and a real Kafka-protocol broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use payment_e2e::kafka::{self, Received};
use payment_e2e::orders::{order_placed, TestTopics};
use payment_e2e::{spawn_app, TestApp};
use rand::seq::SliceRandom as _;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::MySqlPool;

async fn payments(pool: &MySqlPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM payments")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn handled(app: &TestApp, topic: &str) -> f64 {
    app.counter("kafka_messages_total", &[("topic", topic)])
        .await
}

/// Waits until the service has handled `count` messages of `topic`.
async fn wait_handled(app: &TestApp, topic: &str, count: f64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while handled(app, topic).await < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} handled",
            handled(app, topic).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn distinct_ids(messages: &[Received]) -> HashSet<String> {
    messages
        .iter()
        .map(|m| m.json()["id"].as_str().unwrap().to_owned())
        .collect()
}

#[sqlx::test(migrations = false)]
async fn a_thousand_orders_each_delivered_three_times_make_a_thousand_payments(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const ORDERS: usize = 1_000;
    let topics = TestTopics::create().await;
    let app = spawn_app(&db, topics.config()).await;
    let pool = pool_options.connect_with(db).await.unwrap();

    let mut messages: Vec<(String, Vec<u8>)> = (0..ORDERS)
        .flat_map(|i| {
            let order_id = format!("order-{i:06}");
            let payload = order_placed(&format!("evt-{i}"), &order_id, 1_000 + i as u64);
            [
                (order_id.clone(), payload.clone()),
                (order_id.clone(), payload.clone()),
                (order_id, payload),
            ]
        })
        .collect();
    messages.shuffle(&mut rand::rng());
    let producer = kafka::producer();
    let started = Instant::now();
    kafka::publish_all(&producer, &topics.order_placed, &messages).await;
    wait_handled(
        &app,
        &topics.order_placed,
        (3 * ORDERS) as f64,
        Duration::from_secs(180),
    )
    .await;
    let elapsed = started.elapsed();
    println!(
        "handled {} messages ({ORDERS} payments) in {elapsed:?}: {:.0} payments/s, {:.0} messages/s",
        3 * ORDERS,
        ORDERS as f64 / elapsed.as_secs_f64(),
        (3 * ORDERS) as f64 / elapsed.as_secs_f64(),
    );

    assert_eq!(payments(&pool).await, ORDERS as i64);
    assert_eq!(
        app.counter(
            "kafka_messages_total",
            &[("topic", &topics.order_placed), ("outcome", "created")]
        )
        .await,
        ORDERS as f64
    );
    // Read until every payment is announced, then a little longer: no
    // further event id may appear (redeliveries of the same id would be fine).
    let mut complete_at: Option<Instant> = None;
    let created = kafka::read_until(&topics.payment_created, Duration::from_secs(60), |seen| {
        if complete_at.is_none() && distinct_ids(seen).len() >= ORDERS {
            complete_at = Some(Instant::now());
        }
        complete_at.is_some_and(|at| at.elapsed() > Duration::from_secs(2))
    })
    .await;
    assert_eq!(distinct_ids(&created).len(), ORDERS);
    let orders: HashSet<String> = created
        .iter()
        .map(|m| m.json()["data"]["orderId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(orders.len(), ORDERS);
    for message in &created {
        let event = message.json();
        assert_eq!(event["type"], "PaymentCreatedEvent");
        assert_eq!(message.headers["id"], event["id"].as_str().unwrap());
        assert_eq!(message.headers["eventType"], "PaymentCreatedEvent");
        assert_eq!(message.key.as_deref(), event["subject"].as_str());
        let order_number: u64 = event["data"]["orderId"].as_str().unwrap()[6..]
            .parse()
            .unwrap();
        assert_eq!(event["data"]["amount"], 1_000 + order_number);
    }
    app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_crash_mid_stream_loses_nothing_and_doubles_nothing(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const ORDERS: usize = 600;
    let topics = TestTopics::create().await;
    let pool = pool_options.connect_with(db.clone()).await.unwrap();
    let messages: Vec<(String, Vec<u8>)> = (0..ORDERS)
        .map(|i| {
            let order_id = format!("crash-{i:06}");
            let payload = order_placed(&format!("evt-crash-{i}"), &order_id, 5_000);
            (order_id, payload)
        })
        .collect();
    kafka::publish_all(&kafka::producer(), &topics.order_placed, &messages).await;

    let first = spawn_app(&db, topics.config()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while payments(&pool).await < 100 {
        assert!(
            Instant::now() < deadline,
            "the first instance never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    let at_crash = payments(&pool).await;
    assert!(
        at_crash < ORDERS as i64,
        "the crash must come mid-stream ({at_crash})"
    );

    let second = spawn_app(&db, topics.config()).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while payments(&pool).await < ORDERS as i64 {
        assert!(
            Instant::now() < deadline,
            "only {} payments",
            payments(&pool).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = kafka::read_until(&topics.payment_created, Duration::from_secs(60), |seen| {
        distinct_ids(seen).len() >= ORDERS
    })
    .await;
    assert_eq!(
        distinct_ids(&created).len(),
        ORDERS,
        "every payment announced"
    );
    let inbox: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(inbox, ORDERS as i64);
    assert_eq!(payments(&pool).await, ORDERS as i64);
    second.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn poison_messages_go_to_the_dlq_with_their_reason_and_block_nothing(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let topics = TestTopics::create().await;
    let app = spawn_app(&db, topics.config()).await;
    let pool = pool_options.connect_with(db).await.unwrap();
    let producer = kafka::producer();
    // One key: one partition, so the good messages after the bad ones prove
    // the partition is not blocked.
    let key = "same-partition";
    let sent: [(&str, Vec<u8>); 6] = [
        ("good", order_placed("evt-p1", "order-p1", 1_000)),
        ("not json", b"{ this is not json".to_vec()),
        ("good", order_placed("evt-p2", "order-p2", 2_000)),
        ("bad order id", order_placed("evt-p3", "bad!", 3_000)),
        ("other amount", order_placed("evt-p4", "order-p1", 9_999)),
        ("good", order_placed("evt-p5", "order-p5", 5_000)),
    ];
    for (_, payload) in &sent {
        kafka::publish(
            &producer,
            &topics.order_placed,
            key,
            payload,
            &[("traceparent", "00-abc-def-01")],
        )
        .await;
    }
    wait_handled(
        &app,
        &topics.order_placed,
        sent.len() as f64,
        Duration::from_secs(60),
    )
    .await;

    assert_eq!(payments(&pool).await, 3);
    let dlq = kafka::read_until(
        &format!("{}.dlq", topics.order_placed),
        Duration::from_secs(30),
        |seen| seen.len() >= 3,
    )
    .await;
    assert_eq!(dlq.len(), 3);
    let by_payload: HashMap<&[u8], &Received> = dlq
        .iter()
        .map(|m| (m.payload.as_deref().unwrap(), m))
        .collect();
    for (expected_reason, payload) in [
        ("not a CloudEvent of type OrderPlacedEvent", &sent[1].1),
        ("orderId", &sent[3].1),
        ("already has a payment", &sent[4].1),
    ] {
        let parked = by_payload[payload.as_slice()];
        assert!(
            parked.headers["dlq.error"].contains(expected_reason),
            "{:?}",
            parked.headers
        );
        assert_eq!(parked.headers["dlq.original.topic"], topics.order_placed);
        assert!(parked.headers["dlq.original.partition"]
            .parse::<i32>()
            .is_ok());
        assert!(parked.headers["dlq.original.offset"].parse::<i64>().is_ok());
        assert_eq!(
            parked.headers["traceparent"], "00-abc-def-01",
            "original headers kept"
        );
        assert_eq!(parked.key.as_deref(), Some(key));
    }
    assert_eq!(
        app.counter(
            "kafka_messages_total",
            &[
                ("topic", &topics.order_placed),
                ("outcome", "dead_lettered")
            ]
        )
        .await,
        3.0
    );
    let amount: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT amount FROM payments WHERE order_id = 'order-p1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        amount,
        rust_decimal::Decimal::from(1_000),
        "the conflicting amount was not applied"
    );
    app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_database_outage_is_retried_without_loss_and_reported_by_readiness(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let topics = TestTopics::create().await;
    let admin = pool_options.connect_with(db.clone()).await.unwrap();
    // The service logs in as its own account, which the test can lock out.
    let user = format!("svc_{}", uuid::Uuid::now_v7().simple());
    let database: String = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&admin)
        .await
        .unwrap();
    for statement in [
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'svc-pw'"),
        format!("GRANT ALL ON `{database}`.* TO '{user}'@'%'"),
    ] {
        sqlx::query(&statement).execute(&admin).await.unwrap();
    }
    let app = spawn_app(
        &db.clone().username(&user).password("svc-pw"),
        topics.config(),
    )
    .await;
    payment_e2e::orders::place_order(&topics, &admin, "outage-000", 1_000).await;

    // The database goes away for the service: no new logins, open ones cut.
    sqlx::query(&format!("ALTER USER '{user}'@'%' ACCOUNT LOCK"))
        .execute(&admin)
        .await
        .unwrap();
    let sessions: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM information_schema.processlist WHERE user = ?")
            .bind(&user)
            .fetch_all(&admin)
            .await
            .unwrap();
    for id in sessions {
        let _ = sqlx::query(&format!("KILL CONNECTION {id}"))
            .execute(&admin)
            .await;
    }
    let messages: Vec<(String, Vec<u8>)> = (1..=5)
        .map(|i| {
            let order_id = format!("outage-{i:03}");
            (
                order_id.clone(),
                order_placed(&format!("evt-outage-{i}"), &order_id, 1_000),
            )
        })
        .collect();
    kafka::publish_all(&kafka::producer(), &topics.order_placed, &messages).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = app.get("/health/ready").await;
        if response.status() == 503 {
            let body: serde_json::Value = response.json().await.unwrap();
            let down = body["down"].as_array().unwrap();
            if down.iter().any(|d| d == "consumer") {
                assert!(down.iter().any(|d| d == "database"), "{body}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "readiness never reported the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        payments(&admin).await,
        1,
        "nothing was written during the outage"
    );

    sqlx::query(&format!("ALTER USER '{user}'@'%' ACCOUNT UNLOCK"))
        .execute(&admin)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while payments(&admin).await < 6 {
        assert!(
            Instant::now() < deadline,
            "only {} payments after recovery",
            payments(&admin).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.get("/health/ready").await.status(), 200);
    assert!(
        app.counter(
            "kafka_handling_retries_total",
            &[("topic", &topics.order_placed)]
        )
        .await
            >= 1.0
    );
    assert_eq!(
        app.counter(
            "kafka_messages_total",
            &[
                ("topic", &topics.order_placed),
                ("outcome", "dead_lettered")
            ]
        )
        .await,
        0.0,
        "a transient failure is never dead-lettered"
    );
    app.stop().await.unwrap();
    sqlx::query(&format!("DROP USER '{user}'@'%'"))
        .execute(&admin)
        .await
        .unwrap();
}

// Issue 9 item 1, the edge: the envelope parser refuses an event id the
// inbox column cannot hold and an amount the DECIMAL(19,4) column cannot
// hold (permanent: dead-lettered with the reason), and ignores a
// traceparent the outbox column cannot hold (never stored: the payment's
// event starts a new trace instead). Until the edge checked them, these
// reached MariaDB and failed there on every attempt, stalling the
// partition; that the store itself classifies such refusals as permanent is
// proven by crates/infra/tests/mariadb_repository.rs and the unit tests of
// crates/infra/src/mariadb/errors.rs.
#[sqlx::test(migrations = false)]
async fn values_a_column_cannot_hold_are_refused_or_dropped_at_the_edge_and_the_orders_behind_go_through(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const GOOD_TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let topics = TestTopics::create().await;
    let app = spawn_app(&db, topics.config()).await;
    let pool = pool_options.connect_with(db).await.unwrap();
    let producer = kafka::producer();
    let key = "same-partition";
    let not_ascii = order_placed("evt-주문-1", "order-refused-1", 1_000);
    // 10^15 won: 16 digits, more than DECIMAL(19,4) holds.
    let too_much = order_placed("evt-too-much-1", "order-refused-2", 10_u64.pow(15));
    let long_trace = format!("00-{}-b7ad6b7169203331-01", "0".repeat(40));
    let long_traced = order_placed("evt-traced-2", "order-traced-2", 2_000);
    kafka::publish(&producer, &topics.order_placed, key, &not_ascii, &[]).await;
    kafka::publish(&producer, &topics.order_placed, key, &too_much, &[]).await;
    kafka::publish(
        &producer,
        &topics.order_placed,
        key,
        &long_traced,
        &[("traceparent", &long_trace)],
    )
    .await;
    for i in 1..=3 {
        let good = order_placed(&format!("evt-after-{i}"), &format!("order-after-{i}"), 500);
        let trace: &[(&str, &str)] = if i == 1 {
            &[("traceparent", GOOD_TRACE)]
        } else {
            &[]
        };
        kafka::publish(&producer, &topics.order_placed, key, &good, trace).await;
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    while payments(&pool).await < 4 {
        assert!(
            Instant::now() < deadline,
            "the orders behind the refused ones are stuck"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dlq = kafka::read_until(
        &format!("{}.dlq", topics.order_placed),
        Duration::from_secs(30),
        |seen| seen.len() >= 2,
    )
    .await;
    assert_eq!(dlq.len(), 2);
    for (payload, reason) in [(&not_ascii, "id must be"), (&too_much, "amount")] {
        let parked = dlq
            .iter()
            .find(|m| m.payload.as_deref() == Some(payload.as_slice()))
            .expect("dead-lettered");
        assert!(
            parked.headers["dlq.error"].contains(reason),
            "{:?}",
            parked.headers
        );
    }
    assert_eq!(
        payments(&pool).await,
        4,
        "nothing of the refused ones written"
    );

    // Every event carries a W3C traceparent (DESIGN §3): a valid one is
    // continued; the over-long one was dropped, never stored, and a new
    // trace started in its place, as for an order that brought none.
    let created = kafka::read_until(&topics.payment_created, Duration::from_secs(30), |seen| {
        seen.len() >= 4
    })
    .await;
    let trace_of = |order: &str| {
        created
            .iter()
            .find(|m| m.json()["data"]["orderId"] == order)
            .unwrap_or_else(|| panic!("{order} became a payment"))
            .headers
            .get("traceparent")
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(trace_of("order-after-1"), GOOD_TRACE, "continued");
    let started = trace_of("order-traced-2");
    assert!(is_w3c(&started), "{started:?}");
    assert_ne!(started, long_trace);
    assert!(!started.contains(&"0".repeat(32)), "{started}");
    let other = trace_of("order-after-2");
    assert!(is_w3c(&other), "{other:?}");
    assert_ne!(started[3..35], other[3..35], "each a trace of its own");
    app.stop().await.unwrap();
}

/// A version-00 W3C `traceparent` (the form the service keeps).
fn is_w3c(value: &str) -> bool {
    payment_application::trace::traceparent(Some(value)).as_deref() == Some(value)
}

//! The booking saga end to end: `saga.request_payment` in, the fake
//! gateway called once per booking, `payment.initiated` and then
//! `payment.completed` / `payment.failed` out through the outbox — with the
//! real service, MariaDB and the broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use payment_e2e::kafka::{self, Received};
use payment_e2e::saga::{request_payment, SagaTopics};
use payment_e2e::spawn_app;
use serde_json::{json, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::MySqlPool;

fn ledger() -> PathBuf {
    std::env::temp_dir().join(format!(
        "saga-ledger-{}.jsonl",
        uuid::Uuid::now_v7().simple()
    ))
}

/// The fake gateway's confirm calls, from its ledger.
fn calls(ledger: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn scalar(pool: &MySqlPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Waits until every booking is answered.
async fn wait_answered(pool: &MySqlPool, bookings: i64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let answered = scalar(
            pool,
            "SELECT COUNT(*) FROM saga_bookings WHERE answered_at IS NOT NULL",
        )
        .await;
        if answered >= bookings {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{answered} of {bookings} answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads `topic` until `count` messages came, then a little longer to see
/// any extra one.
async fn read_exactly(topic: &str, count: usize) -> Vec<Received> {
    let mut enough_at: Option<Instant> = None;
    kafka::read_until(topic, Duration::from_secs(60), |received| {
        if received.len() < count {
            return false;
        }
        let since = *enough_at.get_or_insert_with(Instant::now);
        since.elapsed() > Duration::from_secs(2)
    })
    .await
}

fn by_booking(messages: &[Received]) -> HashMap<String, Value> {
    messages
        .iter()
        .map(|m| {
            let event = m.json();
            (
                event["data"]["bookingId"].as_str().unwrap().to_owned(),
                event,
            )
        })
        .collect()
}

#[sqlx::test(migrations = false)]
async fn duplicates_of_a_request_do_nothing_twice(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const BOOKINGS: usize = 100;
    let topics = SagaTopics::create().await;
    let ledger = ledger();
    let app = spawn_app(
        &db,
        topics.config(json!({ "mode": "approve", "ledger": ledger })),
    )
    .await;
    let pool = pool_options.connect_with(db).await.unwrap();

    // Each request three times, and once more under another id (the
    // orchestrator retrying): one payment, one call, one answer per booking.
    let messages: Vec<(String, Vec<u8>)> = (0..BOOKINGS)
        .flat_map(|i| {
            let booking = format!("booking-{i:04}");
            let saga = format!("saga-{i:04}");
            let first = request_payment(
                &format!("req-{i}"),
                &saga,
                &booking,
                10_000 + i as u64,
                None,
            );
            let retry = request_payment(
                &format!("req-{i}-retry"),
                &saga,
                &booking,
                10_000 + i as u64,
                None,
            );
            [
                (booking.clone(), first.clone()),
                (booking.clone(), first.clone()),
                (booking.clone(), first),
                (booking, retry),
            ]
        })
        .collect();
    kafka::publish_all(&kafka::producer(), &topics.request, &messages).await;
    app.wait_handled(
        &topics.request,
        (4 * BOOKINGS) as f64,
        Duration::from_secs(120),
    )
    .await;
    wait_answered(&pool, BOOKINGS as i64, Duration::from_secs(30)).await;

    assert_eq!(
        scalar(&pool, "SELECT COUNT(*) FROM payments").await,
        BOOKINGS as i64
    );
    assert_eq!(
        scalar(&pool, "SELECT COUNT(*) FROM payments WHERE status = 'DONE'").await,
        BOOKINGS as i64
    );
    let calls = calls(&ledger);
    assert_eq!(calls.len(), BOOKINGS, "one processor call per booking");
    let initiated = read_exactly(&topics.initiated, BOOKINGS).await;
    let completed = read_exactly(&topics.completed, BOOKINGS).await;
    assert_eq!(initiated.len(), BOOKINGS);
    assert_eq!(completed.len(), BOOKINGS);
    let completed = by_booking(&completed);
    assert_eq!(completed.len(), BOOKINGS, "one answer per booking");
    let first = &completed["booking-0007"];
    assert_eq!(first["type"], "PaymentCompleted");
    assert_eq!(
        first["correlationid"], "saga-0007",
        "the saga id is the correlation"
    );
    assert_eq!(first["causationid"], "req-7", "caused by the first request");
    assert_eq!(first["data"]["amount"], 10_007);
    assert!(first["data"]["reference"]
        .as_str()
        .unwrap()
        .starts_with("saga_"));
    let initiated = by_booking(&initiated);
    assert_eq!(
        initiated["booking-0007"]["data"]["paymentId"],
        first["data"]["paymentId"]
    );
    assert_eq!(initiated["booking-0007"]["correlationid"], "saga-0007");
    app.stop().await.unwrap();
    std::fs::remove_file(ledger).ok();
}

/// Runs `bookings` through a fresh service on `db` in random mode; answers
/// the approved booking ids.
async fn approved_bookings(
    db: &MySqlConnectOptions,
    pool: &MySqlPool,
    bookings: usize,
) -> HashSet<String> {
    let topics = SagaTopics::create().await;
    let app = spawn_app(
        db,
        topics.config(json!({ "mode": "random", "success_rate": 0.7, "seed": 20261202 })),
    )
    .await;
    let messages: Vec<(String, Vec<u8>)> = (0..bookings)
        .map(|i| {
            let booking = format!("booking-{i:04}");
            let payload =
                request_payment(&format!("req-{i}"), "saga-seeded", &booking, 5_000, None);
            (booking, payload)
        })
        .collect();
    kafka::publish_all(&kafka::producer(), &topics.request, &messages).await;
    app.wait_handled(&topics.request, bookings as f64, Duration::from_secs(120))
        .await;
    wait_answered(pool, bookings as i64, Duration::from_secs(30)).await;
    let completed = by_booking(&read_exactly(&topics.completed, 1).await);
    app.stop().await.unwrap();
    let approved: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(b.booking_id AS CHAR) FROM saga_bookings b JOIN payments p ON p.payment_id = b.payment_id \
         WHERE p.status = 'DONE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        completed.keys().all(|b| approved.contains(b)),
        "the answers say the same"
    );
    approved.into_iter().collect()
}

#[sqlx::test(migrations = false)]
async fn random_mode_with_a_fixed_seed_splits_the_same_on_every_run(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const BOOKINGS: usize = 200;
    let pool = pool_options.clone().connect_with(db.clone()).await.unwrap();
    let first = approved_bookings(&db, &pool, BOOKINGS).await;
    // The second run on a database of its own: nothing remembered.
    let second_name = format!("saga_seed_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {second_name}"))
        .execute(&pool)
        .await
        .unwrap();
    let second_db = db.clone().database(&second_name);
    let second_pool = pool_options.connect_with(second_db.clone()).await.unwrap();
    let second = approved_bookings(&second_db, &second_pool, BOOKINGS).await;
    second_pool.close().await;
    sqlx::query(&format!("DROP DATABASE {second_name}"))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(first, second, "the same bookings approved");
    assert!(
        (110..170).contains(&first.len()),
        "about 70% of {BOOKINGS}: {}",
        first.len()
    );
}

#[sqlx::test(migrations = false)]
async fn forced_declines_fail_and_bad_requests_go_to_the_dlq_with_a_reason(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let topics = SagaTopics::create().await;
    let app = spawn_app(&db, topics.config(json!({ "mode": "approve" }))).await;
    let pool = pool_options.connect_with(db).await.unwrap();
    let producer = kafka::producer();
    let bad = request_payment("req-bad", "saga-bad", "booking-bad", 1_000, None);
    let bad = String::from_utf8(bad)
        .unwrap()
        .replace("\"totalPrice\":1000", "\"totalPrice\":-5");
    kafka::publish(&producer, &topics.request, "k", bad.as_bytes(), &[]).await;
    let declined = request_payment("req-d", "saga-d", "booking-d", 2_000, Some("decline"));
    kafka::publish(&producer, &topics.request, "k", &declined, &[]).await;

    let dead = kafka::read_until(
        &format!("{}.dlq", topics.request),
        Duration::from_secs(60),
        |r| !r.is_empty(),
    )
    .await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].headers["dlq.error"].contains("totalPrice"),
        "{:?}",
        dead[0].headers
    );
    let failed =
        kafka::read_until(&topics.failed, Duration::from_secs(60), |r| !r.is_empty()).await;
    let failed = failed[0].json();
    assert_eq!(failed["type"], "PaymentFailed");
    assert_eq!(failed["data"]["bookingId"], "booking-d");
    assert_eq!(failed["data"]["reason"], "REJECT_CARD_PAYMENT");
    assert_eq!(failed["correlationid"], "saga-d");
    assert_eq!(scalar(&pool, "SELECT COUNT(*) FROM payments").await, 1);
    app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn an_unknown_outcome_is_settled_by_the_reconciler_and_answered_once(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let topics = SagaTopics::create().await;
    let ledger = ledger();
    let mut config =
        topics.config(json!({ "mode": "unknown", "unknown_lookups": 1, "ledger": ledger }));
    config["reconciler"] = json!({ "interval_ms": 200, "min_age_ms": 0, "first_backoff_ms": 100 });
    let app = spawn_app(&db, config).await;
    let pool = pool_options.connect_with(db).await.unwrap();
    let request = request_payment("req-u", "saga-u", "booking-u", 3_000, None);
    kafka::publish(&kafka::producer(), &topics.request, "k", &request, &[]).await;
    wait_answered(&pool, 1, Duration::from_secs(60)).await;
    let completed = read_exactly(&topics.completed, 1).await;
    assert_eq!(completed.len(), 1);
    let completed = completed[0].json();
    assert_eq!(completed["data"]["bookingId"], "booking-u");
    assert_eq!(completed["correlationid"], "saga-u");
    assert_eq!(
        calls(&ledger).len(),
        1,
        "resolved by lookups, never confirmed twice"
    );
    app.stop().await.unwrap();
    std::fs::remove_file(ledger).ok();
}

/// The saga's throughput through the fake gateway (approve, no delay):
/// 2,000 requests published at once, timed until every booking is
/// answered. A measurement, not a check: `cargo test -p payment-e2e --test
/// saga -- --ignored --nocapture`.
#[sqlx::test(migrations = false)]
#[ignore = "a measurement; run on demand"]
async fn measure_requests_per_second(pool_options: MySqlPoolOptions, db: MySqlConnectOptions) {
    const BOOKINGS: usize = 2_000;
    let topics = SagaTopics::create().await;
    let app = spawn_app(&db, topics.config(json!({ "mode": "approve" }))).await;
    let pool = pool_options.connect_with(db).await.unwrap();
    let messages: Vec<(String, Vec<u8>)> = (0..BOOKINGS)
        .map(|i| {
            let booking = format!("booking-{i:05}");
            let payload = request_payment(&format!("req-{i}"), "saga-load", &booking, 9_000, None);
            (booking, payload)
        })
        .collect();
    kafka::publish_all(&kafka::producer(), &topics.request, &messages).await;
    let started = Instant::now();
    wait_answered(&pool, BOOKINGS as i64, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    println!(
        "{BOOKINGS} saga requests answered in {:.1} s: {:.0} requests/s",
        elapsed.as_secs_f64(),
        BOOKINGS as f64 / elapsed.as_secs_f64()
    );
    app.stop().await.unwrap();
}

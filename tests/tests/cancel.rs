//! Cancels end to end: partial and full, concurrent, idempotent, and an
//! unknown outcome resolved without a second refund — a real service, a real
//! MariaDB, a real broker and the fake Toss over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fake_toss::Scenario;
use payment_e2e::orders::{place_order, status, wait_status};
use payment_e2e::toss::{events_for, Reconciler, TossWorld};
use serde_json::{json, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

/// A DONE payment of `amount` KRW; answers its id.
async fn paid(w: &TossWorld, order_id: &str, payment_key: &str, amount: u64) -> String {
    let payment_id = place_order(&w.topics, &w.pool, order_id, amount).await;
    assert_eq!(w.confirm(payment_key, order_id, amount).await.status(), 200);
    payment_id
}

async fn balance(w: &TossWorld, payment_id: &str) -> Value {
    let payment: Value = w
        .app
        .get(&format!("/api/v1/payments/{payment_id}"))
        .await
        .json()
        .await
        .unwrap();
    payment["balanceAmount"].clone()
}

/// The payment's CANCEL transactions, as the API shows them.
async fn cancel_transactions(w: &TossWorld, payment_id: &str) -> Vec<Value> {
    let transactions: Value = w
        .app
        .get(&format!("/api/v1/payments/{payment_id}/transactions"))
        .await
        .json()
        .await
        .unwrap();
    transactions
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "CANCEL")
        .cloned()
        .collect()
}

#[sqlx::test(migrations = false)]
async fn ten_concurrent_partial_cancels_refund_exactly_the_balance(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Off, 5_000).await;
    let payment_id = paid(&w, "order-cancel-10", "tgen_cancel_10", 5_000).await;

    let cancels = (0..10).map(|i| {
        let key = format!("cancel-{i}");
        let w = &w;
        let payment_id = payment_id.clone();
        async move {
            let response = w
                .cancel(
                    &payment_id,
                    Some(&key),
                    &json!({ "cancelReason": "split refund", "cancelAmount": 1000 }),
                )
                .await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(cancels).await;
    let succeeded = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(succeeded, 5, "{answers:?}");
    for (status, body) in answers.iter().filter(|(status, _)| *status != 200) {
        assert_eq!(*status, 422, "{body}");
        assert_eq!(body["code"], "NOT_CANCELABLE_AMOUNT");
    }

    assert_eq!(status(&w.pool, "order-cancel-10").await, "CANCELED");
    assert_eq!(balance(&w, &payment_id).await, 0);
    let calls = w.toss.calls();
    assert_eq!(
        calls.refunded_for("tgen_cancel_10"),
        5_000,
        "Toss refunded exactly the payment"
    );
    assert_eq!(
        calls.cancel_requests, 5,
        "refused cancels never reached Toss"
    );

    let announced = events_for(&w.topics.payment_canceled, &payment_id, 5).await;
    let last = announced.last().unwrap().json();
    assert_eq!(last["type"], "PaymentCanceledEvent");
    let totals: Vec<i64> = announced
        .iter()
        .map(|m| m.json()["data"]["totalCanceledAmount"].as_i64().unwrap())
        .collect();
    assert_eq!(totals.iter().max(), Some(&5_000));
    assert!(announced
        .iter()
        .all(|m| m.json()["data"]["canceledAmount"] == 1_000));
    assert!(announced
        .iter()
        .any(|m| m.json()["data"]["isFullyCanceled"] == true));
    assert!(announced
        .iter()
        .any(|m| m.json()["data"]["remainingAmount"] == 0));
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn an_idempotency_key_replays_the_first_answer_and_guards_its_body(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Off, 5_000).await;
    let payment_id = paid(&w, "order-idem-1", "tgen_idem_1", 9_000).await;
    let body = json!({ "cancelReason": "one item returned", "cancelAmount": 3000 });

    let first = w.cancel(&payment_id, Some("refund-77"), &body).await;
    assert_eq!(first.status(), 200);
    let first_type = first.headers()["content-type"].clone();
    let first_bytes = first.bytes().await.unwrap();
    let again = w.cancel(&payment_id, Some("refund-77"), &body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["content-type"], first_type);
    assert_eq!(
        again.bytes().await.unwrap(),
        first_bytes,
        "byte-identical replay"
    );
    assert_eq!(w.toss.calls().cancels_applied, 1, "refunded once");
    assert_eq!(balance(&w, &payment_id).await, 6_000);

    let other_body = w
        .cancel(
            &payment_id,
            Some("refund-77"),
            &json!({ "cancelReason": "x", "cancelAmount": 1000 }),
        )
        .await;
    assert_eq!(other_body.status(), 422);
    assert_eq!(
        other_body.json::<Value>().await.unwrap()["code"],
        "IDEMPOTENCY_KEY_REUSED"
    );

    let no_key = w.cancel(&payment_id, None, &body).await;
    assert_eq!(no_key.status(), 400);
    assert_eq!(
        no_key.json::<Value>().await.unwrap()["code"],
        "IDEMPOTENCY_KEY_REQUIRED"
    );

    let too_much = w
        .cancel(
            &payment_id,
            Some("refund-78"),
            &json!({ "cancelReason": "all", "cancelAmount": 6001 }),
        )
        .await;
    assert_eq!(too_much.status(), 422);
    assert_eq!(
        too_much.json::<Value>().await.unwrap()["code"],
        "NOT_CANCELABLE_AMOUNT"
    );
    let rest = w
        .cancel(
            &payment_id,
            Some("refund-79"),
            &json!({ "cancelReason": "the rest" }),
        )
        .await;
    assert_eq!(rest.status(), 200, "no amount: the whole balance");
    assert_eq!(rest.json::<Value>().await.unwrap()["status"], "CANCELED");
    assert_eq!(w.toss.calls().refunded_for("tgen_idem_1"), 9_000);

    let invalid = w
        .cancel(
            &payment_id,
            Some("refund-80"),
            &json!({ "cancelAmount": "lots" }),
        )
        .await;
    assert_eq!(invalid.status(), 400);
    let fields: Vec<String> = invalid.json::<Value>().await.unwrap()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["cancelReason", "cancelAmount"]);
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn the_same_key_while_the_first_request_runs_is_409(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Off, 10_000).await;
    let payment_id = paid(&w, "order-inflight-1", "tgen_inflight_1", 4_000).await;
    w.toss.set_scenario(Scenario::Delay { millis: 3_000 });
    let body = json!({ "cancelReason": "slow", "cancelAmount": 1000 });

    // The second goes once the first is at Toss: its key claimed.
    let (first, second) = tokio::join!(w.cancel(&payment_id, Some("slow-1"), &body), async {
        while w.toss.calls().cancel_requests == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w.cancel(&payment_id, Some("slow-1"), &body).await
    });
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 409);
    assert_eq!(
        second.json::<Value>().await.unwrap()["code"],
        "IDEMPOTENCY_KEY_IN_USE"
    );
    assert_eq!(w.toss.calls().cancels_applied, 1);
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_timed_out_cancel_is_resolved_without_a_second_refund(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Fast, 500).await;
    let payment_id = paid(&w, "order-cancel-slow", "tgen_cancel_slow", 8_000).await;
    // Toss holds the refund past our 500 ms read timeout and makes it later;
    // our immediate retry with the same key finds the first still running,
    // and the lookup shows nothing yet. (A refund Toss made at once but did
    // not answer in time is learned from that lookup:
    // a_refund_toss_made_but_answered_with_an_error_is_recorded_once.)
    w.toss
        .set_scenario(Scenario::DelayThenProcess { millis: 1_500 });

    let response = w
        .cancel(
            &payment_id,
            Some("slow-refund"),
            &json!({ "cancelReason": "late", "cancelAmount": 2000 }),
        )
        .await;
    assert_eq!(response.status(), 202, "outcome unknown: pending");

    w.toss.set_scenario(Scenario::Approve);
    wait_status(
        &w.pool,
        "order-cancel-slow",
        "PARTIAL_CANCELED",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(balance(&w, &payment_id).await, 6_000);
    let calls = w.toss.calls();
    assert_eq!(
        calls.refunded_for("tgen_cancel_slow"),
        2_000,
        "refunded exactly once"
    );
    assert_eq!(calls.cancels_applied, 1);
    assert!(calls.cancel_requests >= 2, "retried with the same key");
    let cancels = cancel_transactions(&w, &payment_id).await;
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0]["status"], "SUCCEEDED");
    events_for(&w.topics.payment_canceled, &payment_id, 1).await;
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_refund_toss_made_but_answered_with_an_error_is_recorded_once(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Fast, 5_000).await;
    let payment_id = paid(&w, "order-cancel-err", "tgen_cancel_err", 8_000).await;
    // Toss refunds, answers 400 PROVIDER_ERROR, and replays that answer for
    // the key: re-sending can never tell, only a lookup can.
    w.toss.set_scenario(Scenario::ProcessThenError {
        code: "PROVIDER_ERROR".into(),
        message: "일시적인 오류가 발생했습니다.".into(),
        status: 400,
    });

    let response = w
        .cancel(
            &payment_id,
            Some("err-refund"),
            &json!({ "cancelReason": "returned", "cancelAmount": 3000 }),
        )
        .await;
    assert_eq!(
        response.status(),
        200,
        "learned from Toss's view of the payment"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "PARTIAL_CANCELED");
    // The reconciler keeps running meanwhile: nothing is sent or recorded again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(balance(&w, &payment_id).await, 5_000);
    let calls = w.toss.calls();
    assert_eq!(
        calls.refunded_for("tgen_cancel_err"),
        3_000,
        "refunded once"
    );
    assert_eq!(calls.cancels_applied, 1);
    assert!(
        calls.idempotent_replays >= 1,
        "the re-send got the replayed error"
    );
    let cancels = cancel_transactions(&w, &payment_id).await;
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0]["status"], "SUCCEEDED");
    let toss_key =
        w.toss.payment("tgen_cancel_err").unwrap()["cancels"][0]["transactionKey"].clone();
    assert_eq!(
        cancels[0]["transactionKey"], toss_key,
        "Toss's key of that refund"
    );
    let announced: Vec<_> =
        payment_e2e::kafka::read_then_settle(&w.topics.payment_canceled, |seen| {
            seen.iter()
                .any(|m| m.json()["subject"] == payment_id.as_str())
        })
        .await
        .into_iter()
        .filter(|m| m.json()["subject"] == payment_id.as_str())
        .collect();
    assert_eq!(announced.len(), 1, "PaymentCanceledEvent once");
    assert_eq!(announced[0].json()["data"]["canceledAmount"], 3_000);
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn refund_requests_are_consumed_once_each(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Off, 5_000).await;
    let payment_id = paid(&w, "order-refund-1", "tgen_refund_1", 10_000).await;
    let refund = |id: &str, amount: Option<u64>| {
        let mut data = json!({ "orderId": "order-refund-1", "reason": "returned" });
        if let Some(amount) = amount {
            data["refundAmount"] = json!(amount);
        }
        let event = json!({
            "id": id, "source": "/order-service", "specversion": "1.0",
            "type": "OrderRefundRequested", "subject": "order-refund-1", "data": data,
        });
        ("order-refund-1".to_owned(), event.to_string().into_bytes())
    };
    // A partial refund delivered three times, then the rest once.
    let messages = vec![
        refund("refund-a", Some(3_000)),
        refund("refund-a", Some(3_000)),
        refund("refund-a", Some(3_000)),
        refund("refund-b", None),
    ];
    payment_e2e::kafka::publish_all(
        &payment_e2e::kafka::producer(),
        &w.topics.order_refund_requested,
        &messages,
    )
    .await;

    wait_status(
        &w.pool,
        "order-refund-1",
        "CANCELED",
        Duration::from_secs(60),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while w
        .app
        .counter(
            "kafka_messages_total",
            &[("topic", &w.topics.order_refund_requested)],
        )
        .await
        < 4.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not every refund message was handled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = w.toss.calls();
    assert_eq!(
        calls.refunded_for("tgen_refund_1"),
        10_000,
        "3,000 once, then the remaining 7,000"
    );
    assert_eq!(calls.cancels_applied, 2);
    assert_eq!(
        w.app
            .counter(
                "kafka_messages_total",
                &[
                    ("topic", &w.topics.order_refund_requested),
                    ("outcome", "duplicate_message")
                ]
            )
            .await,
        2.0
    );
    let announced = events_for(&w.topics.payment_canceled, &payment_id, 2).await;
    assert_eq!(announced.len(), 2);
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_dashboard_cancel_arriving_by_webhook_is_reflected_once(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Off, 5_000).await;
    let payment_id = paid(&w, "order-dash-1", "tgen_dash_1", 10_000).await;
    // Someone refunds 2,500 in Toss's dashboard; Toss sends its (unsigned) notice.
    let dashboard = w
        .app
        .http
        .post(format!(
            "{}/__fake/payments/tgen_dash_1/cancel",
            w.toss.base_url()
        ))
        .json(&json!({ "cancelReason": "refunded by support", "cancelAmount": 2500 }))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 200);
    let notice = json!({
        "eventType": "PAYMENT_STATUS_CHANGED",
        "data": { "paymentKey": "tgen_dash_1", "orderId": "order-dash-1", "status": "PARTIAL_CANCELED" },
    });
    let post = || {
        w.app
            .http
            .post(format!("{}/webhooks/toss", w.app.address))
            .json(&notice)
            .send()
    };

    let first: Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(first["status"], "PARTIAL_CANCELED");
    assert_eq!(balance(&w, &payment_id).await, 7_500);
    let announced = events_for(&w.topics.payment_canceled, &payment_id, 1).await;
    assert_eq!(announced[0].json()["data"]["canceledAmount"], 2_500);

    let again: Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(
        again["status"], "UNCHANGED",
        "the same notice records nothing twice"
    );
    assert_eq!(balance(&w, &payment_id).await, 7_500);

    // What is left can still be canceled through the API.
    let rest = w
        .cancel(
            &payment_id,
            Some("rest-1"),
            &json!({ "cancelReason": "the rest" }),
        )
        .await;
    assert_eq!(rest.status(), 200);
    assert_eq!(status(&w.pool, "order-dash-1").await, "CANCELED");
    assert_eq!(w.toss.calls().refunded_for("tgen_dash_1"), 10_000);
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_refund_message_is_recorded_in_the_inbox_with_its_reservation(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Off, 5_000).await;
    let payment_id = paid(&w, "order-refund-inbox", "tgen_refund_inbox", 6_000).await;
    let event = json!({
        "id": "refund-inbox-1", "source": "/order-service", "specversion": "1.0",
        "type": "OrderRefundRequested", "subject": "order-refund-inbox",
        "data": { "orderId": "order-refund-inbox", "refundAmount": 2_000, "reason": "returned" },
    })
    .to_string()
    .into_bytes();
    let topic = &w.topics.order_refund_requested;
    let handled = |outcome: &'static str| {
        let w = &w;
        async move {
            w.app
                .counter(
                    "kafka_messages_total",
                    &[("topic", topic), ("outcome", outcome)],
                )
                .await
        }
    };
    let producer = payment_e2e::kafka::producer();
    payment_e2e::kafka::publish(&producer, topic, "order-refund-inbox", &event, &[]).await;
    wait_status(
        &w.pool,
        "order-refund-inbox",
        "PARTIAL_CANCELED",
        Duration::from_secs(60),
    )
    .await;

    // The inbox row was written by the commit that reserved the amount:
    // the repository stamps both with that commit's time.
    let recorded: Vec<(chrono::NaiveDateTime,)> = sqlx::query_as(
        "SELECT processed_at FROM inbox WHERE consumer = ? AND message_id = 'refund-inbox-1'",
    )
    .bind(topic)
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(recorded.len(), 1, "the refund message has its inbox record");
    let reserved: chrono::NaiveDateTime = sqlx::query_scalar(
        "SELECT occurred_at FROM payment_events WHERE payment_id = ? \
         AND event_type = 'CancelRequested'",
    )
    .bind(&payment_id)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(recorded[0].0, reserved, "written with the reservation");

    // Delivered again: recognised, nothing refunded twice.
    payment_e2e::kafka::publish(&producer, topic, "order-refund-inbox", &event, &[]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while handled("duplicate_message").await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the redelivery was not handled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(handled("refunded").await, 1.0);
    assert_eq!(w.toss.calls().refunded_for("tgen_refund_inbox"), 2_000);
    assert_eq!(balance(&w, &payment_id).await, 4_000);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE consumer = ?")
        .bind(topic)
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_cancel_path_naming_no_payment_is_a_400_whatever_its_length(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Off, 5_000).await;
    let long_id = "x".repeat(120);
    let response = w
        .cancel(
            &long_id,
            Some("long-1"),
            &json!({ "cancelReason": "any", "cancelAmount": 1000 }),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "INVALID_REQUEST");
    assert_eq!(body["errors"][0]["field"], "paymentId");
    w.app.stop().await.unwrap();
}

/// An `OrderRefundRequested` message (`amount` absent: everything).
fn refund_requested(id: &str, order_id: &str, amount: Option<u64>) -> Vec<u8> {
    let mut data = json!({ "orderId": order_id, "reason": "order withdrawn" });
    if let Some(amount) = amount {
        data["refundAmount"] = json!(amount);
    }
    json!({
        "id": id, "source": "/order-service", "specversion": "1.0",
        "type": "OrderRefundRequested", "subject": order_id, "data": data,
    })
    .to_string()
    .into_bytes()
}

/// Waits until the refund consumer has handled `count` messages with `outcome`.
async fn handled(w: &TossWorld, outcome: &str, count: f64) {
    let topic = &w.topics.order_refund_requested;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while w
        .app
        .counter(
            "kafka_messages_total",
            &[("topic", topic), ("outcome", outcome)],
        )
        .await
        < count
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no refund message handled as {outcome}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test(migrations = false)]
async fn a_refund_requested_during_an_unknown_approval_is_made_once_after_it(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Fast, 500).await;
    let order = "order-refund-wait";
    let payment_id = place_order(&w.topics, &w.pool, order, 9_000).await;
    // Toss fails the confirm: the approval is unknown, the payment IN_PROGRESS.
    w.toss.set_scenario(Scenario::ServerError);
    assert_eq!(
        w.confirm("tgen_refund_wait", order, 9_000).await.status(),
        202
    );
    assert_eq!(status(&w.pool, order).await, "IN_PROGRESS");

    let producer = payment_e2e::kafka::producer();
    let topic = &w.topics.order_refund_requested;
    let refund = refund_requested("refund-wait-1", order, None);
    payment_e2e::kafka::publish(&producer, topic, order, &refund, &[]).await;
    handled(&w, "refund_waiting_for_approval", 1.0).await;
    assert_eq!(
        w.toss.calls().cancel_requests,
        0,
        "nothing sent before the approval"
    );
    let reserved: Value = w
        .app
        .get(&format!("/api/v1/payments/{payment_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reserved["pendingCancels"][0]["amount"], 9_000);
    assert_eq!(reserved["pendingCancels"][0]["escalated"], false);

    // Toss answers again: the reconciler learns the approval, then refunds.
    w.toss.set_scenario(Scenario::Approve);
    wait_status(&w.pool, order, "CANCELED", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = w.toss.calls();
    assert_eq!(calls.confirms_approved, 1);
    assert_eq!(
        calls.refunded_for("tgen_refund_wait"),
        9_000,
        "refunded once"
    );
    assert_eq!(calls.cancels_applied, 1);
    event_for_type(
        &w.topics.payment_completed,
        &payment_id,
        "PaymentCompletedEvent",
    )
    .await;
    let canceled = events_for(&w.topics.payment_canceled, &payment_id, 1).await;
    assert_eq!(canceled[0].json()["data"]["isFullyCanceled"], true);
    let cancels = cancel_transactions(&w, &payment_id).await;
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0]["status"], "SUCCEEDED");

    // Delivered again: nothing more.
    payment_e2e::kafka::publish(&producer, topic, order, &refund, &[]).await;
    handled(&w, "duplicate_message", 1.0).await;
    assert_eq!(w.toss.calls().cancels_applied, 1);
    w.app.stop().await.unwrap();
}

async fn event_for_type(topic: &str, payment_id: &str, event_type: &str) {
    let event = events_for(topic, payment_id, 1).await.remove(0).json();
    assert_eq!(event["type"], event_type);
}

#[sqlx::test(migrations = false)]
async fn a_refund_of_an_unpaid_order_ends_its_payment_without_toss(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Off, 5_000).await;
    let order = "order-refund-ready";
    let payment_id = place_order(&w.topics, &w.pool, order, 7_000).await;
    let producer = payment_e2e::kafka::producer();
    let topic = &w.topics.order_refund_requested;
    let refund = refund_requested("refund-ready-1", order, None);
    payment_e2e::kafka::publish(&producer, topic, order, &refund, &[]).await;
    wait_status(&w.pool, order, "ABORTED", Duration::from_secs(60)).await;
    handled(&w, "payment_ended", 1.0).await;

    let failed = events_for(&w.topics.payment_failed, &payment_id, 1).await[0].json();
    assert_eq!(failed["type"], "PaymentFailedEvent");
    assert_eq!(failed["data"]["code"], "ORDER_CANCELED");
    let recorded: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM inbox WHERE consumer = ? AND message_id = 'refund-ready-1'",
    )
    .bind(topic)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(recorded, 1, "the message is recorded with its effect");

    // The customer comes back from the widget: refused, Toss never asked.
    let late = w.confirm("tgen_refund_ready", order, 7_000).await;
    assert_eq!(late.status(), 409);
    assert_eq!(
        late.json::<Value>().await.unwrap()["code"],
        "PAYMENT_NOT_CONFIRMABLE"
    );
    let calls = w.toss.calls();
    assert_eq!(calls.confirm_requests, 0);
    assert_eq!(calls.cancel_requests, 0);
    assert_eq!(status(&w.pool, order).await, "ABORTED");
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_refund_toss_refuses_is_published_as_cancel_failed(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Off, 5_000).await;
    let order = "order-refund-refused";
    let payment_id = paid(&w, order, "tgen_refund_refused", 6_000).await;
    w.toss.set_scenario(Scenario::Decline {
        code: "NOT_CANCELABLE_PAYMENT".into(),
        message: "취소 할 수 없는 결제 입니다.".into(),
        status: 403,
    });
    let producer = payment_e2e::kafka::producer();
    let topic = &w.topics.order_refund_requested;
    let refund = refund_requested("refund-refused-1", order, Some(2_500));
    payment_e2e::kafka::publish(&producer, topic, order, &refund, &[]).await;
    handled(&w, "refund_declined", 1.0).await;

    let failed = events_for(&w.topics.payment_cancel_failed, &payment_id, 1).await[0].json();
    assert_eq!(failed["type"], "PaymentCancelFailedEvent");
    let data = &failed["data"];
    assert_eq!(data["paymentId"], payment_id.as_str());
    assert_eq!(data["orderId"], order);
    assert_eq!(data["requestedAmount"], 2_500);
    assert_eq!(data["code"], "NOT_CANCELABLE_PAYMENT");
    let cancels = cancel_transactions(&w, &payment_id).await;
    assert_eq!(cancels[0]["status"], "FAILED");
    assert_eq!(data["requestId"], cancels[0]["transactionId"]);
    assert_eq!(balance(&w, &payment_id).await, 6_000, "nothing refunded");
    assert_eq!(status(&w.pool, order).await, "DONE");
    assert_eq!(
        w.app
            .counter(
                "kafka_messages_total",
                &[("topic", topic), ("outcome", "dead_lettered")]
            )
            .await,
        0.0,
        "answered, not dead-lettered"
    );
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_malformed_traceparent_on_a_cancel_is_ignored(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::Off, 5_000).await;
    let payment_id = paid(&w, "order-trace-1", "tgen_trace_1", 3_000).await;
    // Longer than the outbox column, and not W3C's form anyway.
    let response = w
        .app
        .http
        .post(format!(
            "{}/api/v1/payments/{payment_id}/cancel",
            w.app.address
        ))
        .header("Idempotency-Key", "trace-1")
        .header("traceparent", "00-".repeat(40))
        .json(&json!({ "cancelReason": "returned" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let canceled = events_for(&w.topics.payment_canceled, &payment_id, 1).await;
    let trace = canceled[0]
        .headers
        .get("traceparent")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        payment_application::trace::traceparent(Some(&trace)).as_deref(),
        Some(trace.as_str()),
        "not stored: a new trace is started instead ({trace:?})"
    );
    assert!(!trace.contains("00-00-00"), "{trace}");
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_cancel_toss_cannot_settle_in_time_is_escalated_and_never_sent_again(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = TossWorld::start(pool_options, db, Reconciler::FastImpatient, 5_000).await;
    let payment_id = paid(&w, "order-escalate-1", "tgen_escalate_1", 8_000).await;
    // Toss fails both sends; then someone refunds 500 in its dashboard: what
    // Toss took fits no reservation of ours, so nothing can be concluded.
    w.toss.set_scenario(Scenario::ServerError);
    let response = w
        .cancel(
            &payment_id,
            Some("escalate-1"),
            &json!({ "cancelReason": "returned", "cancelAmount": 2000 }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let dashboard = w
        .app
        .http
        .post(format!(
            "{}/__fake/payments/tgen_escalate_1/cancel",
            w.toss.base_url()
        ))
        .json(&json!({ "cancelReason": "support", "cancelAmount": 500 }))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 200);
    w.toss.set_scenario(Scenario::Approve);

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let payment = loop {
        let payment: Value = w
            .app
            .get(&format!("/api/v1/payments/{payment_id}"))
            .await
            .json()
            .await
            .unwrap();
        if payment["pendingCancels"][0]["escalated"] == true {
            break payment;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never escalated: {payment}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        payment["pendingCancels"][0]["amount"], 2_000,
        "reservation kept"
    );
    assert_eq!(payment["balanceAmount"], 8_000);
    assert_eq!(
        w.app.counter("payment_cancel_escalations_total", &[]).await,
        1.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = w.toss.calls();
    assert_eq!(
        calls.cancel_requests, 2,
        "never sent again after the first two"
    );
    assert_eq!(
        calls.refunded_for("tgen_escalate_1"),
        500,
        "only the dashboard's"
    );
    let cancels = cancel_transactions(&w, &payment_id).await;
    assert_eq!(cancels[0]["status"], "UNKNOWN", "an operator's to settle");
    w.app.stop().await.unwrap();
}

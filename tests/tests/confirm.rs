//! The Toss widget flow end to end: a real service, a real MariaDB, a real
//! broker, and the fake Toss server over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fake_toss::Scenario;
use payment_e2e::kafka;
use payment_e2e::orders::{place_order, status, wait_status};
use payment_e2e::toss::{event_for, Reconciler, TossWorld};
use serde_json::{json, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

async fn world(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
    reconcile: bool,
) -> TossWorld {
    let reconciler = if reconcile {
        Reconciler::Fast
    } else {
        Reconciler::Off
    };
    TossWorld::start(pool_options, db, reconciler, 500).await
}

#[sqlx::test(migrations = false)]
async fn an_approved_confirm_completes_the_payment_and_announces_it(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, false).await;
    let payment_id = place_order(&w.topics, &w.pool, "order-ok-1", 15_000).await;

    let response = w.confirm("tgen_ok_1", "order-ok-1", 15_000).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "DONE");
    assert_eq!(body["paymentKey"], "tgen_ok_1");
    assert_eq!(body["paymentId"], payment_id);

    let completed = event_for(&w.topics.payment_completed, &payment_id)
        .await
        .json();
    assert_eq!(completed["type"], "PaymentCompletedEvent");
    let data = &completed["data"];
    assert_eq!(data["paymentId"], payment_id);
    assert_eq!(data["orderId"], "order-ok-1");
    assert_eq!(data["paymentKey"], "tgen_ok_1");
    assert_eq!(data["paidAmount"], 15_000);
    assert_eq!(data["currency"], "KRW");
    assert!(data["approvedAt"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(w.toss.calls().confirms_approved, 1);
    let toss_side = w.toss.payment("tgen_ok_1").unwrap();
    assert_eq!(toss_side["status"], "DONE");

    // The same confirm again: the same payment, no second call to Toss.
    let again = w.confirm("tgen_ok_1", "order-ok-1", 15_000).await;
    assert_eq!(again.status(), 200);
    assert_eq!(w.toss.calls().confirm_requests, 1);
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_tampered_amount_is_refused_and_toss_is_never_called(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, false).await;
    place_order(&w.topics, &w.pool, "order-tamper-1", 15_000).await;
    let before = w.app.counter("payment_amount_tampering_total", &[]).await;

    let response = w.confirm("tgen_tamper_1", "order-tamper-1", 100).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "AMOUNT_MISMATCH");
    assert_eq!(w.toss.calls().confirm_requests, 0);
    assert_eq!(status(&w.pool, "order-tamper-1").await, "READY");
    assert!(w.app.counter("payment_amount_tampering_total", &[]).await >= before + 1.0);
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_declined_confirm_aborts_the_payment_with_the_toss_code(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, false).await;
    let payment_id = place_order(&w.topics, &w.pool, "order-decline-1", 15_000).await;
    w.toss.set_scenario(Scenario::card_declined());

    let response = w.confirm("tgen_decline_1", "order-decline-1", 15_000).await;
    assert_eq!(response.status(), 402);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "PAYMENT_DECLINED");
    assert_eq!(problem["pgCode"], "REJECT_CARD_PAYMENT");
    assert_eq!(status(&w.pool, "order-decline-1").await, "ABORTED");

    let failed = event_for(&w.topics.payment_failed, &payment_id)
        .await
        .json();
    assert_eq!(failed["type"], "PaymentFailedEvent");
    assert_eq!(failed["data"]["code"], "REJECT_CARD_PAYMENT");
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_timed_out_confirm_is_resolved_by_the_reconciler(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, true).await;
    let payment_id = place_order(&w.topics, &w.pool, "order-timeout-1", 15_000).await;
    // Toss holds the request past our 500 ms read timeout and approves later.
    w.toss
        .set_scenario(Scenario::DelayThenProcess { millis: 1_500 });

    let response = w.confirm("tgen_timeout_1", "order-timeout-1", 15_000).await;
    assert_eq!(response.status(), 202, "unknown outcome: processing");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "IN_PROGRESS");

    wait_status(&w.pool, "order-timeout-1", "DONE", Duration::from_secs(30)).await;
    let completed = event_for(&w.topics.payment_completed, &payment_id)
        .await
        .json();
    assert_eq!(completed["data"]["paymentKey"], "tgen_timeout_1");
    assert_eq!(w.toss.calls().confirms_approved, 1, "approved exactly once");
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_server_error_is_retried_by_the_reconciler_with_the_same_idempotency_key(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, true).await;
    place_order(&w.topics, &w.pool, "order-5xx-1", 15_000).await;
    w.toss.set_scenario(Scenario::ServerError);

    let response = w.confirm("tgen_5xx_1", "order-5xx-1", 15_000).await;
    assert_eq!(response.status(), 202);
    assert_eq!(status(&w.pool, "order-5xx-1").await, "IN_PROGRESS");

    w.toss.set_scenario(Scenario::Approve);
    wait_status(&w.pool, "order-5xx-1", "DONE", Duration::from_secs(30)).await;
    let calls = w.toss.calls();
    assert_eq!(calls.confirms_approved, 1);
    assert!(calls.confirm_requests >= 2);
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(idempotency_key AS CHAR) FROM payment_transactions WHERE kind = 'APPROVAL'",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(
        keys.len(),
        1,
        "one APPROVAL transaction, retried with its own key"
    );
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn fifty_concurrent_confirms_make_one_toss_call(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, false).await;
    place_order(&w.topics, &w.pool, "order-race-1", 15_000).await;
    w.toss.set_scenario(Scenario::Delay { millis: 200 });

    let responses = futures::future::join_all(
        (0..50).map(|_| w.confirm("tgen_race_1", "order-race-1", 15_000)),
    )
    .await;
    let mut done = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => done += 1,
            409 => {
                let problem: Value = response.json().await.unwrap();
                assert_eq!(problem["code"], "PAYMENT_IN_PROGRESS");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(done >= 1);
    assert_eq!(
        w.toss.calls().confirm_requests,
        1,
        "exactly one Toss confirm"
    );
    assert_eq!(status(&w.pool, "order-race-1").await, "DONE");
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn a_webhook_settles_a_payment_after_refetching_it(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, false).await;
    let payment_id = place_order(&w.topics, &w.pool, "order-hook-1", 15_000).await;
    w.toss
        .set_scenario(Scenario::DelayThenProcess { millis: 1_000 });
    assert_eq!(
        w.confirm("tgen_hook_1", "order-hook-1", 15_000)
            .await
            .status(),
        202
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await; // Toss approves meanwhile
    assert_eq!(
        status(&w.pool, "order-hook-1").await,
        "IN_PROGRESS",
        "nobody told us yet"
    );

    // The body claims ABORTED: it is unsigned, so the service must ask Toss.
    let notice = json!({
        "eventType": "PAYMENT_STATUS_CHANGED",
        "createdAt": "2026-11-22T10:00:00.000000",
        "data": { "paymentKey": "tgen_hook_1", "orderId": "order-hook-1", "status": "ABORTED" },
    });
    let post = |body: Value| {
        w.app
            .http
            .post(format!("{}/webhooks/toss", w.app.address))
            .json(&body)
            .send()
    };
    let response = post(notice.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        status(&w.pool, "order-hook-1").await,
        "DONE",
        "Toss's truth, not the body's"
    );
    event_for(&w.topics.payment_completed, &payment_id).await;

    // Idempotent: the same notice again changes nothing.
    let again: Value = post(notice).await.unwrap().json().await.unwrap();
    assert_eq!(again["status"], "UNCHANGED");
    let events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM payment_events WHERE payment_id = ?")
            .bind(&payment_id)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(events, 3, "created, confirmation started, approved");

    // A payment nobody knows is acknowledged, not a 500.
    let unknown = post(json!({
        "eventType": "PAYMENT_STATUS_CHANGED",
        "data": { "paymentKey": "tgen_nobody", "status": "DONE" },
    }))
    .await
    .unwrap();
    assert_eq!(unknown.status(), 200);
    w.app.stop().await.unwrap();
}

/// The events recorded for `payment_id`, oldest first.
async fn recorded_events(pool: &sqlx::MySqlPool, payment_id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT CAST(event_type AS CHAR) FROM payment_events WHERE payment_id = ? ORDER BY version",
    )
    .bind(payment_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// No event about `payment_id` reached `topic` (read for a few seconds,
/// after a later event of the payment was seen: the relay publishes in
/// commit order).
async fn nothing_on(topic: &str, payment_id: &str) {
    let seen = kafka::read_until(topic, Duration::from_secs(3), |_| false).await;
    let about: Vec<Value> = seen
        .iter()
        .map(kafka::Received::json)
        .filter(|event| event["subject"] == payment_id)
        .collect();
    assert!(about.is_empty(), "{about:?}");
}

async fn fail_redirect(w: &TossWorld, query: &str) -> reqwest::Response {
    w.app
        .http
        .get(format!("{}/payments/toss/fail?{query}", w.app.address))
        .send()
        .await
        .unwrap()
}

// Issue 9 item 4: the fail redirect is an unauthenticated browser request;
// it records the failed attempt and ends nothing (this test asserted ABORTED
// before issue 9 changed the contract).
#[sqlx::test(migrations = false)]
async fn a_widget_fail_redirect_records_the_attempt_and_the_customer_can_still_pay(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, false).await;
    let payment_id = place_order(&w.topics, &w.pool, "order-fail-1", 15_000).await;
    let response = fail_redirect(
        &w,
        "code=PAY_PROCESS_CANCELED&message=canceled&orderId=order-fail-1",
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "READY");
    assert_eq!(status(&w.pool, "order-fail-1").await, "READY");
    assert_eq!(
        recorded_events(&w.pool, &payment_id).await.last().unwrap(),
        "AttemptFailed"
    );

    let paid = w.confirm("tgen_fail_1", "order-fail-1", 15_000).await;
    assert_eq!(paid.status(), 200);
    assert_eq!(paid.json::<Value>().await.unwrap()["status"], "DONE");
    event_for(&w.topics.payment_completed, &payment_id).await;
    nothing_on(&w.topics.payment_failed, &payment_id).await;

    // A fail redirect for a paid payment changes nothing.
    let late = fail_redirect(&w, "code=PAY_PROCESS_ABORTED&orderId=order-fail-1").await;
    assert_eq!(late.status(), 200);
    assert_eq!(late.json::<Value>().await.unwrap()["status"], "DONE");
    assert_eq!(
        recorded_events(&w.pool, &payment_id).await,
        [
            "PaymentCreated",
            "AttemptFailed",
            "ConfirmationStarted",
            "PaymentApproved"
        ]
    );
    w.app.stop().await.unwrap();
}

// Issue 9 item 1 (HTTP side): a value the failure columns cannot hold is
// the caller's error, not a 503 retried forever.
#[sqlx::test(migrations = false)]
async fn a_fail_redirect_code_or_message_longer_than_the_store_keeps_is_a_400(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, false).await;
    place_order(&w.topics, &w.pool, "order-fail-long-1", 15_000).await;
    let code = "C".repeat(101);
    let message = "m".repeat(1_001);
    for (query, field) in [
        (format!("code={code}&orderId=order-fail-long-1"), "code"),
        (
            format!("code=X&message={message}&orderId=order-fail-long-1"),
            "message",
        ),
    ] {
        let response = fail_redirect(&w, &query).await;
        assert_eq!(response.status(), 400, "{field}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "INVALID_REQUEST");
        assert_eq!(problem["errors"][0]["field"], field);
    }
    let longest = format!(
        "code={}&message={}&orderId=order-fail-long-1",
        "C".repeat(100),
        "메".repeat(1_000)
    );
    assert_eq!(fail_redirect(&w, &longest).await.status(), 200);
    assert_eq!(status(&w.pool, "order-fail-long-1").await, "READY");
    w.app.stop().await.unwrap();
}

// Issue 9 item 4: a key Toss does not know for the order ends nothing.
#[sqlx::test(migrations = false)]
async fn a_confirm_with_a_key_toss_does_not_know_is_refused_then_the_real_confirm_completes(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, false).await;
    let payment_id = place_order(&w.topics, &w.pool, "order-bogus-1", 15_000).await;
    w.toss.set_scenario(Scenario::UnissuedKey);

    let bogus = w.confirm("tgen_bogus_1", "order-bogus-1", 15_000).await;
    assert_eq!(bogus.status(), 400);
    let problem: Value = bogus.json().await.unwrap();
    assert_eq!(problem["code"], "PAYMENT_KEY_NOT_VERIFIED");
    assert_eq!(problem["pgCode"], "NOT_FOUND_PAYMENT");
    assert_eq!(problem["status"], 400);
    assert_eq!(problem["paymentStatus"], "READY");
    assert_eq!(status(&w.pool, "order-bogus-1").await, "READY");
    assert!(
        w.toss.calls().lookups >= 1,
        "the refusal was checked at Toss"
    );

    w.toss.set_scenario(Scenario::Approve);
    let real = w.confirm("tgen_real_1", "order-bogus-1", 15_000).await;
    assert_eq!(real.status(), 200);
    let body: Value = real.json().await.unwrap();
    assert_eq!(body["status"], "DONE");
    assert_eq!(body["paymentKey"], "tgen_real_1");
    let completed = event_for(&w.topics.payment_completed, &payment_id)
        .await
        .json();
    assert_eq!(completed["data"]["paymentKey"], "tgen_real_1");
    nothing_on(&w.topics.payment_failed, &payment_id).await;
    assert_eq!(
        recorded_events(&w.pool, &payment_id).await,
        [
            "PaymentCreated",
            "ConfirmationStarted",
            "ConfirmationReverted",
            "ConfirmationStarted",
            "PaymentApproved"
        ]
    );
    let approvals: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(status AS CHAR) FROM payment_transactions WHERE kind = 'APPROVAL' ORDER BY requested_at",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(approvals, ["FAILED", "SUCCEEDED"]);
    w.app.stop().await.unwrap();
}

// Issue 9 item 4: our own credential error is never the customer's decline.
#[sqlx::test(migrations = false)]
async fn a_credential_error_is_a_503_the_payment_stays_payable_and_is_counted(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, false).await;
    let payment_id = place_order(&w.topics, &w.pool, "order-cred-1", 15_000).await;
    let before = w
        .app
        .counter("payment_gateway_credential_errors_total", &[])
        .await;
    w.toss.set_scenario(Scenario::RejectCredentials);

    let refused = w.confirm("tgen_cred_1", "order-cred-1", 15_000).await;
    assert_eq!(refused.status(), 503);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "SERVICE_UNAVAILABLE");
    assert_eq!(status(&w.pool, "order-cred-1").await, "READY");
    assert!(
        w.app
            .counter(
                "payment_gateway_credential_errors_total",
                &[("operation", "confirm")]
            )
            .await
            >= before + 1.0
    );

    w.toss.set_scenario(Scenario::Approve);
    let paid = w.confirm("tgen_cred_1", "order-cred-1", 15_000).await;
    assert_eq!(paid.status(), 200);
    assert_eq!(paid.json::<Value>().await.unwrap()["status"], "DONE");
    event_for(&w.topics.payment_completed, &payment_id).await;
    nothing_on(&w.topics.payment_failed, &payment_id).await;
    assert_eq!(w.toss.calls().confirms_approved, 1);
    w.app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn the_widget_success_redirect_confirms(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let w = world(pool_options, db, false).await;
    place_order(&w.topics, &w.pool, "order-redirect-1", 15_000).await;
    let response = w
        .app
        .http
        .get(format!(
            "{}/payments/toss/success?paymentKey=tgen_redirect_1&orderId=order-redirect-1&amount=15000",
            w.app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "DONE");
    let missing = w
        .app
        .http
        .get(format!(
            "{}/payments/toss/success?orderId=order-redirect-1",
            w.app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let problem: Value = missing.json().await.unwrap();
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["paymentKey", "amount"]);
    w.app.stop().await.unwrap();
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! How an `Idempotency-Key` replays error answers (Toss keeps a key's first
//! answer 15 days, errors included), and what a 5xx does to its key.

use fake_toss::{basic_auth, FakeConfig, FakeToss, Scenario};
use serde_json::{json, Value};

const SECRET: &str = "fake-toss-replay-secret";

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn post(fake: &FakeToss, path: &str, body: &Value, key: &str) -> Answer {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", fake.base_url()))
        .header("Authorization", basic_auth(SECRET))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    Answer {
        status,
        body: response.bytes().await.unwrap().to_vec(),
    }
}

async fn confirm(fake: &FakeToss, payment_key: &str, order_id: &str, key: &str) -> Answer {
    let body = json!({"paymentKey": payment_key, "orderId": order_id, "amount": 10_000});
    post(fake, "/v1/payments/confirm", &body, key).await
}

async fn cancel(fake: &FakeToss, payment_key: &str, amount: i64, key: &str) -> Answer {
    let body = json!({"cancelReason": "refund", "cancelAmount": amount});
    post(
        fake,
        &format!("/v1/payments/{payment_key}/cancel"),
        &body,
        key,
    )
    .await
}

fn provider_error() -> Scenario {
    Scenario::ProcessThenError {
        code: "PROVIDER_ERROR".into(),
        message: "일시적인 오류가 발생했습니다. 잠시 후 다시 시도해주세요.".into(),
        status: 400,
    }
}

#[tokio::test]
async fn a_refund_made_but_answered_provider_error_replays_the_error_and_refunds_once() {
    let fake = FakeToss::start(FakeConfig::new(SECRET)).unwrap();
    assert_eq!(
        confirm(&fake, "pk_pe_1", "order-pe-1", "c-1").await.status,
        200
    );

    fake.set_scenario(provider_error());
    let first = cancel(&fake, "pk_pe_1", 3_000, "refund-1").await;
    assert_eq!(first.status, 400);
    assert_eq!(first.json()["code"], "PROVIDER_ERROR");
    // The money moved all the same.
    let payment = fake.payment("pk_pe_1").unwrap();
    assert_eq!(payment["balanceAmount"], 7_000);
    assert_eq!(payment["cancels"].as_array().unwrap().len(), 1);
    assert!(payment["cancels"][0]["transactionKey"].is_string());

    // Toss healthy again: the same key replays the stored error, byte for
    // byte, and refunds nothing more.
    fake.set_scenario(Scenario::Approve);
    let again = cancel(&fake, "pk_pe_1", 3_000, "refund-1").await;
    assert_eq!(again.status, 400);
    assert_eq!(again.body, first.body, "a replay is the first answer");
    let calls = fake.calls();
    assert_eq!(calls.refunded_for("pk_pe_1"), 3_000);
    assert_eq!(calls.cancels_applied, 1);
    assert_eq!(calls.idempotent_replays, 1);
    assert_eq!(fake.payment("pk_pe_1").unwrap()["balanceAmount"], 7_000);
    fake.shutdown().await;
}

#[tokio::test]
async fn a_confirm_approved_but_answered_an_error_replays_the_error() {
    let fake = FakeToss::start(FakeConfig::new(SECRET)).unwrap();
    fake.set_scenario(provider_error());
    let first = confirm(&fake, "pk_pe_2", "order-pe-2", "confirm-2").await;
    assert_eq!(first.status, 400);
    assert_eq!(fake.payment("pk_pe_2").unwrap()["status"], "DONE");

    fake.set_scenario(Scenario::Approve);
    let again = confirm(&fake, "pk_pe_2", "order-pe-2", "confirm-2").await;
    assert_eq!(again.status, 400);
    assert_eq!(again.body, first.body);
    assert_eq!(fake.calls().confirms_approved, 1);
    fake.shutdown().await;
}

#[tokio::test]
async fn a_decline_is_replayed_for_its_key_even_once_toss_would_approve() {
    let fake = FakeToss::start(FakeConfig::new(SECRET)).unwrap();
    assert_eq!(
        confirm(&fake, "pk_pe_3", "order-pe-3", "c-3").await.status,
        200
    );
    fake.set_scenario(Scenario::Decline {
        code: "PROVIDER_ERROR".into(),
        message: "일시적인 오류가 발생했습니다. 잠시 후 다시 시도해주세요.".into(),
        status: 400,
    });
    let first = cancel(&fake, "pk_pe_3", 1_000, "refund-3").await;
    assert_eq!(first.status, 400);

    fake.set_scenario(Scenario::Approve);
    let again = cancel(&fake, "pk_pe_3", 1_000, "refund-3").await;
    assert_eq!(again.status, 400);
    assert_eq!(again.body, first.body);
    assert_eq!(fake.calls().refunded_for("pk_pe_3"), 0);
    // Another key is another request.
    assert_eq!(
        cancel(&fake, "pk_pe_3", 1_000, "refund-3b").await.status,
        200
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn a_5xx_frees_its_key_so_a_blind_re_send_of_a_done_cancel_refunds_again() {
    let fake = FakeToss::start(FakeConfig::new(SECRET)).unwrap();
    assert_eq!(
        confirm(&fake, "pk_pe_4", "order-pe-4", "c-4").await.status,
        200
    );
    fake.set_scenario(Scenario::ProcessThenServerError);
    assert_eq!(
        cancel(&fake, "pk_pe_4", 2_000, "refund-4").await.status,
        500
    );

    fake.set_scenario(Scenario::Approve);
    let again = cancel(&fake, "pk_pe_4", 2_000, "refund-4").await;
    assert_eq!(again.status, 200, "a 5xx is not replayed");
    assert_eq!(fake.calls().refunded_for("pk_pe_4"), 4_000);
    assert_eq!(fake.calls().idempotent_replays, 0);
    fake.shutdown().await;
}

#[tokio::test]
async fn an_error_scenario_status_must_be_an_error() {
    let fake = FakeToss::start(FakeConfig::new(SECRET)).unwrap();
    let response = reqwest::Client::new()
        .put(format!("{}/__fake/scenario", fake.base_url()))
        .json(&json!({"kind": "process_then_error", "code": "PROVIDER_ERROR", "status": 200}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    fake.shutdown().await;
}

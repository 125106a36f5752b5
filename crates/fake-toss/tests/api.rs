#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The fake over real HTTP, as the payment service's Toss client sees it.

use std::time::Duration;

use fake_toss::{basic_auth, Calls, FakeConfig, FakeToss, Scenario};
use serde_json::{json, Value};

const SECRET: &str = "test_sk_api_tests";

struct Harness {
    fake: FakeToss,
    http: reqwest::Client,
    auth: String,
}

/// A status and the exact body bytes.
struct Raw {
    status: u16,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap().to_owned()
    }
}

impl Harness {
    fn start() -> Self {
        let fake = FakeToss::start(FakeConfig::new(SECRET)).unwrap();
        Self {
            fake,
            http: reqwest::Client::new(),
            auth: basic_auth(SECRET),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.base_url())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Raw {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap().to_vec();
        Raw { status, body }
    }

    fn post(&self, path: &str, body: &Value, key: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(self.url(path))
            .header("Authorization", &self.auth)
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request
    }

    async fn confirm(
        &self,
        payment_key: &str,
        order_id: &str,
        amount: i64,
        key: Option<&str>,
    ) -> Raw {
        let body = json!({"paymentKey": payment_key, "orderId": order_id, "amount": amount});
        self.send(self.post("/v1/payments/confirm", &body, key))
            .await
    }

    async fn cancel(&self, payment_key: &str, body: Value, key: Option<&str>) -> Raw {
        let path = format!("/v1/payments/{payment_key}/cancel");
        self.send(self.post(&path, &body, key)).await
    }

    async fn get(&self, path: &str) -> Raw {
        self.send(
            self.http
                .get(self.url(path))
                .header("Authorization", &self.auth),
        )
        .await
    }

    fn calls(&self) -> Calls {
        self.fake.calls()
    }
}

fn is_toss_transaction_key(value: &Value) -> bool {
    value.as_str().is_some_and(|k| {
        k.len() == 32
            && k.chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
    })
}

#[tokio::test]
async fn confirm_approves_and_answers_the_payment_object() {
    let h = Harness::start();
    let reply = h
        .confirm("pk_approve_1", "order-approve-1", 15_000, Some("idem-1"))
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let p = reply.json();
    assert_eq!(p["mId"], "tosspayments");
    assert_eq!(p["version"], "2022-11-16");
    assert_eq!(p["paymentKey"], "pk_approve_1");
    assert_eq!(p["orderId"], "order-approve-1");
    assert_eq!(p["status"], "DONE");
    assert_eq!(p["type"], "NORMAL");
    assert_eq!(p["method"], "카드");
    assert_eq!(p["currency"], "KRW");
    assert_eq!(p["totalAmount"], 15_000);
    assert_eq!(p["balanceAmount"], 15_000);
    assert_eq!(p["suppliedAmount"], 13_636);
    assert_eq!(p["vat"], 1_364);
    assert_eq!(p["taxFreeAmount"], 0);
    assert_eq!(p["isPartialCancelable"], true);
    assert!(p["cancels"].is_null());
    assert!(p["failure"].is_null());
    assert!(p["card"].is_object());
    assert!(p["receipt"]["url"].is_string());
    assert!(
        is_toss_transaction_key(&p["lastTransactionKey"]),
        "{}",
        p["lastTransactionKey"]
    );
    for field in ["requestedAt", "approvedAt"] {
        let at = p[field].as_str().unwrap();
        assert!(at.ends_with("+09:00"), "{field}: {at}");
        chrono::DateTime::parse_from_rfc3339(at).unwrap();
    }
    assert_eq!(h.fake.payment("pk_approve_1").unwrap(), p);

    let calls = h.calls();
    assert_eq!(calls.confirm_requests, 1);
    assert_eq!(calls.confirms_approved, 1);
}

#[tokio::test]
async fn decline_approves_nothing_and_leaves_an_aborted_payment() {
    let h = Harness::start();
    h.fake.set_scenario(Scenario::card_declined());
    let reply = h
        .confirm("pk_decline_1", "order-decline-1", 5_000, Some("idem-d1"))
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.code(), "REJECT_CARD_PAYMENT");
    assert!(reply.json()["message"].is_string());

    let p = h.fake.payment("pk_decline_1").unwrap();
    assert_eq!(p["status"], "ABORTED");
    assert_eq!(p["failure"]["code"], "REJECT_CARD_PAYMENT");
    assert!(p["approvedAt"].is_null());
    assert_eq!(h.calls().confirms_approved, 0);

    // A custom decline, with its own status.
    h.fake.set_scenario(Scenario::Decline {
        code: "INVALID_STOPPED_CARD".into(),
        message: "정지된 카드 입니다.".into(),
        status: 400,
    });
    let reply = h
        .confirm("pk_decline_2", "order-decline-2", 5_000, None)
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.code(), "INVALID_STOPPED_CARD");

    // The declined payment cannot be cancelled; its order id is still free.
    h.fake.set_scenario(Scenario::Approve);
    let cancel = h
        .cancel("pk_decline_1", json!({"cancelReason": "x"}), None)
        .await;
    assert_eq!(cancel.status, 403);
    assert_eq!(cancel.code(), "NOT_CANCELABLE_PAYMENT");
    let again = h
        .confirm("pk_decline_3", "order-decline-1", 5_000, None)
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(h.calls().confirms_approved, 1);
}

#[tokio::test]
async fn server_error_processes_nothing() {
    let h = Harness::start();
    h.fake.set_scenario(Scenario::ServerError);
    let reply = h
        .confirm("pk_5xx_1", "order-5xx-1", 7_000, Some("idem-5xx"))
        .await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.code(), "FAILED_INTERNAL_SYSTEM_PROCESSING");
    assert!(h.fake.payment("pk_5xx_1").is_none());
    let lookup = h.get("/v1/payments/pk_5xx_1").await;
    assert_eq!(lookup.status, 404);
    assert_eq!(lookup.code(), "NOT_FOUND_PAYMENT");

    // A 5xx is no answer: the same key, once Toss is healthy again,
    // processes the request (it is not replayed).
    h.fake.set_scenario(Scenario::Approve);
    let retry = h
        .confirm("pk_5xx_1", "order-5xx-1", 7_000, Some("idem-5xx"))
        .await;
    assert_eq!(retry.status, 200);
    // ... and from then on that key replays the approval.
    let replay = h
        .confirm("pk_5xx_1", "order-5xx-1", 7_000, Some("idem-5xx"))
        .await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.body, retry.body);

    let calls = h.calls();
    assert_eq!(calls.confirm_requests, 3);
    assert_eq!(calls.confirms_approved, 1);
    assert_eq!(calls.idempotent_replays, 1);
}

#[tokio::test]
async fn process_then_server_error_does_the_work_but_answers_500() {
    let h = Harness::start();
    h.fake.set_scenario(Scenario::ProcessThenServerError);
    let reply = h
        .confirm("pk_amb_1", "order-amb-1", 9_000, Some("idem-amb"))
        .await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.code(), "FAILED_INTERNAL_SYSTEM_PROCESSING");
    let lookup = h.get("/v1/payments/orders/order-amb-1").await;
    assert_eq!(lookup.status, 200);
    assert_eq!(lookup.json()["status"], "DONE");
    assert_eq!(h.calls().confirms_approved, 1);

    let cancel = h
        .cancel(
            "pk_amb_1",
            json!({"cancelReason": "ambiguous", "cancelAmount": 4_000}),
            Some("idem-amb-c"),
        )
        .await;
    assert_eq!(cancel.status, 500);
    assert_eq!(h.fake.payment("pk_amb_1").unwrap()["balanceAmount"], 5_000);
    let calls = h.calls();
    assert_eq!(calls.cancels_applied, 1);
    assert_eq!(calls.refunded_for("pk_amb_1"), 4_000);
}

#[tokio::test]
async fn delay_with_client_timeout_leaves_the_payment_done_and_the_key_replays() {
    let h = Harness::start();
    h.fake.set_scenario(Scenario::Delay { millis: 2_000 });

    let body = json!({"paymentKey": "pk_slow_1", "orderId": "order-slow-1", "amount": 12_000});
    let timed_out = h
        .post("/v1/payments/confirm", &body, Some("idem-slow"))
        .timeout(Duration::from_millis(400))
        .send()
        .await;
    let error = timed_out.expect_err("the client should time out");
    assert!(error.is_timeout(), "{error}");

    // Done at Toss although the client never heard it.
    assert_eq!(h.fake.payment("pk_slow_1").unwrap()["status"], "DONE");

    // The first request with the key is still being processed.
    let busy = h
        .confirm("pk_slow_1", "order-slow-1", 12_000, Some("idem-slow"))
        .await;
    assert_eq!(busy.status, 409);
    assert_eq!(busy.code(), "IDEMPOTENT_REQUEST_PROCESSING");

    // Once it has been answered, the key replays that answer, whatever the
    // scenario is now.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    h.fake.set_scenario(Scenario::ServerError);
    let replay = h
        .confirm("pk_slow_1", "order-slow-1", 12_000, Some("idem-slow"))
        .await;
    assert_eq!(replay.status, 200);
    let p = replay.json();
    assert_eq!(p["status"], "DONE");
    assert_eq!(p["totalAmount"], 12_000);

    let calls = h.calls();
    assert_eq!(calls.confirm_requests, 3);
    assert_eq!(calls.confirms_approved, 1);
    assert_eq!(calls.idempotency_conflicts, 1);
    assert_eq!(calls.idempotent_replays, 1);
}

#[tokio::test]
async fn a_replay_is_byte_for_byte_the_first_answer() {
    let h = Harness::start();
    h.fake.set_scenario(Scenario::Delay { millis: 600 });

    let body = json!({"paymentKey": "pk_bytes_1", "orderId": "order-bytes-1", "amount": 3_300});
    let first = h
        .post("/v1/payments/confirm", &body, Some("idem-bytes"))
        .send();
    let during = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        h.confirm("pk_bytes_1", "order-bytes-1", 3_300, Some("idem-bytes"))
            .await
    };
    let (first, during) = tokio::join!(first, during);
    let first = first.unwrap();
    let first_status = first.status().as_u16();
    let first_body = first.bytes().await.unwrap().to_vec();
    assert_eq!(first_status, 200);
    assert_eq!(during.status, 409);
    assert_eq!(during.code(), "IDEMPOTENT_REQUEST_PROCESSING");

    // The payment moves on; the replay still shows the first answer.
    h.fake.set_scenario(Scenario::Approve);
    let cancel = h
        .cancel("pk_bytes_1", json!({"cancelReason": "later"}), None)
        .await;
    assert_eq!(cancel.status, 200);
    let replay = h
        .confirm("pk_bytes_1", "order-bytes-1", 3_300, Some("idem-bytes"))
        .await;
    assert_eq!(replay.status, first_status);
    assert_eq!(replay.body, first_body, "a replay must be byte-identical");
    assert_eq!(replay.json()["status"], "DONE");
    assert_eq!(h.calls().confirms_approved, 1);
}

#[tokio::test]
async fn a_second_confirm_with_another_key_is_already_processed() {
    let h = Harness::start();
    assert_eq!(
        h.confirm("pk_twice_1", "order-twice-1", 1_000, Some("k1"))
            .await
            .status,
        200
    );

    let with_new_key = h
        .confirm("pk_twice_1", "order-twice-1", 1_000, Some("k2"))
        .await;
    assert_eq!(with_new_key.status, 400);
    assert_eq!(with_new_key.code(), "ALREADY_PROCESSED_PAYMENT");
    let without_key = h.confirm("pk_twice_1", "order-twice-1", 1_000, None).await;
    assert_eq!(without_key.status, 400);
    assert_eq!(without_key.code(), "ALREADY_PROCESSED_PAYMENT");

    // The same key replays the approval instead.
    let same_key = h
        .confirm("pk_twice_1", "order-twice-1", 1_000, Some("k1"))
        .await;
    assert_eq!(same_key.status, 200);

    let calls = h.calls();
    assert_eq!(calls.confirm_requests, 4);
    assert_eq!(calls.confirms_approved, 1);
}

#[tokio::test]
async fn confirm_refuses_bad_input_mismatches_and_reused_order_ids() {
    let h = Harness::start();
    for body in [
        json!({"orderId": "order-bad-1", "amount": 1_000}),
        json!({"paymentKey": "pk_bad", "amount": 1_000}),
        json!({"paymentKey": "pk_bad", "orderId": "order-bad-1"}),
        json!({"paymentKey": "pk_bad", "orderId": "order-bad-1", "amount": -5}),
        json!({"paymentKey": "pk_bad", "orderId": "order-bad-1", "amount": "1000"}),
        json!({"paymentKey": "pk_bad", "orderId": "short", "amount": 1_000}),
        json!({"paymentKey": "x".repeat(201), "orderId": "order-bad-1", "amount": 1_000}),
    ] {
        let reply = h.send(h.post("/v1/payments/confirm", &body, None)).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.code(), "INVALID_REQUEST", "{body}");
    }
    assert!(h.fake.payment("pk_bad").is_none());

    assert_eq!(
        h.confirm("pk_match_1", "order-match-1", 2_000, None)
            .await
            .status,
        200
    );
    let other_amount = h.confirm("pk_match_1", "order-match-1", 2_500, None).await;
    assert_eq!(other_amount.status, 400);
    assert_eq!(other_amount.code(), "INVALID_REQUEST");
    let reused_order = h.confirm("pk_match_2", "order-match-1", 2_000, None).await;
    assert_eq!(reused_order.status, 400);
    assert_eq!(reused_order.code(), "DUPLICATED_ORDER_ID");
    assert!(h.fake.payment("pk_match_2").is_none());
    assert_eq!(h.calls().confirms_approved, 1);
}

#[tokio::test]
async fn partial_cancels_accumulate_until_the_balance_is_gone() {
    let h = Harness::start();
    assert_eq!(
        h.confirm("pk_cancel_1", "order-cancel-1", 10_000, None)
            .await
            .status,
        200
    );
    let approved_key = h.fake.payment("pk_cancel_1").unwrap()["lastTransactionKey"].clone();

    let first = h
        .cancel(
            "pk_cancel_1",
            json!({"cancelReason": "one item", "cancelAmount": 3_000}),
            Some("c1"),
        )
        .await;
    assert_eq!(first.status, 200);
    let p = first.json();
    assert_eq!(p["status"], "PARTIAL_CANCELED");
    assert_eq!(p["totalAmount"], 10_000);
    assert_eq!(p["balanceAmount"], 7_000);
    assert_eq!(p["suppliedAmount"], 6_364);
    assert_eq!(p["vat"], 636);
    let cancels = p["cancels"].as_array().unwrap();
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0]["cancelAmount"], 3_000);
    assert_eq!(cancels[0]["cancelReason"], "one item");
    assert_eq!(cancels[0]["refundableAmount"], 7_000);
    assert_eq!(cancels[0]["cancelStatus"], "DONE");
    assert_eq!(cancels[0]["taxFreeAmount"], 0);
    assert!(cancels[0]["canceledAt"]
        .as_str()
        .unwrap()
        .ends_with("+09:00"));
    assert!(is_toss_transaction_key(&cancels[0]["transactionKey"]));
    assert_eq!(p["lastTransactionKey"], cancels[0]["transactionKey"]);
    assert_ne!(p["lastTransactionKey"], approved_key);

    // The same key does not refund twice.
    let replay = h
        .cancel(
            "pk_cancel_1",
            json!({"cancelReason": "one item", "cancelAmount": 3_000}),
            Some("c1"),
        )
        .await;
    assert_eq!(replay.body, first.body);

    let too_much = h
        .cancel(
            "pk_cancel_1",
            json!({"cancelReason": "too much", "cancelAmount": 8_000}),
            Some("c2"),
        )
        .await;
    assert_eq!(too_much.status, 403);
    assert_eq!(too_much.code(), "NOT_CANCELABLE_AMOUNT");
    assert_eq!(
        h.fake.payment("pk_cancel_1").unwrap()["balanceAmount"],
        7_000
    );

    let no_reason = h
        .cancel("pk_cancel_1", json!({"cancelAmount": 1_000}), None)
        .await;
    assert_eq!(no_reason.status, 400);
    assert_eq!(no_reason.code(), "INVALID_REQUEST");

    let rest = h
        .cancel(
            "pk_cancel_1",
            json!({"cancelReason": "the rest"}),
            Some("c3"),
        )
        .await;
    assert_eq!(rest.status, 200);
    let p = rest.json();
    assert_eq!(p["status"], "CANCELED");
    assert_eq!(p["balanceAmount"], 0);
    assert_eq!(p["cancels"].as_array().unwrap().len(), 2);
    assert_eq!(p["cancels"][1]["cancelAmount"], 7_000);
    assert_eq!(p["cancels"][1]["refundableAmount"], 0);

    let again = h
        .cancel("pk_cancel_1", json!({"cancelReason": "again"}), Some("c4"))
        .await;
    assert_eq!(again.status, 400);
    assert_eq!(again.code(), "ALREADY_CANCELED_PAYMENT");

    let unknown = h
        .cancel("pk_nowhere", json!({"cancelReason": "x"}), None)
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code(), "NOT_FOUND_PAYMENT");

    let calls = h.calls();
    assert_eq!(calls.cancel_requests, 7);
    assert_eq!(calls.cancels_applied, 2);
    assert_eq!(calls.idempotent_replays, 1);
    assert_eq!(calls.refunded_for("pk_cancel_1"), 10_000);
}

#[tokio::test]
async fn cancel_declines_and_server_errors_move_no_money() {
    let h = Harness::start();
    assert_eq!(
        h.confirm("pk_cdecl_1", "order-cdecl-1", 6_000, None)
            .await
            .status,
        200
    );

    h.fake.set_scenario(Scenario::Decline {
        code: "FORBIDDEN_CONSECUTIVE_REQUEST".into(),
        message: "반복적인 요청은 허용되지 않습니다. 잠시 후 다시 시도해주세요.".into(),
        status: 403,
    });
    let declined = h
        .cancel("pk_cdecl_1", json!({"cancelReason": "x"}), None)
        .await;
    assert_eq!(declined.status, 403);
    assert_eq!(declined.code(), "FORBIDDEN_CONSECUTIVE_REQUEST");

    h.fake.set_scenario(Scenario::ServerError);
    let failed = h
        .cancel("pk_cdecl_1", json!({"cancelReason": "x"}), None)
        .await;
    assert_eq!(failed.status, 500);

    let p = h.fake.payment("pk_cdecl_1").unwrap();
    assert_eq!(p["status"], "DONE");
    assert_eq!(p["balanceAmount"], 6_000);
    assert!(p["cancels"].is_null());
    assert_eq!(h.calls().cancels_applied, 0);
    assert_eq!(h.calls().refunded_for("pk_cdecl_1"), 0);
}

#[tokio::test]
async fn lookups_by_key_and_by_order() {
    let h = Harness::start();
    assert_eq!(
        h.confirm("pk_look_1", "order-look-1", 4_400, None)
            .await
            .status,
        200
    );

    let by_key = h.get("/v1/payments/pk_look_1").await;
    assert_eq!(by_key.status, 200);
    let by_order = h.get("/v1/payments/orders/order-look-1").await;
    assert_eq!(by_order.status, 200);
    assert_eq!(by_key.json(), by_order.json());
    assert_eq!(by_key.json()["paymentKey"], "pk_look_1");

    let missing_key = h.get("/v1/payments/pk_nobody").await;
    assert_eq!(missing_key.status, 404);
    assert_eq!(missing_key.code(), "NOT_FOUND_PAYMENT");
    let missing_order = h.get("/v1/payments/orders/order-nobody").await;
    assert_eq!(missing_order.status, 404);
    assert_eq!(missing_order.code(), "NOT_FOUND_PAYMENT");

    // Scenarios do not touch lookups.
    h.fake.set_scenario(Scenario::ServerError);
    assert_eq!(h.get("/v1/payments/pk_look_1").await.status, 200);

    assert_eq!(h.calls().lookups, 5);
}

#[tokio::test]
async fn a_wrong_secret_key_is_unauthorized() {
    let h = Harness::start();
    let body = json!({"paymentKey": "pk_auth_1", "orderId": "order-auth-1", "amount": 1_000});

    let wrong = h
        .send(
            h.http
                .post(h.url("/v1/payments/confirm"))
                .header("Authorization", basic_auth("someone-elses-key"))
                .json(&body),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.code(), "UNAUTHORIZED_KEY");

    let none = h
        .send(h.http.post(h.url("/v1/payments/confirm")).json(&body))
        .await;
    assert_eq!(none.status, 401);
    assert_eq!(none.code(), "UNAUTHORIZED_KEY");

    let lookup = h
        .send(
            h.http
                .get(h.url("/v1/payments/pk_auth_1"))
                .header("Authorization", basic_auth("nope")),
        )
        .await;
    assert_eq!(lookup.status, 401);

    // The right key without its colon: Toss's own error for that mistake.
    use base64::Engine as _;
    let no_colon = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(SECRET)
    );
    let forgot_colon = h
        .send(
            h.http
                .post(h.url("/v1/payments/confirm"))
                .header("Authorization", no_colon)
                .json(&body),
        )
        .await;
    assert_eq!(forgot_colon.status, 403);
    assert_eq!(forgot_colon.code(), "INCORRECT_BASIC_AUTH_FORMAT");

    assert!(h.fake.payment("pk_auth_1").is_none());
    let calls = h.calls();
    assert_eq!(calls.confirm_requests, 3);
    assert_eq!(calls.confirms_approved, 0);
    assert_eq!(calls.unauthorized, 4);
}

#[tokio::test]
async fn an_unissued_key_is_not_found_and_leaves_nothing_behind() {
    let h = Harness::start();
    assert_eq!(
        h.confirm("pk_known_1", "order-known-1", 1_000, None)
            .await
            .status,
        200
    );
    h.fake.set_scenario(Scenario::UnissuedKey);
    let bogus = h
        .confirm("pk_bogus_1", "order-unissued-1", 1_000, Some("idem-u1"))
        .await;
    assert_eq!(bogus.status, 404);
    assert_eq!(bogus.code(), "NOT_FOUND_PAYMENT");
    assert!(h.fake.payment("pk_bogus_1").is_none());
    assert_eq!(h.get("/v1/payments/pk_bogus_1").await.status, 404);
    assert_eq!(
        h.get("/v1/payments/orders/order-unissued-1").await.status,
        404
    );
    // A key it holds follows the usual rules.
    let again = h.confirm("pk_known_1", "order-known-1", 1_000, None).await;
    assert_eq!(again.code(), "ALREADY_PROCESSED_PAYMENT");

    // The customer's real key, once the widget issued it.
    h.fake.set_scenario(Scenario::Approve);
    let real = h
        .confirm("pk_real_1", "order-unissued-1", 1_000, Some("idem-u2"))
        .await;
    assert_eq!(real.status, 200);
    assert_eq!(h.calls().confirms_approved, 2);
}

#[tokio::test]
async fn rejected_credentials_refuse_every_call_until_reset() {
    let h = Harness::start();
    assert_eq!(
        h.confirm("pk_cred_0", "order-cred-0", 1_000, None)
            .await
            .status,
        200
    );
    h.fake.set_scenario(Scenario::RejectCredentials);
    let confirm = h
        .confirm("pk_cred_1", "order-cred-1", 1_000, Some("idem-c1"))
        .await;
    assert_eq!(confirm.status, 401);
    assert_eq!(confirm.code(), "UNAUTHORIZED_KEY");
    let cancel = h
        .cancel("pk_cred_0", json!({"cancelReason": "x"}), Some("idem-c2"))
        .await;
    assert_eq!(cancel.status, 401);
    assert_eq!(h.get("/v1/payments/pk_cred_0").await.status, 401);
    assert!(h.fake.payment("pk_cred_1").is_none());
    assert_eq!(h.calls().unauthorized, 3);

    h.fake.set_scenario(Scenario::Approve);
    let after = h
        .confirm("pk_cred_1", "order-cred-1", 1_000, Some("idem-c3"))
        .await;
    assert_eq!(after.status, 200);
    assert_eq!(h.get("/v1/payments/pk_cred_0").await.status, 200);
}

#[tokio::test]
async fn idempotency_keys_are_checked_and_scoped_by_route() {
    let h = Harness::start();
    let too_long = "k".repeat(301);
    let reply = h
        .confirm("pk_idem_1", "order-idem-1", 1_000, Some(&too_long))
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.code(), "INVALID_IDEMPOTENCY_KEY");
    assert!(h.fake.payment("pk_idem_1").is_none());

    // One key on the confirm route and on a cancel route: two requests.
    assert_eq!(
        h.confirm("pk_idem_1", "order-idem-1", 1_000, Some("shared"))
            .await
            .status,
        200
    );
    let cancel = h
        .cancel("pk_idem_1", json!({"cancelReason": "x"}), Some("shared"))
        .await;
    assert_eq!(cancel.status, 200);
    assert_eq!(cancel.json()["status"], "CANCELED");
}

#[tokio::test]
async fn control_routes_steer_a_fake_in_another_process() {
    let h = Harness::start();
    let http = &h.http;

    assert_eq!(
        http.get(h.url("/__fake/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let put = http
        .put(h.url("/__fake/scenario"))
        .json(&json!({"kind": "decline", "code": "REJECT_CARD_PAYMENT"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(h.fake.scenario(), Scenario::card_declined());
    let declined = h.confirm("pk_ctl_1", "order-ctl-1", 8_000, None).await;
    assert_eq!(declined.status, 403);

    let bad = http
        .put(h.url("/__fake/scenario"))
        .json(&json!({"kind": "explode"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let put = http
        .put(h.url("/__fake/scenario"))
        .json(&json!({"kind": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let got: Value = http
        .get(h.url("/__fake/scenario"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, json!({"kind": "approve"}));
    assert_eq!(
        h.confirm("pk_ctl_2", "order-ctl-2", 8_000, None)
            .await
            .status,
        200
    );

    // A dashboard cancel: no Authorization, same rules.
    let too_much = http
        .post(h.url("/__fake/payments/pk_ctl_2/cancel"))
        .json(&json!({"cancelReason": "operator", "cancelAmount": 9_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(too_much.status(), 403);
    let dashboard = http
        .post(h.url("/__fake/payments/pk_ctl_2/cancel"))
        .json(&json!({"cancelReason": "operator", "cancelAmount": 2_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 200);
    assert_eq!(h.fake.payment("pk_ctl_2").unwrap()["balanceAmount"], 6_000);

    let calls: Calls = http
        .get(h.url("/__fake/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls, h.calls());
    assert_eq!(calls.confirm_requests, 2);
    assert_eq!(calls.confirms_approved, 1);
    assert_eq!(calls.cancel_requests, 0);
    assert_eq!(calls.cancels_applied, 0);
    assert_eq!(calls.dashboard_cancels, 1);
    assert_eq!(calls.refunded_for("pk_ctl_2"), 2_000);

    let reset = http.post(h.url("/__fake/reset")).send().await.unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(h.calls(), Calls::default());
    assert!(h.fake.payment("pk_ctl_2").is_none());

    let unknown = http.get(h.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let h = Harness::start();
    let url = h.url("/__fake/health");
    assert_eq!(h.http.get(&url).send().await.unwrap().status(), 200);
    h.fake.shutdown().await;
    let fresh = reqwest::Client::new();
    let after = fresh.get(&url).send().await;
    assert!(after.is_err(), "still answering after shutdown: {after:?}");
}

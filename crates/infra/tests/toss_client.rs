//! The Toss client against wiremock: request shape, auth, idempotency key,
//! and every outcome class (approved, declined, unknown) including a
//! response that arrives after the read timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use payment_application::{
    ConfirmRequest, GatewayOutcome, GatewayPayment, GatewayStatus, LookupFailed, PaymentGateway,
};
use payment_domain::{Currency, Money, OrderId, PaymentKey};
use payment_infra::toss::{TossGateway, TossSettings};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "wiremock-secret";

fn gateway(server: &MockServer, read_timeout: Duration) -> TossGateway {
    TossGateway::new(&TossSettings {
        base_url: server.uri(),
        secret_key: SECRET.to_owned().into(),
        connect_timeout: Duration::from_secs(1),
        read_timeout,
    })
    .unwrap()
}

fn request() -> ConfirmRequest {
    ConfirmRequest {
        payment_key: PaymentKey::parse("tgen_20261122abc").unwrap(),
        order_id: OrderId::parse("order-toss-1").unwrap(),
        amount: Money::new(Decimal::from(15_000), Currency::Krw).unwrap(),
        idempotency_key: "01a2-approval-key".into(),
    }
}

fn toss_payment(status: &str) -> Value {
    json!({
        "mId": "tosspayments", "version": "2022-11-16",
        "paymentKey": "tgen_20261122abc", "orderId": "order-toss-1", "orderName": "sample",
        "status": status, "requestedAt": "2026-11-22T10:00:00+09:00",
        "approvedAt": "2026-11-22T10:00:05+09:00", "type": "NORMAL", "method": "카드",
        "currency": "KRW", "totalAmount": 15000, "balanceAmount": 15000,
        "suppliedAmount": 13636, "vat": 1364, "taxFreeAmount": 0,
        "lastTransactionKey": "9C62B18EEF0DE3EB7F4422EB6D14BC6E",
        "cancels": null, "failure": null, "isPartialCancelable": true,
    })
}

async fn confirm_answering(response: ResponseTemplate, read_timeout: Duration) -> GatewayOutcome {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payments/confirm"))
        .respond_with(response)
        .mount(&server)
        .await;
    gateway(&server, read_timeout).confirm(&request()).await
}

fn toss_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({ "code": code, "message": format!("{code} message") }))
}

#[tokio::test]
async fn confirm_sends_auth_idempotency_key_and_body_and_maps_the_payment() {
    let server = MockServer::start().await;
    // base64("wiremock-secret:")
    let basic = "Basic d2lyZW1vY2stc2VjcmV0Og==";
    Mock::given(method("POST"))
        .and(path("/v1/payments/confirm"))
        .and(header("authorization", basic))
        .and(header("idempotency-key", "01a2-approval-key"))
        .and(body_json(json!({
            "paymentKey": "tgen_20261122abc", "orderId": "order-toss-1", "amount": 15000
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(toss_payment("DONE")))
        .expect(1)
        .mount(&server)
        .await;

    let GatewayOutcome::Succeeded(payment) = gateway(&server, Duration::from_secs(5))
        .confirm(&request())
        .await
    else {
        panic!("expected an approval")
    };
    assert_eq!(payment.status, GatewayStatus::Done);
    assert_eq!(payment.total_amount, request().amount);
    assert_eq!(payment.method.as_deref(), Some("카드"));
    assert_eq!(
        payment.last_transaction_key.as_deref(),
        Some("9C62B18EEF0DE3EB7F4422EB6D14BC6E")
    );
    assert_eq!(
        payment.approved_at.unwrap().to_rfc3339(),
        "2026-11-22T01:00:05+00:00"
    );
}

#[tokio::test]
async fn a_card_rejection_is_a_definitive_decline() {
    let outcome = confirm_answering(
        toss_error(403, "REJECT_CARD_PAYMENT"),
        Duration::from_secs(5),
    )
    .await;
    let GatewayOutcome::Declined(failure) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(failure.code, "REJECT_CARD_PAYMENT");
    assert_eq!(failure.message, "REJECT_CARD_PAYMENT message");
}

#[tokio::test]
async fn an_invalid_request_is_a_decline_and_a_missing_session_a_refused_key() {
    let outcome =
        confirm_answering(toss_error(400, "INVALID_REQUEST"), Duration::from_secs(5)).await;
    assert!(
        matches!(&outcome, GatewayOutcome::Declined(f) if f.code == "INVALID_REQUEST"),
        "{outcome:?}"
    );
    // Issue 9: a refusal of the key or session is checked by a lookup
    // before it ends anything.
    for (status, code) in [
        (404, "NOT_FOUND_PAYMENT_SESSION"),
        (404, "NOT_FOUND_PAYMENT"),
    ] {
        let outcome = confirm_answering(toss_error(status, code), Duration::from_secs(5)).await;
        assert!(
            matches!(&outcome, GatewayOutcome::KeyRefused(f) if f.code == code),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn a_refusal_of_our_credentials_is_ours_never_a_decline() {
    for (status, code) in [
        (401, "UNAUTHORIZED_KEY"),
        (400, "INVALID_API_KEY"),
        (403, "INCORRECT_BASIC_AUTH_FORMAT"),
    ] {
        let outcome = confirm_answering(toss_error(status, code), Duration::from_secs(5)).await;
        assert!(
            matches!(&outcome, GatewayOutcome::Misconfigured(f) if f.code == code),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn ambiguous_codes_and_server_errors_are_unknown() {
    for (status, code) in [
        (400, "PROVIDER_ERROR"),
        (400, "ALREADY_PROCESSED_PAYMENT"),
        (500, "FAILED_INTERNAL_SYSTEM_PROCESSING"),
        (500, "FAILED_PAYMENT_INTERNAL_SYSTEM_PROCESSING"),
        (409, "IDEMPOTENT_REQUEST_PROCESSING"),
    ] {
        let outcome = confirm_answering(toss_error(status, code), Duration::from_secs(5)).await;
        assert!(
            matches!(&outcome, GatewayOutcome::Unknown(reason) if reason.contains(code)),
            "{outcome:?}"
        );
    }
    let bare_502 = confirm_answering(ResponseTemplate::new(502), Duration::from_secs(5)).await;
    assert!(
        matches!(bare_502, GatewayOutcome::Unknown(_)),
        "{bare_502:?}"
    );
}

#[tokio::test]
async fn an_answer_after_the_read_timeout_is_unknown_not_a_decline() {
    let late = ResponseTemplate::new(200)
        .set_body_json(toss_payment("DONE"))
        .set_delay(Duration::from_millis(1_500));
    let outcome = confirm_answering(late, Duration::from_millis(300)).await;
    assert!(
        matches!(&outcome, GatewayOutcome::Unknown(reason) if reason.contains("not answered")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_unreachable_gateway_is_unknown() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = TossGateway::new(&TossSettings {
        base_url: format!("http://{closed}"),
        secret_key: SECRET.to_owned().into(),
        connect_timeout: Duration::from_millis(300),
        read_timeout: Duration::from_millis(500),
    })
    .unwrap();
    assert!(matches!(
        gateway.confirm(&request()).await,
        GatewayOutcome::Unknown(_)
    ));
}

#[tokio::test]
async fn an_unreadable_success_is_unknown() {
    let outcome = confirm_answering(
        ResponseTemplate::new(200).set_body_string("<html>"),
        Duration::from_secs(5),
    )
    .await;
    assert!(matches!(outcome, GatewayOutcome::Unknown(_)), "{outcome:?}");
}

#[tokio::test]
async fn lookups_find_a_payment_or_nothing_and_report_failures() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/payments/orders/order-toss-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(toss_payment("ABORTED")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/payments/orders/order-missing"))
        .respond_with(toss_error(404, "NOT_FOUND_PAYMENT"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/payments/tgen_20261122abc"))
        .respond_with(toss_error(500, "FAILED_INTERNAL_SYSTEM_PROCESSING"))
        .mount(&server)
        .await;
    let toss = gateway(&server, Duration::from_secs(5));

    let found = toss
        .lookup_by_order(&OrderId::parse("order-toss-1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.status, GatewayStatus::Aborted);
    assert_eq!(
        toss.lookup_by_order(&OrderId::parse("order-missing").unwrap())
            .await,
        Ok(None)
    );
    assert!(toss
        .lookup(&PaymentKey::parse("tgen_20261122abc").unwrap())
        .await
        .is_err());
}

#[tokio::test]
async fn the_secret_never_shows_in_debug_output() {
    let server = MockServer::start().await;
    let debug = format!("{:?}", gateway(&server, Duration::from_secs(1)));
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(!debug.contains("d2lyZW1vY2stc2Vj"), "{debug}");
}

async fn lookup(toss: &TossGateway, key: &str) -> Result<Option<GatewayPayment>, LookupFailed> {
    toss.lookup(&PaymentKey::parse(key).unwrap()).await
}

/// Toss's "no such payment" at `at`, expected `times` times.
async fn not_found_payment_at(server: &MockServer, at: &str, times: u64) {
    Mock::given(method("GET"))
        .and(path(at))
        .respond_with(toss_error(404, "NOT_FOUND_PAYMENT"))
        .expect(times)
        .mount(server)
        .await;
}

#[tokio::test]
async fn only_not_found_payment_means_no_payment() {
    let server = MockServer::start().await;
    // A 404 of another kind: a wrong base URL, a route Toss does not have.
    Mock::given(method("GET"))
        .and(path("/v1/payments/tgen_wrong_route"))
        .respond_with(toss_error(404, "NOT_FOUND"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/payments/tgen_bare_404"))
        .respond_with(ResponseTemplate::new(404).set_body_string("<html>Not Found</html>"))
        .mount(&server)
        .await;
    not_found_payment_at(&server, "/v1/payments/tgen_unknown", 1).await;
    let toss = gateway(&server, Duration::from_secs(5));

    assert_eq!(lookup(&toss, "tgen_unknown").await, Ok(None));
    let wrong_route = lookup(&toss, "tgen_wrong_route").await;
    assert!(wrong_route.is_err(), "{wrong_route:?}");
    let bare = lookup(&toss, "tgen_bare_404").await;
    assert!(bare.is_err(), "{bare:?}");
}

#[tokio::test]
async fn a_payment_key_cannot_leave_its_path_segment() {
    let server = MockServer::start().await;
    // What a crafted key would reach if it were pasted into the path.
    Mock::given(method("GET"))
        .and(path("/v1/payments/orders/order-toss-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(toss_payment("DONE")))
        .expect(0)
        .mount(&server)
        .await;
    not_found_payment_at(&server, "/v1/payments/x%2F..%2Forders%2Forder-toss-1", 1).await;
    not_found_payment_at(&server, "/v1/payments/tgen_1%3FpaymentKey=x%23y", 1).await;
    let toss = gateway(&server, Duration::from_secs(5));

    assert_eq!(lookup(&toss, "x/../orders/order-toss-1").await, Ok(None));
    assert_eq!(lookup(&toss, "tgen_1?paymentKey=x#y").await, Ok(None));
    // A dot segment cannot be a Toss key: refused without asking Toss.
    assert_eq!(lookup(&toss, "..").await, Ok(None));
    assert_eq!(lookup(&toss, ".").await, Ok(None));
    server.verify().await;
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_cancel_puts_the_payment_key_in_one_encoded_segment() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payments/tgen%2F1%3Fa/cancel"))
        .respond_with(ResponseTemplate::new(200).set_body_json(toss_payment("CANCELED")))
        .expect(1)
        .mount(&server)
        .await;
    let toss = gateway(&server, Duration::from_secs(5));
    let outcome = toss
        .cancel(&payment_application::CancelRequest {
            payment_key: PaymentKey::parse("tgen/1?a").unwrap(),
            amount: Money::new(Decimal::from(15_000), Currency::Krw).unwrap(),
            reason: "refund".into(),
            idempotency_key: "cancel-key-1".into(),
        })
        .await;
    assert!(
        matches!(outcome, GatewayOutcome::Succeeded(_)),
        "{outcome:?}"
    );
    server.verify().await;
}

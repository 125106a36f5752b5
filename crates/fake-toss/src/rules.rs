//! Toss's rules, as the fake plays them: who may call (Basic auth with the
//! secret key), what a confirm or cancel body must hold, what a payment in
//! each state allows, Toss's error codes and messages, and how the current
//! [`Scenario`] bends an answer. Works on [`Shared`]'s state; knows nothing
//! of routing.

use std::time::Duration;

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde_json::Value;

use crate::http::Reply;
use crate::model::{ErrorBody, Payment, Status};
use crate::state::Shared;
use crate::Scenario;

/// Toss's limit on an idempotency key's length.
const IDEMPOTENCY_KEY_MAX: usize = 300;

/// Toss's own error answers.
impl Reply {
    pub(crate) fn invalid_request(detail: &str) -> Self {
        Self::error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            &format!("잘못된 요청입니다. ({detail})"),
        )
    }

    pub(crate) fn server_error() -> Self {
        Self::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "FAILED_INTERNAL_SYSTEM_PROCESSING",
            "내부 시스템 처리 작업이 실패했습니다. 잠시 후 다시 시도해주세요.",
        )
    }

    pub(crate) fn unauthorized_key() -> Self {
        Self::error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED_KEY",
            "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다.",
        )
    }

    pub(crate) fn not_found_payment() -> Self {
        Self::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND_PAYMENT",
            "존재하지 않는 결제 정보 입니다.",
        )
    }
}

/// A scenario's refusal, as given to the processing functions.
struct Refusal {
    status: StatusCode,
    body: ErrorBody,
}

impl Refusal {
    /// A scenario's error; a `status` outside 400–599 answers 400.
    fn new(status: u16, code: String, message: String) -> Self {
        let status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::BAD_REQUEST);
        Self {
            status,
            body: ErrorBody { code, message },
        }
    }

    fn reply(&self) -> Reply {
        Reply::json(self.status, &self.body)
    }
}

/// The two POST operations of the Toss API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Confirm,
    Cancel,
}

impl Shared {
    /// `Basic base64(secretKey + ":")`, or the refusal to answer.
    pub(crate) fn authorize(&self, headers: &HeaderMap) -> Result<(), Reply> {
        if self.scenario() == Scenario::RejectCredentials {
            self.count(|c| c.unauthorized += 1);
            return Err(Reply::unauthorized_key());
        }
        let decoded = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .ok()
            })
            .and_then(|v| String::from_utf8(v).ok());
        let refusal = match decoded {
            Some(d) if d.strip_suffix(':') == Some(self.secret_key.as_str()) => return Ok(()),
            Some(d) if d == self.secret_key => Reply::error(
                StatusCode::FORBIDDEN,
                "INCORRECT_BASIC_AUTH_FORMAT",
                "잘못된 요청입니다. ':' 를 포함해 인코딩해주세요.",
            ),
            _ => Reply::unauthorized_key(),
        };
        self.count(|c| c.unauthorized += 1);
        Err(refusal)
    }

    /// Runs `op` under `scenario`: the answer, and how long to hold it.
    pub(crate) fn process(
        &self,
        op: Op,
        payment_key: &str,
        body: &[u8],
    ) -> (Reply, Option<Duration>) {
        let scenario = self.scenario();
        let issued = scenario != Scenario::UnissuedKey;
        let run = |refusal: Option<&Refusal>| match op {
            Op::Confirm => self.confirm(body, refusal, issued),
            Op::Cancel => self.cancel(payment_key, body, refusal, false),
        };
        match scenario {
            // `RejectCredentials` answered in `authorize`, before this.
            Scenario::Approve | Scenario::UnissuedKey | Scenario::RejectCredentials => {
                (run(None), None)
            }
            Scenario::Decline {
                code,
                message,
                status,
            } => {
                let refusal = Refusal::new(status, code, message);
                (run(Some(&refusal)), None)
            }
            Scenario::ServerError => (Reply::server_error(), None),
            Scenario::ProcessThenServerError => {
                let _done_but_unsaid = run(None);
                (Reply::server_error(), None)
            }
            Scenario::ProcessThenError {
                code,
                message,
                status,
            } => {
                let _done_but_unsaid = run(None);
                (Refusal::new(status, code, message).reply(), None)
            }
            Scenario::Delay { millis } => (run(None), Some(Duration::from_millis(millis))),
            // The wait happened before `process` (see `post_api`).
            Scenario::DelayThenProcess { .. } => (run(None), None),
        }
    }

    /// `POST /v1/payments/confirm`, after auth and idempotency; a key the
    /// fake does not hold is known only if the widget `issued` it.
    fn confirm(&self, body: &[u8], refusal: Option<&Refusal>, issued: bool) -> Reply {
        let request = match ConfirmRequest::parse(body) {
            Ok(r) => r,
            Err(detail) => return Reply::invalid_request(&detail),
        };
        let mut inner = self.lock();
        if let Some(existing) = inner.payments.get(&request.payment_key) {
            if existing.order_id != request.order_id || existing.total_amount != request.amount {
                return Reply::invalid_request(
                    "orderId or amount differs from this paymentKey's payment",
                );
            }
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "ALREADY_PROCESSED_PAYMENT",
                "이미 처리된 결제 입니다.",
            );
        }
        if !issued {
            return Reply::not_found_payment();
        }
        if inner
            .payments
            .values()
            .any(|p| p.order_id == request.order_id && p.status.was_approved())
        {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "DUPLICATED_ORDER_ID",
                "이미 승인 및 취소가 진행된 중복된 주문번호 입니다. 다른 주문번호로 진행해주세요.",
            );
        }
        inner.next_seq += 1;
        let outcome = refusal.map_or(Ok(()), |r| Err(r.body.clone()));
        let payment = Payment::new_card(
            request.payment_key.clone(),
            request.order_id,
            request.amount,
            outcome,
            inner.next_seq,
        );
        let reply = match refusal {
            Some(refusal) => refusal.reply(),
            None => {
                inner.calls.confirms_approved += 1;
                Reply::json(StatusCode::OK, &payment)
            }
        };
        inner.payments.insert(request.payment_key, payment);
        reply
    }

    /// A cancel made in Toss's dashboard: the API's rules, without auth,
    /// idempotency or scenario.
    pub(crate) fn dashboard_cancel(&self, payment_key: &str, body: &[u8]) -> Reply {
        self.cancel(payment_key, body, None, true)
    }

    /// `POST /v1/payments/{paymentKey}/cancel` (after auth and idempotency)
    /// and the dashboard cancel.
    fn cancel(
        &self,
        payment_key: &str,
        body: &[u8],
        refusal: Option<&Refusal>,
        dashboard: bool,
    ) -> Reply {
        let request = match CancelRequest::parse(body) {
            Ok(r) => r,
            Err(detail) => return Reply::invalid_request(&detail),
        };
        let mut inner = self.lock();
        let Some(payment) = inner.payments.get_mut(payment_key) else {
            return Reply::not_found_payment();
        };
        match payment.status {
            Status::Done | Status::PartialCanceled => {}
            Status::Canceled => {
                return Reply::error(
                    StatusCode::BAD_REQUEST,
                    "ALREADY_CANCELED_PAYMENT",
                    "이미 취소된 결제 입니다.",
                )
            }
            Status::Aborted => {
                return Reply::error(
                    StatusCode::FORBIDDEN,
                    "NOT_CANCELABLE_PAYMENT",
                    "취소 할 수 없는 결제 입니다.",
                )
            }
        }
        let amount = request.cancel_amount.unwrap_or(payment.balance_amount);
        if amount > payment.balance_amount {
            return Reply::error(
                StatusCode::FORBIDDEN,
                "NOT_CANCELABLE_AMOUNT",
                "취소 할 수 없는 금액 입니다.",
            );
        }
        if let Some(refusal) = refusal {
            return refusal.reply();
        }
        payment.apply_cancel(amount, request.cancel_reason);
        let reply = Reply::json(StatusCode::OK, &*payment);
        let calls = &mut inner.calls;
        if dashboard {
            calls.dashboard_cancels += 1;
        } else {
            calls.cancels_applied += 1;
        }
        *calls.refunded.entry(payment_key.to_owned()).or_insert(0) += amount;
        reply
    }

    pub(crate) fn lookup_by_key(&self, payment_key: &str) -> Reply {
        let inner = self.lock();
        inner
            .payments
            .get(payment_key)
            .map_or_else(Reply::not_found_payment, |p| Reply::json(StatusCode::OK, p))
    }

    pub(crate) fn lookup_by_order(&self, order_id: &str) -> Reply {
        let inner = self.lock();
        inner
            .payments
            .values()
            .filter(|p| p.order_id == order_id)
            .max_by_key(|p| (p.status.was_approved(), p.seq))
            .map_or_else(Reply::not_found_payment, |p| Reply::json(StatusCode::OK, p))
    }
}

/// The confirm body, checked.
struct ConfirmRequest {
    payment_key: String,
    order_id: String,
    amount: i64,
}

impl ConfirmRequest {
    fn parse(body: &[u8]) -> Result<Self, String> {
        let body = json_object(body)?;
        let payment_key = body
            .get("paymentKey")
            .and_then(Value::as_str)
            .filter(|k| valid_payment_key(k))
            .ok_or("paymentKey must be a string of 1-200 printable characters")?;
        let order_id = body
            .get("orderId")
            .and_then(Value::as_str)
            .filter(|id| valid_order_id(id))
            .ok_or("orderId must be 6-64 characters of [A-Za-z0-9_-]")?;
        let amount = body
            .get("amount")
            .and_then(Value::as_i64)
            .filter(|a| *a > 0)
            .ok_or("amount must be a positive integer")?;
        Ok(Self {
            payment_key: payment_key.to_owned(),
            order_id: order_id.to_owned(),
            amount,
        })
    }
}

/// The cancel body, checked.
struct CancelRequest {
    cancel_reason: String,
    cancel_amount: Option<i64>,
}

impl CancelRequest {
    fn parse(body: &[u8]) -> Result<Self, String> {
        let body = json_object(body)?;
        let cancel_reason = body
            .get("cancelReason")
            .and_then(Value::as_str)
            .filter(|r| !r.trim().is_empty() && r.chars().count() <= 200)
            .ok_or("cancelReason must be a non-blank string of at most 200 characters")?;
        let cancel_amount = match body.get("cancelAmount") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .filter(|a| *a > 0)
                    .ok_or("cancelAmount must be a positive integer")?,
            ),
        };
        Ok(Self {
            cancel_reason: cancel_reason.to_owned(),
            cancel_amount,
        })
    }
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the body must be a JSON object".to_owned()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

fn valid_payment_key(key: &str) -> bool {
    (1..=200).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

fn valid_order_id(id: &str) -> bool {
    (6..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The `Idempotency-Key` header: `Ok(None)` when absent.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Reply> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.chars().count() <= IDEMPOTENCY_KEY_MAX => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "INVALID_IDEMPOTENCY_KEY",
            "멱등키는 300자 이하여야 합니다.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_follow_tosss_alphabet() {
        assert!(valid_order_id("order-1_A"));
        assert!(valid_order_id(&"a".repeat(64)));
        assert!(!valid_order_id("short"));
        assert!(!valid_order_id(&"a".repeat(65)));
        assert!(!valid_order_id("order 123"));
        assert!(!valid_order_id("주문번호123456"));
    }

    #[test]
    fn confirm_body_is_checked() {
        let ok = ConfirmRequest::parse(br#"{"paymentKey":"pk","orderId":"order-1","amount":1000}"#)
            .unwrap();
        assert_eq!(ok.amount, 1000);
        for bad in [
            &br#"{"paymentKey":"pk","orderId":"order-1"}"#[..],
            br#"{"paymentKey":"pk","orderId":"order-1","amount":"1000"}"#,
            br#"{"paymentKey":"pk","orderId":"order-1","amount":10.5}"#,
            br#"{"paymentKey":"pk","orderId":"order-1","amount":0}"#,
            br#"{"paymentKey":"","orderId":"order-1","amount":1000}"#,
            br#"{"orderId":"order-1","amount":1000}"#,
            br#"[1]"#,
            b"not json",
        ] {
            assert!(
                ConfirmRequest::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn cancel_body_is_checked() {
        let full = CancelRequest::parse(br#"{"cancelReason":"changed mind"}"#).unwrap();
        assert_eq!(full.cancel_amount, None);
        let null = CancelRequest::parse(br#"{"cancelReason":"x","cancelAmount":null}"#).unwrap();
        assert_eq!(null.cancel_amount, None);
        let part = CancelRequest::parse(br#"{"cancelReason":"x","cancelAmount":300}"#).unwrap();
        assert_eq!(part.cancel_amount, Some(300));
        assert!(CancelRequest::parse(br#"{"cancelAmount":300}"#).is_err());
        assert!(CancelRequest::parse(br#"{"cancelReason":"  "}"#).is_err());
        assert!(CancelRequest::parse(br#"{"cancelReason":"x","cancelAmount":-1}"#).is_err());
    }
}

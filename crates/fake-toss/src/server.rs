//! The HTTP side: shared state, the Toss routes, the idempotency store and
//! the test-control routes.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde_json::Value;

use crate::model::{ErrorBody, Payment, Status};
use crate::{Calls, RequestRecord, Scenario};

/// Toss keeps idempotency keys for 15 days.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(15 * 24 * 60 * 60);
/// Toss's limit on an idempotency key's length.
const IDEMPOTENCY_KEY_MAX: usize = 300;

pub(crate) type Observer = Arc<dyn Fn(&RequestRecord) + Send + Sync>;

/// State shared by the handle ([`crate::FakeToss`]) and the handlers.
pub(crate) struct Shared {
    secret_key: String,
    inner: Mutex<Inner>,
    observer: Mutex<Option<Observer>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Inner {
    scenario: Scenario,
    payments: HashMap<String, Payment>,
    next_seq: u64,
    idempotency: HashMap<(String, String), Stored>,
    calls: Calls,
}

#[derive(Debug)]
enum Stored {
    /// The first request with this key has not been answered yet.
    InFlight,
    /// Its answer, replayed to every later request with the key.
    Answered { at: Instant, reply: Reply },
}

/// An answer: status and exact body bytes (always JSON).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    status: StatusCode,
    body: Bytes,
}

impl Reply {
    fn json(status: StatusCode, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self {
                status,
                body: Bytes::from(body),
            },
            Err(e) => Self::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "FAILED_INTERNAL_SYSTEM_PROCESSING",
                &format!("fake-toss could not encode its answer: {e}"),
            ),
        }
    }

    fn error(status: StatusCode, code: &str, message: &str) -> Self {
        let body = serde_json::json!({ "code": code, "message": message });
        Self {
            status,
            body: Bytes::from(body.to_string()),
        }
    }

    fn invalid_request(detail: &str) -> Self {
        Self::error(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            &format!("잘못된 요청입니다. ({detail})"),
        )
    }

    fn server_error() -> Self {
        Self::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "FAILED_INTERNAL_SYSTEM_PROCESSING",
            "내부 시스템 처리 작업이 실패했습니다. 잠시 후 다시 시도해주세요.",
        )
    }

    fn not_found_payment() -> Self {
        Self::error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND_PAYMENT",
            "존재하지 않는 결제 정보 입니다.",
        )
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (
            self.status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            self.body,
        )
            .into_response()
    }
}

/// A scenario's refusal, as given to the processing functions.
struct Refusal {
    status: StatusCode,
    body: ErrorBody,
}

impl Refusal {
    fn reply(&self) -> Reply {
        Reply::json(self.status, &self.body)
    }
}

/// The two POST operations of the Toss API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Confirm,
    Cancel,
}

impl Shared {
    pub(crate) fn new(secret_key: String) -> Self {
        Self {
            secret_key,
            inner: Mutex::new(Inner::default()),
            observer: Mutex::new(None),
        }
    }

    /// Never held across an `.await`; a poisoned lock is still usable (the
    /// state is plain data, always left consistent between statements).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_scenario(&self, scenario: Scenario) {
        self.lock().scenario = scenario;
    }

    pub(crate) fn scenario(&self) -> Scenario {
        self.lock().scenario.clone()
    }

    pub(crate) fn calls(&self) -> Calls {
        self.lock().calls.clone()
    }

    pub(crate) fn payment(&self, payment_key: &str) -> Option<Value> {
        let inner = self.lock();
        let payment = inner.payments.get(payment_key)?;
        serde_json::to_value(payment).ok()
    }

    pub(crate) fn reset(&self) {
        let mut inner = self.lock();
        // In-flight keys stay: their requests will still record an answer.
        inner
            .idempotency
            .retain(|_, stored| matches!(stored, Stored::InFlight));
        inner.payments.clear();
        inner.calls = Calls::default();
        inner.scenario = Scenario::Approve;
    }

    pub(crate) fn set_observer(&self, observer: Observer) {
        *self.observer.lock().unwrap_or_else(PoisonError::into_inner) = Some(observer);
    }

    fn observer(&self) -> Option<Observer> {
        self.observer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn count(&self, f: impl FnOnce(&mut Calls)) {
        f(&mut self.lock().calls);
    }

    /// `Basic base64(secretKey + ":")`, or the refusal to answer.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Reply> {
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
            _ => Reply::error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED_KEY",
                "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다.",
            ),
        };
        self.count(|c| c.unauthorized += 1);
        Err(refusal)
    }

    /// Claims `key` on `route` for this request, or answers it from the store.
    fn reserve(&self, route: &str, key: &str) -> Result<(), Reply> {
        let mut inner = self.lock();
        let slot = (route.to_owned(), key.to_owned());
        match inner.idempotency.get(&slot) {
            Some(Stored::InFlight) => {
                inner.calls.idempotency_conflicts += 1;
                Err(Reply::error(
                    StatusCode::CONFLICT,
                    "IDEMPOTENT_REQUEST_PROCESSING",
                    "이전 멱등 요청이 처리중입니다.",
                ))
            }
            Some(Stored::Answered { at, reply }) if at.elapsed() < IDEMPOTENCY_TTL => {
                let reply = reply.clone();
                inner.calls.idempotent_replays += 1;
                Err(reply)
            }
            _ => {
                inner.idempotency.insert(slot, Stored::InFlight);
                Ok(())
            }
        }
    }

    /// Stores the answer for replay — except a 5xx, which frees the key: a
    /// server error is no answer, and the client may retry under the same
    /// key (the payment's own state still refuses a second approval).
    fn settle_key(&self, route: String, key: String, reply: &Reply) {
        let mut inner = self.lock();
        if reply.status.is_server_error() {
            inner.idempotency.remove(&(route, key));
        } else {
            inner.idempotency.insert(
                (route, key),
                Stored::Answered {
                    at: Instant::now(),
                    reply: reply.clone(),
                },
            );
        }
    }

    /// Runs `op` under `scenario`: the answer, and how long to hold it.
    fn process(&self, op: Op, payment_key: &str, body: &[u8]) -> (Reply, Option<Duration>) {
        let scenario = self.scenario();
        let run = |refusal: Option<&Refusal>| match op {
            Op::Confirm => self.confirm(body, refusal),
            Op::Cancel => self.cancel(payment_key, body, refusal, false),
        };
        match scenario {
            Scenario::Approve => (run(None), None),
            Scenario::Decline {
                code,
                message,
                status,
            } => {
                let status = StatusCode::from_u16(status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .unwrap_or(StatusCode::BAD_REQUEST);
                let refusal = Refusal {
                    status,
                    body: ErrorBody { code, message },
                };
                (run(Some(&refusal)), None)
            }
            Scenario::ServerError => (Reply::server_error(), None),
            Scenario::ProcessThenServerError => {
                let _done_but_unsaid = run(None);
                (Reply::server_error(), None)
            }
            Scenario::Delay { millis } => (run(None), Some(Duration::from_millis(millis))),
            // The wait happened before `process` (see `post_api`).
            Scenario::DelayThenProcess { .. } => (run(None), None),
        }
    }

    /// `POST /v1/payments/confirm`, after auth and idempotency.
    fn confirm(&self, body: &[u8], refusal: Option<&Refusal>) -> Reply {
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

    fn lookup_by_key(&self, payment_key: &str) -> Reply {
        let inner = self.lock();
        inner
            .payments
            .get(payment_key)
            .map_or_else(Reply::not_found_payment, |p| Reply::json(StatusCode::OK, p))
    }

    fn lookup_by_order(&self, order_id: &str) -> Reply {
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
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Reply> {
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

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let toss = Router::new()
        .route("/v1/payments/confirm", post(confirm))
        .route("/v1/payments/orders/{order_id}", get(lookup_by_order))
        .route("/v1/payments/{payment_key}", get(lookup_by_key))
        .route("/v1/payments/{payment_key}/cancel", post(cancel));
    let control = Router::new()
        .route("/__fake/health", get(|| async { "ok" }))
        .route("/__fake/scenario", get(get_scenario).put(put_scenario))
        .route("/__fake/calls", get(get_calls))
        .route("/__fake/reset", post(reset))
        .route(
            "/__fake/payments/{payment_key}/cancel",
            post(dashboard_cancel),
        );
    toss.merge(control)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), observe))
        .with_state(shared)
}

/// One `tracing` event and one observer call per answered request.
async fn observe(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let record = RequestRecord {
        method,
        path,
        status: response.status().as_u16(),
        elapsed: started.elapsed(),
    };
    tracing::info!(
        method = %record.method,
        path = %record.path,
        status = record.status,
        elapsed_ms = record.elapsed.as_millis(),
        "fake-toss request"
    );
    if let Some(observer) = shared.observer() {
        observer(&record);
    }
    response
}

async fn confirm(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    shared.count(|c| c.confirm_requests += 1);
    post_api(shared, Op::Confirm, String::new(), uri, &headers, body).await
}

async fn cancel(
    State(shared): State<Arc<Shared>>,
    Path(payment_key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    shared.count(|c| c.cancel_requests += 1);
    post_api(shared, Op::Cancel, payment_key, uri, &headers, body).await
}

/// Auth, then idempotency, then the work; the work is delayed (for
/// [`Scenario::DelayThenProcess`]), the answer held (for [`Scenario::Delay`])
/// and recorded on a task of its own, so a client that
/// hangs up neither undoes the work nor leaves its key "in flight" forever.
async fn post_api(
    shared: Arc<Shared>,
    op: Op,
    payment_key: String,
    uri: Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Reply {
    if let Err(refusal) = shared.authorize(headers) {
        return refusal;
    }
    let key = match idempotency_key(headers) {
        Ok(key) => key,
        Err(reply) => return reply,
    };
    let route = uri.path().to_owned();
    if let Some(key) = &key {
        if let Err(reply) = shared.reserve(&route, key) {
            return reply;
        }
    }
    let stall = match shared.scenario() {
        Scenario::DelayThenProcess { millis } => Some(Duration::from_millis(millis)),
        _ => None,
    };
    let finish = async move {
        if let Some(stall) = stall {
            tokio::time::sleep(stall).await;
        }
        let (reply, hold) = shared.process(op, &payment_key, &body);
        if let Some(hold) = hold {
            tokio::time::sleep(hold).await;
        }
        if let Some(key) = key {
            shared.settle_key(route, key, &reply);
        }
        reply
    };
    tokio::spawn(finish)
        .await
        .unwrap_or_else(|_| Reply::server_error())
}

async fn lookup_by_key(
    State(shared): State<Arc<Shared>>,
    Path(payment_key): Path<String>,
    headers: HeaderMap,
) -> Reply {
    shared.count(|c| c.lookups += 1);
    if let Err(refusal) = shared.authorize(&headers) {
        return refusal;
    }
    shared.lookup_by_key(&payment_key)
}

async fn lookup_by_order(
    State(shared): State<Arc<Shared>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Reply {
    shared.count(|c| c.lookups += 1);
    if let Err(refusal) = shared.authorize(&headers) {
        return refusal;
    }
    shared.lookup_by_order(&order_id)
}

async fn get_scenario(State(shared): State<Arc<Shared>>) -> Reply {
    Reply::json(StatusCode::OK, &shared.scenario())
}

async fn put_scenario(State(shared): State<Arc<Shared>>, body: Bytes) -> Reply {
    match serde_json::from_slice::<Scenario>(&body) {
        Ok(Scenario::Decline { status, .. }) if !(400..=599).contains(&status) => {
            Reply::invalid_request("a decline's status must be 400-599")
        }
        Ok(scenario) => {
            shared.set_scenario(scenario.clone());
            Reply::json(StatusCode::OK, &scenario)
        }
        Err(e) => Reply::invalid_request(&format!("not a scenario: {e}")),
    }
}

async fn get_calls(State(shared): State<Arc<Shared>>) -> Reply {
    Reply::json(StatusCode::OK, &shared.calls())
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset();
    StatusCode::NO_CONTENT
}

async fn dashboard_cancel(
    State(shared): State<Arc<Shared>>,
    Path(payment_key): Path<String>,
    body: Bytes,
) -> Reply {
    shared.cancel(&payment_key, &body, None, true)
}

async fn not_found() -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "존재하지 않는 정보 입니다.",
    )
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

//! A local stand-in for the Toss Payments core API, for end-to-end tests and
//! local runs of the payment service. It speaks HTTP on the loopback
//! interface and keeps everything in memory.
//!
//! # What it fakes
//!
//! | route | what Toss does | what the fake does |
//! |---|---|---|
//! | `POST /v1/payments/confirm` `{paymentKey, orderId, amount}` | approves a payment the widget created | creates the payment on first sight of the `paymentKey` (there is no widget here) and approves it: `DONE`, card, `method` `"카드"` |
//! | `POST /v1/payments/{paymentKey}/cancel` `{cancelReason, cancelAmount?}` | refunds all or part of the balance | the same; no `cancelAmount` refunds the whole balance |
//! | `GET /v1/payments/{paymentKey}` | the Payment object | the same |
//! | `GET /v1/payments/orders/{orderId}` | the Payment object of an order | the same (the approved one if any, else the latest) |
//!
//! Test-control routes, outside Toss's `/v1` tree, need no authorization:
//! `PUT`/`GET /__fake/scenario`, `GET /__fake/calls`, `POST /__fake/reset`,
//! `GET /__fake/health`, and `POST /__fake/payments/{paymentKey}/cancel` (a
//! "dashboard" cancel: the same rules as the API's, without auth,
//! idempotency or scenario).
//!
//! # Where it follows Toss's documentation
//!
//! * Authorization: `Basic base64(secretKey + ":")`. Another key, or none,
//!   is `401 UNAUTHORIZED_KEY`; the right key encoded without the colon is
//!   `403 INCORRECT_BASIC_AUTH_FORMAT`.
//! * Errors are `{"code", "message"}` with Toss's status and Korean message
//!   (from Toss's error-code table): `400 INVALID_REQUEST`,
//!   `400 ALREADY_PROCESSED_PAYMENT`, `400 DUPLICATED_ORDER_ID`,
//!   `400 ALREADY_CANCELED_PAYMENT`, `403 NOT_CANCELABLE_PAYMENT`,
//!   `403 NOT_CANCELABLE_AMOUNT`, `403 REJECT_CARD_PAYMENT` (the default
//!   decline), `404 NOT_FOUND_PAYMENT`, `500 FAILED_INTERNAL_SYSTEM_PROCESSING`.
//! * `Idempotency-Key` on POSTs: the first complete answer (status and body,
//!   byte for byte, errors included) is kept 15 days and replayed to any
//!   later request with that key on the same route, whatever its body and
//!   whatever the scenario is by then; a request that arrives while the first
//!   is still being processed gets `409 IDEMPOTENT_REQUEST_PROCESSING`; a key
//!   over 300 characters (or empty) is `400 INVALID_IDEMPOTENCY_KEY`. Error
//!   answers are kept and replayed like any other: a key that got
//!   `400 PROVIDER_ERROR` gets it again for 15 days, even where the work was
//!   done ([`Scenario::ProcessThenError`]), so a client learns the outcome by
//!   a lookup, never by re-sending. Keys are scoped by route (Toss scopes
//!   them by API key, URL and method), so one key may be used for a confirm
//!   and for a cancel. `GET`s ignore the header.
//! * The Payment object (version 2022-11-16): `mId`, `lastTransactionKey`
//!   (32 upper-case hex digits, renewed by every cancel), `status`,
//!   `requestedAt`/`approvedAt` in `+09:00`, `totalAmount`, `balanceAmount`,
//!   `suppliedAmount` + `vat` (1/11 of the balance, rounded half up, as in
//!   Toss's examples), `cancels[]` with `cancelAmount`, `cancelReason`,
//!   `canceledAt`, `transactionKey`, `refundableAmount`, `cancelStatus`
//!   `"DONE"`, and `failure` (`{code, message}` of a declined payment).
//! * `orderId` is 6–64 characters of `[A-Za-z0-9_-]`, `paymentKey` at most
//!   200, `cancelReason` at most 200; amounts are positive integers (KRW).
//!
//! # Where it simplifies
//!
//! * Only card payments, in KRW, with no tax-free part, no discounts, no
//!   installments, one merchant and one secret key.
//! * A confirm of an unknown `paymentKey` creates the payment (Toss would
//!   answer `NOT_FOUND_PAYMENT_SESSION` for a key its widget never issued,
//!   and checks `orderId`/`amount` against the widget's session; the fake
//!   only checks them against an earlier confirm of the same key).
//! * A declined confirm leaves the payment `ABORTED` with `failure`; a later
//!   confirm of the same `paymentKey` is `ALREADY_PROCESSED_PAYMENT`, and its
//!   `orderId` stays free for another `paymentKey`.
//! * Reusing the `orderId` of an approved payment under another `paymentKey`
//!   is `400 DUPLICATED_ORDER_ID` (Toss's code for that case in its table;
//!   for the widget flow Toss rejects it earlier, when the widget opens).
//! * Nothing expires: no 10-minute confirm window, no refund deadlines.
//! * Failures are switched on by a [`Scenario`] instead of by Toss's
//!   `TossPayments-Test-Code` header; with no widget, a key "the widget never
//!   issued" is one confirmed under [`Scenario::UnissuedKey`].
//! * A `5xx` answer is not kept: it frees its `Idempotency-Key`, and the next
//!   request with that key is processed afresh (Toss's documentation says
//!   only that a key's first answer is replayed). For a confirm that is
//!   harmless (the payment refuses a second approval with
//!   `ALREADY_PROCESSED_PAYMENT`); a cancel that was done before its `500`
//!   ([`Scenario::ProcessThenServerError`]) and is re-sent refunds again if
//!   the balance allows. A client must settle a `5xx` by a lookup either
//!   way; the fake makes the blind re-send visibly wrong.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fake_toss::{FakeConfig, FakeToss, Scenario};
//!
//! let fake = FakeToss::start(FakeConfig::new("test_sk_fake"))?;
//! let base = fake.base_url(); // point the Toss client here
//! fake.set_scenario(Scenario::Delay { millis: 3_000 });
//! // ... drive the service ...
//! assert_eq!(fake.calls().confirms_approved, 1);
//! fake.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod http;
mod model;
mod rules;
mod state;

/// How to start a [`FakeToss`].
#[derive(Clone, PartialEq, Eq)]
pub struct FakeConfig {
    /// Where to listen. Port 0 (the default, on 127.0.0.1) picks a free port;
    /// [`FakeToss::base_url`] tells which.
    pub addr: SocketAddr,
    /// The one secret key accepted; any other gets `401 UNAUTHORIZED_KEY`.
    pub secret_key: String,
}

impl FakeConfig {
    /// The default secret key: `test_sk_fake`.
    pub const DEFAULT_SECRET_KEY: &'static str = "test_sk_fake";

    /// A free port on 127.0.0.1, accepting `secret_key`.
    #[must_use]
    pub fn new(secret_key: impl Into<String>) -> Self {
        Self {
            secret_key: secret_key.into(),
            ..Self::default()
        }
    }

    /// The same, listening on `addr`.
    #[must_use]
    pub const fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
            secret_key: Self::DEFAULT_SECRET_KEY.to_owned(),
        }
    }
}

impl fmt::Debug for FakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A test key, but a secret key all the same: not in logs.
        f.debug_struct("FakeConfig")
            .field("addr", &self.addr)
            .field("secret_key", &"[REDACTED]")
            .finish()
    }
}

/// The `Authorization` header value Toss expects for `secret_key`:
/// `Basic base64(secret_key + ":")`.
#[must_use]
pub fn basic_auth(secret_key: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{secret_key}:"));
    format!("Basic {encoded}")
}

/// How the fake answers the next confirms and cancels (lookups and the
/// dashboard cancel are never affected, except by `RejectCredentials`). It
/// stays until changed.
///
/// As JSON (for `PUT /__fake/scenario`) it is tagged by `kind`:
/// `{"kind":"approve"}`, `{"kind":"decline","code":"REJECT_CARD_PAYMENT",
/// "message":"…","status":403}` (`message` and `status` may be left out),
/// `{"kind":"server_error"}`, `{"kind":"process_then_server_error"}`,
/// `{"kind":"process_then_error","code":"PROVIDER_ERROR"}` (`message` and
/// `status`, default 400, may be left out),
/// `{"kind":"delay","millis":3000}` (alias `process_then_delay`),
/// `{"kind":"delay_then_process","millis":3000}`, `{"kind":"unissued_key"}`,
/// `{"kind":"reject_credentials"}`.
///
/// Validation and state rules (`INVALID_REQUEST`,
/// `ALREADY_PROCESSED_PAYMENT`, `NOT_CANCELABLE_AMOUNT`, …) come before the
/// scenario, except for `ServerError`, which answers before looking at
/// anything. A request whose `Idempotency-Key` already has an answer gets
/// that answer, whatever the scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scenario {
    /// Process normally and answer at once.
    #[default]
    Approve,
    /// Refuse: answer `status` with `{code, message}`, move no money. A
    /// declined confirm leaves the payment `ABORTED` with this `failure`.
    Decline {
        /// Toss's error code, e.g. `REJECT_CARD_PAYMENT`.
        code: String,
        /// The message Toss would give.
        #[serde(default = "default_decline_message")]
        message: String,
        /// The HTTP status, 400–599 (another value answers 400).
        #[serde(default = "default_decline_status")]
        status: u16,
    },
    /// Answer `500 FAILED_INTERNAL_SYSTEM_PROCESSING` and process nothing.
    ServerError,
    /// Process (approve or cancel) but answer
    /// `500 FAILED_INTERNAL_SYSTEM_PROCESSING` (whatever processing said,
    /// even a refusal): the caller cannot tell that the work was done without
    /// looking it up.
    ProcessThenServerError,
    /// Process (approve or cancel) but answer `status` with `{code,
    /// message}` (whatever processing said): Toss moved the money and
    /// reported an error such as `400 PROVIDER_ERROR`. A 4xx is kept for the
    /// request's `Idempotency-Key` like any answer, so re-sending with the
    /// key replays the same error and moves no more money; only a lookup
    /// shows what was done. (A 5xx frees the key, as for every 5xx.)
    ProcessThenError {
        /// Toss's error code, e.g. `PROVIDER_ERROR`.
        code: String,
        /// The message Toss would give.
        #[serde(default = "default_process_then_error_message")]
        message: String,
        /// The HTTP status, 400–599 (another value answers 400).
        #[serde(default = "default_process_then_error_status")]
        status: u16,
    },
    /// Process at once, then wait `millis` before answering (every answer,
    /// errors too), so a client that times out leaves the work done at Toss.
    /// Meanwhile the request's `Idempotency-Key` is "being processed".
    #[serde(alias = "process_then_delay")]
    Delay {
        /// How long to hold the answer.
        millis: u64,
    },
    /// Wait `millis` first, then process and answer: until then lookups
    /// see nothing approved, and a client that times out cannot learn the
    /// outcome at once — only later, by a lookup or a retry.
    DelayThenProcess {
        /// How long to wait before processing.
        millis: u64,
    },
    /// The confirms name payment keys Toss's widget never issued (a bogus
    /// or a guessed key): a confirm of a key the fake does not hold answers
    /// `404 NOT_FOUND_PAYMENT` "존재하지 않는 결제 정보 입니다." and stores
    /// nothing, so a lookup of the key finds nothing either. Confirms of keys
    /// it holds, and cancels, follow the usual rules.
    UnissuedKey,
    /// Our secret key is no longer accepted (revoked, or the wrong one
    /// deployed): every `/v1` call, lookups included, answers
    /// `401 UNAUTHORIZED_KEY` and does nothing — Toss checks authorization
    /// before anything else.
    RejectCredentials,
}

fn default_decline_message() -> String {
    "한도초과 혹은 잔액부족으로 결제에 실패했습니다.".to_owned()
}

const fn default_decline_status() -> u16 {
    403
}

fn default_process_then_error_message() -> String {
    "일시적인 오류가 발생했습니다. 잠시 후 다시 시도해주세요.".to_owned()
}

const fn default_process_then_error_status() -> u16 {
    400
}

impl Scenario {
    /// Toss's card decline: `403 REJECT_CARD_PAYMENT` "한도초과 혹은
    /// 잔액부족으로 결제에 실패했습니다.".
    #[must_use]
    pub fn card_declined() -> Self {
        Self::Decline {
            code: "REJECT_CARD_PAYMENT".to_owned(),
            message: default_decline_message(),
            status: default_decline_status(),
        }
    }
}

/// What the fake has been asked and what it did (`GET /__fake/calls` serves
/// it as camelCase JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Calls {
    /// `POST /v1/payments/confirm` requests received, whatever the answer.
    pub confirm_requests: u64,
    /// Confirms that approved a payment (replays and declines excluded).
    pub confirms_approved: u64,
    /// `POST /v1/payments/{paymentKey}/cancel` requests received.
    pub cancel_requests: u64,
    /// API cancels that refunded money (replays excluded).
    pub cancels_applied: u64,
    /// Dashboard cancels (`POST /__fake/payments/{paymentKey}/cancel`) that
    /// refunded money.
    pub dashboard_cancels: u64,
    /// Total refunded per `paymentKey`, API and dashboard cancels together.
    pub refunded: BTreeMap<String, i64>,
    /// `GET` lookups received (by key and by order).
    pub lookups: u64,
    /// Requests answered from the `Idempotency-Key` store.
    pub idempotent_replays: u64,
    /// Requests answered `409 IDEMPOTENT_REQUEST_PROCESSING`.
    pub idempotency_conflicts: u64,
    /// Requests refused for their `Authorization` (401 or 403).
    pub unauthorized: u64,
}

impl Calls {
    /// Total refunded for `payment_key` (0 when nothing was).
    #[must_use]
    pub fn refunded_for(&self, payment_key: &str) -> i64 {
        self.refunded.get(payment_key).copied().unwrap_or(0)
    }
}

/// One answered request, as given to a request observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The HTTP method.
    pub method: String,
    /// The path as received (percent-encoded).
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// From receipt to answer.
    pub elapsed: Duration,
}

/// A running fake Toss. Dropping it stops the server (gracefully, in the
/// background); [`FakeToss::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct FakeToss {
    addr: SocketAddr,
    shared: Arc<state::Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeToss {
    /// Binds `config.addr` and serves on a Tokio task.
    ///
    /// Must be called inside a Tokio runtime with I/O enabled (e.g. in a
    /// `#[tokio::test]`); the server lives on that runtime.
    ///
    /// # Errors
    /// When there is no Tokio runtime or the address cannot be bound.
    pub fn start(config: FakeConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            std::io::Error::other(format!("FakeToss::start needs a Tokio runtime: {e}"))
        })?;
        let listener = std::net::TcpListener::bind(config.addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let shared = Arc::new(state::Shared::new(config.secret_key));
        let app = http::router(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let shutdown = async move {
                // A dropped sender stops the server as well.
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "fake-toss server failed");
            }
        });
        tracing::info!(%addr, "fake-toss listening");
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on.
    #[must_use]
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, without a trailing slash: the Toss API base URL.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How the next confirms and cancels are answered.
    pub fn set_scenario(&self, scenario: Scenario) {
        self.shared.set_scenario(scenario);
    }

    /// The scenario in force.
    #[must_use]
    pub fn scenario(&self) -> Scenario {
        self.shared.scenario()
    }

    /// The counters so far.
    #[must_use]
    pub fn calls(&self) -> Calls {
        self.shared.calls()
    }

    /// The current Payment object of `payment_key`, as `GET` would answer it.
    #[must_use]
    pub fn payment(&self, payment_key: &str) -> Option<serde_json::Value> {
        self.shared.payment(payment_key)
    }

    /// Forgets every payment, idempotency key and counter, and goes back to
    /// [`Scenario::Approve`].
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Calls `observer` once per answered request (the binary logs with it).
    pub fn set_request_observer(&self, observer: impl Fn(&RequestRecord) + Send + Sync + 'static) {
        self.shared.set_observer(Arc::new(observer));
    }

    /// Stops accepting, lets requests in flight finish (at most 5 s), and
    /// returns once the server task has ended.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }
}

impl Drop for FakeToss {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_encodes_key_and_colon() {
        // "test_sk_fake:" in base64.
        assert_eq!(basic_auth("test_sk_fake"), "Basic dGVzdF9za19mYWtlOg==");
    }

    #[test]
    fn scenario_json_is_tagged_by_kind() {
        let delay: Scenario = serde_json::from_str(r#"{"kind":"delay","millis":250}"#).unwrap();
        assert_eq!(delay, Scenario::Delay { millis: 250 });
        let alias: Scenario =
            serde_json::from_str(r#"{"kind":"process_then_delay","millis":5}"#).unwrap();
        assert_eq!(alias, Scenario::Delay { millis: 5 });
        let decline: Scenario =
            serde_json::from_str(r#"{"kind":"decline","code":"REJECT_CARD_PAYMENT"}"#).unwrap();
        assert_eq!(decline, Scenario::card_declined());
        assert_eq!(
            serde_json::to_value(Scenario::ProcessThenServerError).unwrap(),
            serde_json::json!({"kind": "process_then_server_error"})
        );
        let done_but_error: Scenario =
            serde_json::from_str(r#"{"kind":"process_then_error","code":"PROVIDER_ERROR"}"#)
                .unwrap();
        assert_eq!(
            done_but_error,
            Scenario::ProcessThenError {
                code: "PROVIDER_ERROR".into(),
                message: default_process_then_error_message(),
                status: 400,
            }
        );
        assert_eq!(Scenario::default(), Scenario::Approve);
    }

    #[test]
    fn config_debug_hides_the_secret_key() {
        let shown = format!("{:?}", FakeConfig::new("test_sk_very_secret"));
        assert!(!shown.contains("very_secret"), "{shown}");
    }
}

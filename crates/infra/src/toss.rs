//! Toss Payments behind the [`PaymentGateway`] port (reqwest).
//!
//! The only place that knows Toss's wire format: Basic auth from the secret
//! key, the Payment object, `{code, message}` errors, and which codes mean a
//! definitive decline versus an outcome nobody knows yet ([`classify`]).
//! Every POST carries the caller's `Idempotency-Key` (Toss keeps keys 15
//! days), so a retried confirm can never charge twice. A payment key, which
//! may come from an unauthenticated webhook, enters a URL only as one
//! percent-encoded path segment; a lookup finds "no payment" only when Toss
//! says `NOT_FOUND_PAYMENT`. Amounts travel as Toss writes them: exact JSON
//! numbers in the currency's unit (`wire_amount`).

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, FixedOffset, Utc};
use payment_application::{
    CancelRequest, ConfirmRequest, GatewayCancel, GatewayOutcome, GatewayPayment, GatewayStatus,
    LookupFailed, PaymentGateway,
};
use payment_domain::{Currency, Failure, Money, OrderId, PaymentKey};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::json;

/// Toss error codes after which nobody knows whether money moved: the
/// payment must be looked up. Every other 4xx code is a decline (of one of
/// the three kinds below); every 5xx and every transport failure is unknown.
pub const UNKNOWN_OUTCOME_CODES: &[&str] = &[
    "PROVIDER_ERROR",
    "FAILED_INTERNAL_SYSTEM_PROCESSING",
    "FAILED_PAYMENT_INTERNAL_SYSTEM_PROCESSING",
    "UNKNOWN_PAYMENT_ERROR",
    "ALREADY_PROCESSED_PAYMENT",
    "IDEMPOTENT_REQUEST_PROCESSING",
];

/// Toss's refusals of the payment key or its session rather than of the
/// payment (Toss's error-code table: `404 NOT_FOUND_PAYMENT` "존재하지 않는
/// 결제 정보 입니다.", `404 NOT_FOUND_PAYMENT_SESSION` "결제 시간이 만료되어
/// 결제 진행 데이터가 존재하지 않습니다.", `400 INVALID_PAYMENT_KEY`). Anyone
/// can send a key, so these end a payment only once a lookup shows the key
/// is the order's.
pub const KEY_REFUSED_CODES: &[&str] = &[
    "NOT_FOUND_PAYMENT",
    "NOT_FOUND_PAYMENT_SESSION",
    "INVALID_PAYMENT_KEY",
];

/// Toss's refusals of our own credentials or merchant configuration: Toss
/// did nothing, and the customer's payment is not at fault (`401
/// UNAUTHORIZED_KEY`, `400 INVALID_API_KEY`, `403 INCORRECT_BASIC_AUTH_FORMAT`,
/// `400 NOT_FOUND_TERMINAL_ID`, `400 INVALID_AUTHORIZE_AUTH`). Any other 401
/// is one too: Toss answers 401 only for authentication.
pub const MISCONFIGURED_CODES: &[&str] = &[
    "UNAUTHORIZED_KEY",
    "INVALID_API_KEY",
    "INCORRECT_BASIC_AUTH_FORMAT",
    "NOT_FOUND_TERMINAL_ID",
    "INVALID_AUTHORIZE_AUTH",
];

/// How a Toss error answer is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A definitive no to the payment.
    Declined,
    /// A no to the payment key or session (see [`KEY_REFUSED_CODES`]).
    KeyRefused,
    /// A no to our credentials or configuration (see [`MISCONFIGURED_CODES`]).
    Misconfigured,
    Unknown,
}

/// The one table mapping Toss's answers to outcome classes.
#[must_use]
pub fn classify(status: StatusCode, code: Option<&str>) -> Class {
    match code {
        _ if status.is_server_error() => Class::Unknown,
        _ if status == StatusCode::UNAUTHORIZED => Class::Misconfigured,
        Some(code) if UNKNOWN_OUTCOME_CODES.contains(&code) => Class::Unknown,
        Some(code) if MISCONFIGURED_CODES.contains(&code) => Class::Misconfigured,
        Some(code) if KEY_REFUSED_CODES.contains(&code) => Class::KeyRefused,
        Some(_) if status.is_client_error() => Class::Declined,
        // A 4xx without a readable code, or anything else odd: do not guess.
        _ => Class::Unknown,
    }
}

#[derive(Debug, Clone)]
pub struct TossSettings {
    pub base_url: String,
    pub secret_key: SecretString,
    pub connect_timeout: Duration,
    /// The whole request, answer included; past it the outcome is unknown.
    pub read_timeout: Duration,
}

/// The one Toss code that means "Toss has no such payment". Any other 404
/// (a wrong base URL, a route Toss does not have, a proxy's page) is a failed
/// lookup, never "no payment": reading it as absence would let the caller
/// conclude that money never moved.
pub const NOT_FOUND_PAYMENT: &str = "NOT_FOUND_PAYMENT";

/// The Toss client. Cheap to clone.
#[derive(Clone)]
pub struct TossGateway {
    http: reqwest::Client,
    base_url: Url,
}

impl std::fmt::Debug for TossGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TossGateway")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}

/// A payment key as one URL path segment, or `None` for a key that cannot
/// be one (`.` or `..` would be read as a dot segment and climb the path;
/// Toss issues no such key). Everything else is percent-encoded by
/// [`TossGateway::endpoint`], so a key (from a webhook, say) can never add
/// a segment, a query or a fragment to the URL.
fn key_segment(payment_key: &PaymentKey) -> Option<&str> {
    let key = payment_key.as_str();
    (!key.bytes().all(|b| b == b'.')).then_some(key)
}

impl TossGateway {
    /// # Errors
    /// When the base URL is not an http(s) URL or the HTTP client cannot be
    /// built.
    pub fn new(settings: &TossSettings) -> anyhow::Result<Self> {
        let base_url = Url::parse(&settings.base_url).context("Toss base URL")?;
        anyhow::ensure!(
            matches!(base_url.scheme(), "http" | "https") && !base_url.cannot_be_a_base(),
            "Toss base URL must be an http(s) URL, got {:?}",
            settings.base_url
        );
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:", settings.secret_key.expose_secret()));
        let mut authorization = HeaderValue::from_str(&format!("Basic {credentials}"))
            .context("secret key is not header-safe")?;
        authorization.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization);
        // One pooled client for the process (reqwest keeps connections
        // alive and reuses them). An idle connection is dropped before a
        // typical 60 s server/LB idle timeout can close it under us: a confirm
        // POST sent on a connection the peer just closed fails without an
        // answer, and that is an unknown outcome, looked up again.
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.read_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .user_agent(concat!("payment-service/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("build Toss HTTP client")?;
        Ok(Self { http, base_url })
    }

    /// The base URL with `segments` appended, each percent-encoded as one
    /// path segment (`/`, `?`, `#`, `%` and `\` included).
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        // Never fails: `new` refused a base URL that cannot take a path.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Reads a POST's answer into an outcome class (see [`classify`]).
    async fn answer(&self, what: &str, sent: reqwest::Result<reqwest::Response>) -> GatewayOutcome {
        let response = match sent {
            Ok(response) => response,
            Err(error) => return GatewayOutcome::Unknown(format!("{what} not answered: {error}")),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => return GatewayOutcome::Unknown(format!("{what} answer lost: {error}")),
        };
        if status.is_success() {
            return match parse_payment(&body) {
                Ok(payment) => GatewayOutcome::Succeeded(payment),
                Err(error) => {
                    GatewayOutcome::Unknown(format!("unreadable {what} answer: {error:#}"))
                }
            };
        }
        let error = serde_json::from_slice::<TossError>(&body).ok();
        let code = error.as_ref().map(|e| e.code.as_str());
        let failure = || {
            let error = error.clone().unwrap_or_default();
            Failure {
                code: error.code,
                message: error.message,
            }
        };
        match classify(status, code) {
            Class::Declined => GatewayOutcome::Declined(failure()),
            Class::KeyRefused => GatewayOutcome::KeyRefused(failure()),
            Class::Misconfigured => {
                let failure = failure();
                metrics::counter!("payment_gateway_credential_errors_total", "operation" => what.to_owned())
                    .increment(1);
                tracing::error!(operation = what, %status, code = %failure.code, "Toss refused our credentials or configuration: check PAYMENT__TOSS__SECRET_KEY and the merchant setup");
                GatewayOutcome::Misconfigured(failure)
            }
            Class::Unknown => {
                GatewayOutcome::Unknown(format!("{what} answered {status} {}", code.unwrap_or("-")))
            }
        }
    }

    async fn lookup_at(&self, url: Url) -> Result<Option<GatewayPayment>, LookupFailed> {
        let path = url.path().to_owned();
        let failed = |what: String| LookupFailed(format!("GET {path}: {what}"));
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            let code = serde_json::from_slice::<TossError>(&body)
                .map(|e| e.code)
                .unwrap_or_default();
            if status == StatusCode::NOT_FOUND && code == NOT_FOUND_PAYMENT {
                return Ok(None);
            }
            return Err(failed(format!("{status} {code}")));
        }
        parse_payment(&body)
            .map(Some)
            .map_err(|e| failed(format!("{e:#}")))
    }
}

impl PaymentGateway for TossGateway {
    async fn confirm(&self, request: &ConfirmRequest) -> GatewayOutcome {
        let body = json!({
            "paymentKey": request.payment_key.as_str(),
            "orderId": request.order_id.as_str(),
            "amount": wire_amount(request.amount),
        });
        let sent = self
            .http
            .post(self.endpoint(&["v1", "payments", "confirm"]))
            .header("Idempotency-Key", &request.idempotency_key)
            .json(&body)
            .send()
            .await;
        self.answer("confirm", sent).await
    }

    async fn cancel(&self, request: &CancelRequest) -> GatewayOutcome {
        let body = json!({
            "cancelReason": request.reason,
            "cancelAmount": wire_amount(request.amount),
        });
        let Some(key) = key_segment(&request.payment_key) else {
            return GatewayOutcome::Declined(Failure {
                code: "INVALID_PAYMENT_KEY".to_owned(),
                message: format!(
                    "{:?} cannot be a Toss payment key; nothing was sent",
                    request.payment_key.as_str()
                ),
            });
        };
        let sent = self
            .http
            .post(self.endpoint(&["v1", "payments", key, "cancel"]))
            .header("Idempotency-Key", &request.idempotency_key)
            .json(&body)
            .send()
            .await;
        self.answer("cancel", sent).await
    }

    async fn lookup_by_order(
        &self,
        order_id: &OrderId,
    ) -> Result<Option<GatewayPayment>, LookupFailed> {
        self.lookup_at(self.endpoint(&["v1", "payments", "orders", order_id.as_str()]))
            .await
    }

    async fn lookup(
        &self,
        payment_key: &PaymentKey,
    ) -> Result<Option<GatewayPayment>, LookupFailed> {
        let Some(key) = key_segment(payment_key) else {
            tracing::warn!(
                payment_key = payment_key.as_str(),
                "not a Toss payment key: no such payment"
            );
            return Ok(None);
        };
        self.lookup_at(self.endpoint(&["v1", "payments", key]))
            .await
    }
}

/// An amount as Toss reads it: a JSON number in the currency's own unit,
/// written from the decimal's digits (never a float). Won and yen are
/// integers (`15000`); other currencies (Toss's overseas payments, e.g. USD)
/// carry their minor unit (`10.99`). Independent of our public event format
/// on purpose: this is Toss's contract, not ours.
fn wire_amount(amount: Money) -> serde_json::Value {
    let mut decimal = amount.amount();
    decimal.rescale(amount.currency().minor_unit_scale());
    let number = if decimal.scale() == 0 {
        // Whole units at most 15 digits (Money's maximum): always an i64.
        i64::try_from(decimal.mantissa())
            .map(serde_json::Number::from)
            .ok()
    } else {
        serde_json::Number::from_str(&decimal.to_string()).ok()
    };
    number.map_or_else(
        || serde_json::Value::String(decimal.to_string()),
        serde_json::Value::Number,
    )
}

#[derive(Debug, Clone, Default, Deserialize)]
struct TossError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The parts of Toss's Payment object we use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TossPayment {
    payment_key: String,
    order_id: String,
    status: String,
    total_amount: serde_json::Value,
    balance_amount: serde_json::Value,
    currency: Option<String>,
    method: Option<String>,
    approved_at: Option<DateTime<FixedOffset>>,
    last_transaction_key: Option<String>,
    failure: Option<TossError>,
    cancels: Option<Vec<TossCancel>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TossCancel {
    cancel_amount: serde_json::Value,
    transaction_key: Option<String>,
}

fn parse_payment(body: &[u8]) -> anyhow::Result<GatewayPayment> {
    let payment: TossPayment = serde_json::from_slice(body).context("not a Toss Payment object")?;
    let currency = payment
        .currency
        .as_deref()
        .map_or(Ok(Currency::Krw), Currency::from_str)
        .context("currency")?;
    // The one amount parser: exact, and Money's rules (scale, maximum).
    let money = |value: &serde_json::Value| -> anyhow::Result<Money> {
        Ok(Money::from_json(value, currency)?)
    };
    Ok(GatewayPayment {
        payment_key: PaymentKey::parse(payment.payment_key)?,
        order_id: OrderId::parse(payment.order_id)?,
        status: status(&payment.status)?,
        total_amount: money(&payment.total_amount).context("totalAmount")?,
        balance_amount: money(&payment.balance_amount).context("balanceAmount")?,
        method: payment.method,
        approved_at: payment.approved_at.map(|at| at.with_timezone(&Utc)),
        last_transaction_key: payment.last_transaction_key,
        failure: payment.failure.map(|f| Failure {
            code: f.code,
            message: f.message,
        }),
        cancels: payment
            .cancels
            .unwrap_or_default()
            .iter()
            .map(|c| {
                Ok(GatewayCancel {
                    amount: money(&c.cancel_amount).context("cancelAmount")?,
                    transaction_key: c.transaction_key.clone(),
                })
            })
            .collect::<anyhow::Result<_>>()?,
    })
}

/// Toss's status vocabulary, explicitly; anything new is an error, not a guess.
fn status(value: &str) -> anyhow::Result<GatewayStatus> {
    Ok(match value {
        "READY" => GatewayStatus::Ready,
        "IN_PROGRESS" => GatewayStatus::InProgress,
        "WAITING_FOR_DEPOSIT" => GatewayStatus::WaitingForDeposit,
        "DONE" => GatewayStatus::Done,
        "PARTIAL_CANCELED" => GatewayStatus::PartialCanceled,
        "CANCELED" => GatewayStatus::Canceled,
        "ABORTED" => GatewayStatus::Aborted,
        "EXPIRED" => GatewayStatus::Expired,
        other => anyhow::bail!("unknown Toss payment status {other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;

    #[test]
    fn endpoints_keep_each_segment_whole_under_the_base_path() {
        let toss = TossGateway::new(&TossSettings {
            base_url: "http://127.0.0.1:9/toss/".to_owned(),
            secret_key: "k".to_owned().into(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        })
        .unwrap();
        let url = toss.endpoint(&["v1", "payments", r"a\b/c?d#e%f", "cancel"]);
        assert_eq!(url.path(), "/toss/v1/payments/a%5Cb%2Fc%3Fd%23e%25f/cancel");
        assert_eq!(url.query(), None);
        assert_eq!(url.fragment(), None);
        assert!(key_segment(&PaymentKey::parse("..").unwrap()).is_none());
        assert!(key_segment(&PaymentKey::parse("a..b").unwrap()).is_some());
    }

    #[test]
    fn toss_amounts_are_exact_numbers_in_the_currency_unit() {
        let won = Money::new(Decimal::new(15_000, 0), Currency::Krw).unwrap();
        assert_eq!(wire_amount(won).to_string(), "15000");
        assert!(wire_amount(won).is_u64());
        let yen = Money::new(Currency::Jpy.max_amount(), Currency::Jpy).unwrap();
        assert_eq!(wire_amount(yen).to_string(), "999999999999999");
        let dollars = Money::new(Decimal::new(1099, 2), Currency::Usd).unwrap();
        assert_eq!(wire_amount(dollars).to_string(), "10.99");
        let round = Money::new(Decimal::new(12, 0), Currency::Usd).unwrap();
        assert_eq!(wire_amount(round).to_string(), "12.00");
    }

    #[test]
    fn payment_amounts_are_read_exactly_and_checked() {
        let body = |amount: &str| {
            format!(
                r#"{{"paymentKey":"tgen_1","orderId":"order-0001","status":"DONE","currency":"USD",
                    "totalAmount":{amount},"balanceAmount":{amount}}}"#
            )
        };
        let payment = parse_payment(body("12345678901.23").as_bytes()).unwrap();
        assert_eq!(
            payment.total_amount.amount(),
            Decimal::new(1_234_567_890_123, 2)
        );
        assert!(parse_payment(body("10.999").as_bytes()).is_err());
        assert!(parse_payment(body("10000000000000").as_bytes()).is_err());
    }

    #[test]
    fn the_outcome_table() {
        let cases = [
            (400, Some("REJECT_CARD_PAYMENT"), Class::Declined),
            (403, Some("REJECT_CARD_PAYMENT"), Class::Declined),
            (400, Some("INVALID_REQUEST"), Class::Declined),
            (404, Some("NOT_FOUND_PAYMENT_SESSION"), Class::KeyRefused),
            (404, Some("NOT_FOUND_PAYMENT"), Class::KeyRefused),
            (401, Some("UNAUTHORIZED_KEY"), Class::Misconfigured),
            (401, None, Class::Misconfigured),
            (400, Some("INVALID_API_KEY"), Class::Misconfigured),
            (
                403,
                Some("INCORRECT_BASIC_AUTH_FORMAT"),
                Class::Misconfigured,
            ),
            (403, Some("FORBIDDEN_REQUEST"), Class::Declined),
            (400, Some("PROVIDER_ERROR"), Class::Unknown),
            (400, Some("ALREADY_PROCESSED_PAYMENT"), Class::Unknown),
            (409, Some("IDEMPOTENT_REQUEST_PROCESSING"), Class::Unknown),
            (
                500,
                Some("FAILED_INTERNAL_SYSTEM_PROCESSING"),
                Class::Unknown,
            ),
            (
                500,
                Some("FAILED_PAYMENT_INTERNAL_SYSTEM_PROCESSING"),
                Class::Unknown,
            ),
            (502, None, Class::Unknown),
            (400, None, Class::Unknown),
        ];
        for (status, code, expected) in cases {
            assert_eq!(
                classify(StatusCode::from_u16(status).unwrap(), code),
                expected,
                "{status} {code:?}"
            );
        }
    }
}

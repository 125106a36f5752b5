//! Errors as `application/problem+json` (RFC 9457) with a stable machine
//! `code`. Internals are logged where they happen and never returned.

use axum::extract::rejection::QueryRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use payment_application::integration::amount_json;
use payment_application::{
    AttemptError, CancelError, Classify, ConfirmError, NoticeError, StoreError,
};
use payment_domain::PaymentError;
use serde_json::{json, Map, Value};

/// One invalid input field and why.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

impl FieldError {
    /// Parses a required field: missing, or refused by `parse`, is an error
    /// naming the field.
    ///
    /// # Errors
    /// The [`FieldError`] to report.
    pub fn required<T, E: std::fmt::Display>(
        field: &'static str,
        value: Option<String>,
        parse: impl FnOnce(String) -> Result<T, E>,
    ) -> Result<T, Self> {
        let value = value.ok_or_else(|| Self {
            field,
            reason: "is required".into(),
        })?;
        parse(value).map_err(|e| Self {
            field,
            reason: e.to_string(),
        })
    }
}

/// The stable machine code of every problem the API answers with; each
/// has one HTTP status and one title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProblemCode {
    /// 400: a field is missing or malformed; `errors` names each.
    InvalidRequest,
    /// 400: a cancel was sent without an `Idempotency-Key`.
    IdempotencyKeyRequired,
    /// 400: the widget's amount is not the order's (tampering); Toss was not called.
    AmountMismatch,
    /// 400: Toss refused the payment key (or its session) and holds no payment
    /// with it for this order; the payment is READY again (`pgCode`).
    PaymentKeyNotVerified,
    /// 401: no bearer token, or one that does not verify (`WWW-Authenticate` says why).
    Unauthenticated,
    /// 402: Toss declined the payment; `pgCode` is Toss's code.
    PaymentDeclined,
    /// 402: Toss refused the cancel; `pgCode` is Toss's code.
    CancelDeclined,
    /// 403: the token lacks the scope the operation needs (`payments:admin`).
    InsufficientScope,
    /// 404: no such payment (or no payment for the order), or not the caller's.
    PaymentNotFound,
    /// 409: another confirm of the payment is running.
    PaymentInProgress,
    /// 409: the payment cannot be confirmed in its state (`status`).
    PaymentNotConfirmable,
    /// 409: the payment cannot be canceled in its state (`status`).
    PaymentNotCancelable,
    /// 409: the first request with this `Idempotency-Key` is still running.
    IdempotencyKeyInUse,
    /// 422: the cancel asks more than is left (`cancelableAmount`); Toss was not called.
    NotCancelableAmount,
    /// 422: this `Idempotency-Key` was used for another request body.
    IdempotencyKeyReused,
    /// 500: the request cannot succeed as sent and the cause is ours (a
    /// value the store refuses, an answer of Toss that contradicts ours);
    /// logged for an operator.
    InternalError,
    /// 503: a dependency failed or was contended; retry later.
    ServiceUnavailable,
}

impl ProblemCode {
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest
            | Self::IdempotencyKeyRequired
            | Self::AmountMismatch
            | Self::PaymentKeyNotVerified => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PaymentDeclined | Self::CancelDeclined => StatusCode::PAYMENT_REQUIRED,
            Self::InsufficientScope => StatusCode::FORBIDDEN,
            Self::PaymentNotFound => StatusCode::NOT_FOUND,
            Self::PaymentInProgress
            | Self::PaymentNotConfirmable
            | Self::PaymentNotCancelable
            | Self::IdempotencyKeyInUse => StatusCode::CONFLICT,
            Self::NotCancelableAmount | Self::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    #[must_use]
    pub const fn title(self) -> &'static str {
        match self {
            Self::InvalidRequest => "The request is invalid",
            Self::IdempotencyKeyRequired => "An Idempotency-Key header is required",
            Self::AmountMismatch => "The amount does not match the order",
            Self::PaymentKeyNotVerified => "The payment key is not this order's at Toss",
            Self::Unauthenticated => "A valid bearer token is required",
            Self::PaymentDeclined => "The payment was declined",
            Self::CancelDeclined => "The payment gateway refused the cancel",
            Self::InsufficientScope => "The token lacks the required scope",
            Self::PaymentNotFound => "No such payment",
            Self::PaymentInProgress => "The payment is being confirmed",
            Self::PaymentNotConfirmable => "The payment cannot be confirmed",
            Self::PaymentNotCancelable => "The payment cannot be canceled",
            Self::IdempotencyKeyInUse => "A request with this Idempotency-Key is still running",
            Self::NotCancelableAmount => "The amount is above what can still be canceled",
            Self::IdempotencyKeyReused => "This Idempotency-Key was used for another request",
            Self::InternalError => "The request could not be completed",
            Self::ServiceUnavailable => "The service cannot answer right now",
        }
    }

    /// The code as it appears in bodies, redirects and metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::IdempotencyKeyRequired => "IDEMPOTENCY_KEY_REQUIRED",
            Self::AmountMismatch => "AMOUNT_MISMATCH",
            Self::PaymentKeyNotVerified => "PAYMENT_KEY_NOT_VERIFIED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PaymentDeclined => "PAYMENT_DECLINED",
            Self::CancelDeclined => "CANCEL_DECLINED",
            Self::InsufficientScope => "INSUFFICIENT_SCOPE",
            Self::PaymentNotFound => "PAYMENT_NOT_FOUND",
            Self::PaymentInProgress => "PAYMENT_IN_PROGRESS",
            Self::PaymentNotConfirmable => "PAYMENT_NOT_CONFIRMABLE",
            Self::PaymentNotCancelable => "PAYMENT_NOT_CANCELABLE",
            Self::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            Self::NotCancelableAmount => "NOT_CANCELABLE_AMOUNT",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::InternalError => "INTERNAL_ERROR",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
        }
    }
}

/// The shape of every error body, for the OpenAPI document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ProblemDoc {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    /// The stable machine code.
    pub code: ProblemCode,
    pub detail: String,
    /// For `INVALID_REQUEST`: which fields, and why.
    pub errors: Option<Vec<FieldError>>,
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct Problem {
    code: ProblemCode,
    detail: String,
    extra: Map<String, Value>,
}

impl Problem {
    #[must_use]
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// Adds a member to the body (e.g. `paymentId`, `errors`).
    #[must_use]
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.extra.insert(key.to_owned(), json!(value));
        self
    }

    /// 400 `INVALID_REQUEST`, naming each bad field.
    #[must_use]
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.reason))
            .collect::<Vec<_>>()
            .join("; ");
        Self::new(ProblemCode::InvalidRequest, detail).with("errors", errors)
    }

    /// A failure of ours, answered by its classification and logged once
    /// here: 503 when a retry may help, 500 when it cannot.
    #[must_use]
    pub fn failed<E: Classify + std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        let permanent = error.is_permanent();
        let error = chain(&error);
        if permanent {
            tracing::error!(error, "request failed for good");
            Self::new(
                ProblemCode::InternalError,
                "The request cannot be completed; it was logged for an operator.",
            )
        } else {
            tracing::error!(error, "request failed; a retry may succeed");
            Self::new(ProblemCode::ServiceUnavailable, "Please retry later.")
        }
    }

    /// The problem document.
    #[must_use]
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            json!(format!(
                "https://payment-service/problems/{}",
                self.code.as_str().to_lowercase().replace('_', "-")
            )),
        );
        body.insert("title".into(), json!(self.code.title()));
        body.insert("status".into(), json!(self.status().as_u16()));
        body.insert("code".into(), json!(self.code));
        body.insert("detail".into(), json!(self.detail));
        body.extend(self.extra.clone());
        Value::Object(body)
    }

    #[must_use]
    pub const fn status(&self) -> StatusCode {
        self.code.status()
    }

    #[must_use]
    pub const fn code(&self) -> &'static str {
        self.code.as_str()
    }
}

/// An error and its causes, `: `-separated.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// The answers to each use case's errors: every status and code of the API
/// is decided here.
impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Self {
        Self::failed(error)
    }
}

impl From<ConfirmError> for Problem {
    fn from(error: ConfirmError) -> Self {
        match error {
            ConfirmError::NotFound(order_id) => Self::new(
                ProblemCode::PaymentNotFound,
                format!("order {order_id} has no payment"),
            ),
            ConfirmError::AmountMismatch { .. } => Self::new(
                ProblemCode::AmountMismatch,
                "the amount differs from the order's amount; the payment was not confirmed",
            ),
            ConfirmError::InProgress(payment) => Self::new(
                ProblemCode::PaymentInProgress,
                "another confirmation of this payment is running; ask again shortly",
            )
            .with("paymentId", payment.id()),
            ConfirmError::NotConfirmable(payment) => Self::new(
                ProblemCode::PaymentNotConfirmable,
                format!("the payment is {}", payment.status()),
            )
            .with("paymentId", payment.id())
            .with("paymentStatus", payment.status()),
            ConfirmError::KeyNotVerified { payment, failure } => Self::new(
                ProblemCode::PaymentKeyNotVerified,
                "Toss does not hold this payment key for this order; the payment was not confirmed and may be paid again",
            )
            .with("paymentId", payment.id())
            .with("paymentStatus", payment.status())
            .with("pgCode", failure.code),
            other @ (ConfirmError::GatewayUnavailable { .. }
            | ConfirmError::Contended(_)
            | ConfirmError::Store(_)) => Self::failed(other),
        }
    }
}

impl From<AttemptError> for Problem {
    fn from(error: AttemptError) -> Self {
        match error {
            AttemptError::NotFound(order_id) => Self::new(
                ProblemCode::PaymentNotFound,
                format!("order {order_id} has no payment"),
            ),
            other => Self::failed(other),
        }
    }
}

impl From<CancelError> for Problem {
    fn from(error: CancelError) -> Self {
        match error {
            CancelError::NotFound(payment_id) => Self::new(
                ProblemCode::PaymentNotFound,
                format!("payment {payment_id} does not exist"),
            ),
            CancelError::InvalidAmount(reason) => Self::invalid(vec![FieldError {
                field: "cancelAmount",
                reason,
            }]),
            CancelError::Refused { payment, reason } => match reason {
                PaymentError::NotCancelableAmount { requested, balance } => Self::new(
                    ProblemCode::NotCancelableAmount,
                    format!("{requested} requested, {balance} cancelable"),
                )
                .with("cancelableAmount", amount_json(balance)),
                PaymentError::ZeroAmount => Self::invalid(vec![FieldError {
                    field: "cancelAmount",
                    reason: "must be greater than zero (or nothing is left to cancel)".into(),
                }]),
                PaymentError::InvalidCancelReason => Self::invalid(vec![FieldError {
                    field: "cancelReason",
                    reason: reason.to_string(),
                }]),
                PaymentError::Money(money) => Self::invalid(vec![FieldError {
                    field: "cancelAmount",
                    reason: money.to_string(),
                }]),
                other => Self::new(ProblemCode::PaymentNotCancelable, other.to_string())
                    .with("paymentStatus", payment.status()),
            },
            CancelError::Declined { failure, .. } => {
                Self::new(ProblemCode::CancelDeclined, failure.message).with("pgCode", failure.code)
            }
            other @ (CancelError::Contradiction { .. }
            | CancelError::Contended(_)
            | CancelError::Store(_)) => Self::failed(other),
        }
    }
}

/// A query string that does not even parse (e.g. a parameter given twice).
impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid(vec![FieldError {
            field: "query",
            reason: rejection.body_text(),
        }])
    }
}

impl From<NoticeError> for Problem {
    fn from(error: NoticeError) -> Self {
        Self::failed(error)
    }
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    use super::*;

    const ALL: [ProblemCode; 17] = [
        ProblemCode::InvalidRequest,
        ProblemCode::IdempotencyKeyRequired,
        ProblemCode::AmountMismatch,
        ProblemCode::PaymentKeyNotVerified,
        ProblemCode::Unauthenticated,
        ProblemCode::PaymentDeclined,
        ProblemCode::CancelDeclined,
        ProblemCode::InsufficientScope,
        ProblemCode::PaymentNotFound,
        ProblemCode::PaymentInProgress,
        ProblemCode::PaymentNotConfirmable,
        ProblemCode::PaymentNotCancelable,
        ProblemCode::IdempotencyKeyInUse,
        ProblemCode::NotCancelableAmount,
        ProblemCode::IdempotencyKeyReused,
        ProblemCode::InternalError,
        ProblemCode::ServiceUnavailable,
    ];

    #[test]
    fn every_code_is_spelled_once_the_same_in_bodies_and_in_the_openapi_document() {
        let document = serde_json::to_value(crate::ApiDoc::openapi()).unwrap();
        let documented = &document["components"]["schemas"]["ProblemCode"]["enum"];
        let spelled: Vec<&str> = ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(*documented, json!(spelled));
        for code in ALL {
            let body = Problem::new(code, "x").body();
            assert_eq!(body["code"], code.as_str());
            assert_eq!(body["status"], code.status().as_u16());
            assert_eq!(body["title"], code.title());
        }
    }
}

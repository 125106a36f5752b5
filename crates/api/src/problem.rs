//! Errors as `application/problem+json` (RFC 9457) with a stable machine
//! `code`. Internals are logged where they happen and never returned.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Json;
use payment_application::integration::amount_json;
use payment_application::{
    AttemptError, CancelError, Classify, ConfirmError, NoticeError, StoreError,
};
use payment_domain::{Payment, PaymentError, PaymentId};
use serde_json::{json, Map, Value};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

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
/// has one HTTP status, one title and one meaning ([`ProblemCode::doc`],
/// which the OpenAPI document's error responses are written from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProblemCode {
    InvalidRequest,
    IdempotencyKeyRequired,
    AmountMismatch,
    PaymentKeyNotVerified,
    Unauthenticated,
    PaymentDeclined,
    CancelDeclined,
    InsufficientScope,
    PaymentNotFound,
    PaymentInProgress,
    PaymentNotConfirmable,
    PaymentNotCancelable,
    IdempotencyKeyInUse,
    NotCancelableAmount,
    IdempotencyKeyReused,
    InternalError,
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

    /// What the code means, for the OpenAPI document.
    #[must_use]
    pub const fn doc(self) -> &'static str {
        match self {
            Self::InvalidRequest => "a field is missing or malformed; `errors` names each",
            Self::IdempotencyKeyRequired => "no `Idempotency-Key` header (1-255 characters)",
            Self::AmountMismatch => {
                "the amount is not the order's (tampering); Toss was not called"
            }
            Self::PaymentKeyNotVerified => {
                "Toss refused the payment key (or its session) and holds no payment with it \
                 for this order; the payment is READY again (`pgCode`)"
            }
            Self::Unauthenticated => {
                "no bearer token, or one that does not verify (`WWW-Authenticate` says why)"
            }
            Self::PaymentDeclined => "Toss declined the payment; `pgCode` is Toss's code",
            Self::CancelDeclined => "Toss refused the cancel; `pgCode` is Toss's code",
            Self::InsufficientScope => "the token lacks the `payments:admin` scope",
            Self::PaymentNotFound => {
                "no such payment (or no payment for the order), or not the caller's"
            }
            Self::PaymentInProgress => "another confirm of the payment is running",
            Self::PaymentNotConfirmable => {
                "the payment cannot be confirmed in its state (`paymentStatus`)"
            }
            Self::PaymentNotCancelable => {
                "the payment cannot be canceled in its state (`paymentStatus`)"
            }
            Self::IdempotencyKeyInUse => {
                "the first request with this `Idempotency-Key` is still running"
            }
            Self::NotCancelableAmount => {
                "the cancel asks more than is left (`cancelableAmount`); Toss was not called"
            }
            Self::IdempotencyKeyReused => {
                "this `Idempotency-Key` was used for another request body"
            }
            Self::InternalError => {
                "the request cannot succeed as sent and the cause is ours (a value the store \
                 refuses, an answer of Toss that contradicts ours); logged for an operator"
            }
            Self::ServiceUnavailable => "a dependency failed or was contended; retry later",
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

/// The codes each source of problems answers with. An operation's error
/// responses are the union of the sets of what it runs ([`problems!`]); the
/// tests below hold each `From<…Error> for Problem` to its set.
pub(crate) mod sets {
    use super::ProblemCode::{self, *};

    /// [`super::Problem::failed`]: a failure of ours, permanent or not.
    pub(crate) const FAILED: &[ProblemCode] = &[InternalError, ServiceUnavailable];
    /// Any `/api/v1` route: the `authenticate` layer.
    pub(crate) const USER: &[ProblemCode] = &[Unauthenticated];
    /// A route that needs `payments:admin` (`auth::Admin`).
    pub(crate) const ADMIN: &[ProblemCode] = &[Unauthenticated, InsufficientScope];
    /// A request that does not parse ([`super::Problem::invalid`]).
    pub(crate) const INVALID: &[ProblemCode] = &[InvalidRequest];
    /// A payment id that names none the caller may see.
    pub(crate) const NOT_FOUND: &[ProblemCode] = &[PaymentNotFound];
    /// `From<StoreError>` and `From<NoticeError>`.
    pub(crate) const STORE: &[ProblemCode] = FAILED;
    /// `From<ConfirmError>`.
    pub(crate) const CONFIRM: &[ProblemCode] = &[
        PaymentNotFound,
        AmountMismatch,
        PaymentInProgress,
        PaymentNotConfirmable,
        PaymentKeyNotVerified,
        InternalError,
        ServiceUnavailable,
    ];
    /// A confirm Toss declined ([`super::Problem::declined`]).
    pub(crate) const DECLINED: &[ProblemCode] = &[PaymentDeclined];
    /// `From<AttemptError>`.
    pub(crate) const ATTEMPT: &[ProblemCode] =
        &[PaymentNotFound, InternalError, ServiceUnavailable];
    /// `From<CancelError>`.
    pub(crate) const CANCEL: &[ProblemCode] = &[
        PaymentNotFound,
        InvalidRequest,
        NotCancelableAmount,
        PaymentNotCancelable,
        CancelDeclined,
        InternalError,
        ServiceUnavailable,
    ];
    /// The `Idempotency-Key` guard of a cancel.
    pub(crate) const IDEMPOTENCY: &[ProblemCode] = &[
        IdempotencyKeyRequired,
        IdempotencyKeyInUse,
        IdempotencyKeyReused,
    ];
}

/// Declares `$name`, the error responses of one operation (named in its
/// `#[utoipa::path(responses(…, $name))]`): every code of the given
/// [`sets`], one response per status, written from [`ProblemCode`] alone.
macro_rules! problems {
    ($(#[$meta:meta])* $name:ident: $($set:ident),+ $(,)?) => {
        $(#[$meta])*
        #[derive(Debug)]
        pub(crate) struct $name;

        impl $name {
            pub(crate) const SETS: &'static [&'static [$crate::problem::ProblemCode]] =
                &[$($crate::problem::sets::$set),+];
        }

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::problem::responses(Self::SETS)
            }
        }
    };
}
pub(crate) use problems;

/// The description of a response answering `codes`: each with its meaning.
#[must_use]
pub fn describe(codes: &[ProblemCode]) -> String {
    codes
        .iter()
        .map(|code| format!("- `{}`: {}", code.as_str(), code.doc()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The error responses of an operation answering the codes of `sets`: one
/// per status, described by [`describe`], its body a problem whose `code`
/// is one of them; 401 and 403 with their `WWW-Authenticate` challenge.
pub(crate) fn responses(sets: &[&[ProblemCode]]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ProblemCode>> = BTreeMap::new();
    for &code in sets.iter().copied().flatten() {
        let codes = by_status.entry(code.status().as_u16()).or_default();
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let body = AllOfBuilder::new()
                .item(Ref::from_schema_name("ProblemDoc"))
                .item(
                    ObjectBuilder::new()
                        .property(
                            "code",
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .enum_values(Some(codes.iter().map(|code| code.as_str()))),
                        )
                        .required("code"),
                );
            let mut response = ResponseBuilder::new()
                .description(describe(&codes))
                .content(
                    "application/problem+json",
                    ContentBuilder::new().schema(Some(body)).build(),
                );
            let challenge = match status {
                401 => Some("The RFC 6750 `Bearer` challenge"),
                403 => Some(r#"`Bearer error="insufficient_scope"` and the scope needed"#),
                _ => None,
            };
            if let Some(description) = challenge {
                response = response.header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some(description))
                        .build(),
                );
            }
            (status.to_string(), response.build().into())
        })
        .collect()
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

    /// 404: no payment `id` the caller may see (another user's payment is
    /// answered as a missing one: no existence leak).
    #[must_use]
    pub fn payment_not_found(id: PaymentId) -> Self {
        Self::new(
            ProblemCode::PaymentNotFound,
            format!("payment {id} does not exist"),
        )
    }

    /// 402: Toss declined the confirm of `payment` (now ABORTED).
    #[must_use]
    pub fn declined(payment: &Payment) -> Self {
        let (code, message) = payment
            .failure()
            .map_or(("UNKNOWN", ""), |f| (f.code.as_str(), f.message.as_str()));
        Self::new(ProblemCode::PaymentDeclined, message)
            .with("paymentId", payment.id())
            .with("pgCode", code)
    }

    /// 400: a cancel without an `Idempotency-Key`.
    #[must_use]
    pub fn idempotency_key_required() -> Self {
        Self::new(
            ProblemCode::IdempotencyKeyRequired,
            "send a unique Idempotency-Key (1-255 characters) with every cancel",
        )
    }

    /// 409: the first request with this `Idempotency-Key` still runs.
    #[must_use]
    pub fn idempotency_key_in_use() -> Self {
        Self::new(
            ProblemCode::IdempotencyKeyInUse,
            "retry once it has finished to get its answer",
        )
    }

    /// 422: this `Idempotency-Key` came with another body.
    #[must_use]
    pub fn idempotency_key_reused() -> Self {
        Self::new(
            ProblemCode::IdempotencyKeyReused,
            "use a new Idempotency-Key for a different cancel",
        )
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
    fn into_response(self) -> HttpResponse {
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
            CancelError::NotFound(payment_id) => Self::payment_not_found(payment_id),
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

/// Every code, for the tests.
#[cfg(test)]
pub(crate) const ALL: [ProblemCode; 17] = [
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

#[cfg(test)]
mod tests {
    use payment_application::{
        CancelError, Contended, LookupFailed, NoticeError, SettleError, StoreError,
    };
    use payment_domain::{
        execute, parse_amount, Currency, Failure, Money, MoneyError, OrderId, PaymentCommand,
        PaymentStatus, UserId,
    };
    use utoipa::OpenApi as _;

    use super::*;

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

    fn money(text: &str) -> Money {
        Money::new(parse_amount(text).unwrap(), Currency::Krw).unwrap()
    }

    fn payment() -> Box<Payment> {
        let (payment, _) = execute(
            None,
            &PaymentCommand::Create {
                payment_id: PaymentId::new(),
                order_id: OrderId::parse("order-1").unwrap(),
                user_id: UserId::parse("user-1").unwrap(),
                amount: money("1000"),
                created_at: chrono::Utc::now(),
            },
        )
        .unwrap();
        Box::new(payment)
    }

    fn failure() -> Failure {
        Failure {
            code: "REJECT_CARD_PAYMENT".into(),
            message: "no".into(),
        }
    }

    fn contended() -> Contended {
        Contended {
            payment: "p".into(),
            attempts: 3,
        }
    }

    fn store() -> [StoreError; 2] {
        [
            StoreError::DuplicateOrder(OrderId::parse("order-1").unwrap()),
            StoreError::Conflict {
                payment_id: PaymentId::new(),
                expected_version: 1,
            },
        ]
    }

    /// Every problem of `answers` has a code of `set`.
    fn within(set: &[ProblemCode], answers: impl IntoIterator<Item = Problem>) {
        for problem in answers {
            assert!(
                set.contains(&problem.code),
                "{} is not in {set:?}",
                problem.code()
            );
        }
    }

    #[test]
    fn each_source_of_problems_answers_only_the_codes_of_its_set() {
        let order = || OrderId::parse("order-1").unwrap();
        within(
            sets::CONFIRM,
            [
                ConfirmError::NotFound(order()),
                ConfirmError::AmountMismatch {
                    expected: money("1000"),
                    claimed: parse_amount("999").unwrap(),
                },
                ConfirmError::InProgress(payment()),
                ConfirmError::NotConfirmable(payment()),
                ConfirmError::KeyNotVerified {
                    payment: payment(),
                    failure: failure(),
                },
                ConfirmError::GatewayUnavailable {
                    payment: payment(),
                    reason: "credentials".into(),
                },
                ConfirmError::Contended(contended()),
            ]
            .into_iter()
            .chain(store().map(ConfirmError::Store))
            .map(Problem::from),
        );
        within(
            sets::ATTEMPT,
            [
                AttemptError::NotFound(order()),
                AttemptError::Refused(PaymentError::ZeroAmount),
                AttemptError::Contended(contended()),
            ]
            .into_iter()
            .chain(store().map(AttemptError::Store))
            .map(Problem::from),
        );
        let refused = |reason| CancelError::Refused {
            payment: payment(),
            reason,
        };
        within(
            sets::CANCEL,
            [
                CancelError::NotFound(PaymentId::new()),
                CancelError::InvalidAmount("x".into()),
                refused(PaymentError::NotCancelableAmount {
                    requested: money("2000"),
                    balance: money("1000"),
                }),
                refused(PaymentError::ZeroAmount),
                refused(PaymentError::InvalidCancelReason),
                refused(PaymentError::Money(MoneyError::Overflow)),
                refused(PaymentError::InvalidTransition {
                    from: PaymentStatus::Ready,
                    action: "cancel",
                }),
                refused(PaymentError::NotFound),
                CancelError::Declined {
                    payment: payment(),
                    failure: failure(),
                },
                CancelError::Contradiction {
                    payment_id: PaymentId::new(),
                    reason: PaymentError::PaymentKeyMismatch,
                },
                CancelError::Contended(contended()),
            ]
            .into_iter()
            .chain(store().map(CancelError::Store))
            .map(Problem::from),
        );
        within(sets::STORE, store().map(Problem::from));
        within(
            sets::STORE,
            [
                NoticeError::Gateway(LookupFailed("down".into())),
                NoticeError::Settle(SettleError::NotFound(PaymentId::new())),
            ]
            .map(Problem::from),
        );
        within(sets::DECLINED, [Problem::declined(&payment())]);
        within(
            sets::NOT_FOUND,
            [Problem::payment_not_found(PaymentId::new())],
        );
        within(
            sets::IDEMPOTENCY,
            [
                Problem::idempotency_key_required(),
                Problem::idempotency_key_in_use(),
                Problem::idempotency_key_reused(),
            ],
        );
        within(sets::INVALID, [Problem::invalid(Vec::new())]);
    }
}

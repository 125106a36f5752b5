//! Errors as `application/problem+json` (RFC 9457) with a stable machine
//! `code`. Internals are logged where they happen and never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
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

/// The shape of every error body, for the OpenAPI document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ProblemDoc {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    /// The stable machine code (e.g. `AMOUNT_MISMATCH`, `PAYMENT_NOT_FOUND`).
    pub code: String,
    pub detail: String,
    /// For `INVALID_REQUEST`: which fields, and why.
    pub errors: Option<Vec<FieldError>>,
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    extra: Map<String, Value>,
}

impl Problem {
    #[must_use]
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title,
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
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "The request is invalid",
            detail,
        )
        .with("errors", errors)
    }

    /// 503: a dependency failed; the cause was logged by the caller.
    #[must_use]
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "The service cannot answer right now",
            "Please retry later.",
        )
    }

    /// The problem document.
    #[must_use]
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            json!(format!(
                "https://payment-service/problems/{}",
                self.code.to_lowercase().replace('_', "-")
            )),
        );
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("code".into(), json!(self.code));
        body.insert("detail".into(), json!(self.detail));
        body.extend(self.extra.clone());
        Value::Object(body)
    }

    #[must_use]
    pub const fn status(&self) -> StatusCode {
        self.status
    }

    #[must_use]
    pub const fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

//! `POST /webhooks/toss`: Toss's notice that a payment changed. The body
//! is unsigned: only the payment key is taken from it, and the payment is
//! re-fetched from Toss before anything changes (the `GatewayNotice` use
//! case).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use payment_application::{GatewayNotice, Noticed, PaymentGateway, PaymentRepository};
use payment_domain::PaymentKey;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Span;

use crate::problem::{problems, FieldError, Problem};

pub(crate) fn routes<R: PaymentRepository, G: PaymentGateway>(
    notice: GatewayNotice<R, G>,
) -> Router {
    Router::new()
        .route("/webhooks/toss", post(webhook::<R, G>))
        .with_state(Arc::new(notice))
}

/// Toss's webhook body; other members are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookBody {
    /// `PAYMENT_STATUS_CHANGED` needs `data.paymentKey`; any other type is
    /// acknowledged without action (`IGNORED`).
    event_type: String,
    /// Any JSON; for `PAYMENT_STATUS_CHANGED` an object whose `paymentKey`
    /// is 1-200 visible ASCII characters (only it is read, and `status`).
    #[serde(default)]
    #[schema(value_type = Value)]
    data: Value,
}

problems!(
    /// What the webhook may answer besides its acknowledgement.
    WebhookProblems: INVALID, STORE
);

/// Unknown payments are acknowledged; a failed lookup answers 503 so Toss
/// sends the notice again, as does an answer of Toss that contradicts ours
/// (500, left for an operator).
#[utoipa::path(
    post, path = "/webhooks/toss", tag = "widget", request_body = WebhookBody,
    responses(
        (status = 200, description = "Acknowledged: `status` is the outcome (DONE, ABORTED, UNCHANGED, UNKNOWN_PAYMENT, IGNORED)"),
        WebhookProblems,
    )
)]
#[tracing::instrument(name = "toss_webhook", skip_all, fields(event_type, payment_id))]
pub(crate) async fn webhook<R: PaymentRepository, G: PaymentGateway>(
    State(notice): State<Arc<GatewayNotice<R, G>>>,
    body: Result<Json<WebhookBody>, JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return Problem::invalid(vec![FieldError {
            field: "body",
            reason: "not a Toss webhook".into(),
        }])
        .into_response();
    };
    Span::current().record("event_type", body.event_type.as_str());
    // The key is the one thing taken from the unsigned body: a Toss key
    // (1-200 visible ASCII characters), which the Toss client puts into
    // the lookup URL as one percent-encoded path segment.
    let key = FieldError::required(
        "data.paymentKey",
        body.data
            .get("paymentKey")
            .and_then(Value::as_str)
            .map(str::to_owned),
        PaymentKey::parse,
    );
    let key = match (body.event_type.as_str(), key) {
        ("PAYMENT_STATUS_CHANGED", Ok(key)) => key,
        ("PAYMENT_STATUS_CHANGED", Err(error)) => {
            return Problem::invalid(vec![error]).into_response();
        }
        (other, _) => {
            tracing::info!(event_type = other, "webhook acknowledged without action");
            return Json(json!({ "status": "IGNORED" })).into_response();
        }
    };
    let notice_id = format!(
        "toss-webhook:{key}:{}",
        body.data
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("-")
    );
    match notice.handle(&key, &notice_id).await {
        Ok(Noticed::UnknownPayment) => {
            tracing::warn!(payment_key = %key, "webhook for a payment we do not know; acknowledged");
            Json(json!({ "status": "UNKNOWN_PAYMENT" })).into_response()
        }
        Ok(Noticed::NothingToDo(id)) => {
            Span::current().record("payment_id", id.to_string());
            Json(json!({ "status": "UNCHANGED", "paymentId": id })).into_response()
        }
        Ok(Noticed::Settled(id, status)) => {
            Span::current().record("payment_id", id.to_string());
            tracing::info!(payment_id = %id, %status, "payment settled by webhook");
            Json(json!({ "status": status.as_str(), "paymentId": id })).into_response()
        }
        Err(error) => Problem::from(error).into_response(),
    }
}

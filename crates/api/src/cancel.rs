//! `POST /api/v1/payments/{paymentId}/cancel` with an `Idempotency-Key`
//! (Stripe / IETF semantics): the same key and body replay the first answer
//! byte for byte; the same key with another body is 422; the same key while
//! the first request runs is 409. A request that failed for want of a
//! dependency (503) frees its key.

use std::str::FromStr as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use payment_application::{
    trace, Cancel, CancelPayment, Canceled, Causation, IdempotencyKeys, KeyClaim, PaymentGateway,
    PaymentRepository, Requester, Trigger,
};
use payment_domain::{amount_from_json, PaymentId};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::auth::Admin;
use crate::problem::{problems, FieldError, Problem};
use crate::view::PaymentView;

/// The cancel use case and the idempotency keys it is guarded by.
#[derive(Debug)]
pub struct CancelState<R, G, K> {
    pub cancel: CancelPayment<R, G>,
    pub keys: K,
}

type Shared<R, G, K> = Arc<CancelState<R, G, K>>;

pub(crate) fn routes<R: PaymentRepository, G: PaymentGateway, K: IdempotencyKeys>(
    state: CancelState<R, G, K>,
) -> Router {
    Router::new()
        .route(
            "/api/v1/payments/{payment_id}/cancel",
            post(cancel::<R, G, K>),
        )
        .with_state(Arc::new(state))
}

/// The cancel body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CancelBody {
    /// Why (1-200 characters, not only whitespace; Toss shows it to the customer).
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"[^\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]", example = "customer changed their mind")]
    cancel_reason: Option<String>,
    /// How much to give back; absent: everything still cancelable.
    #[schema(value_type = Option<crate::view::AmountInput>, example = 1000)]
    cancel_amount: Option<Value>,
}

problems!(
    /// What a cancel may answer besides the payment.
    CancelProblems: ADMIN, INVALID, IDEMPOTENCY, CANCEL, STORE
);

/// Cancels (part of) a payment. A `SERVICE_UNAVAILABLE` answer frees the
/// `Idempotency-Key`; every other answer is replayed for it.
#[utoipa::path(
    post, path = "/api/v1/payments/{payment_id}/cancel", tag = "payments", request_body = CancelBody, security(("bearer" = ["payments:admin"])),
    params(
        ("payment_id" = String, Path, format = Uuid, description = "The payment id (UUID)"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$", description = "1-255 visible ASCII characters; the same key and body replay the first answer"),
    ),
    responses(
        (status = 200, description = "Canceled: the payment after the refund", body = PaymentView),
        (status = 202, description = "The PG's answer is not known yet; settled by the reconciler", body = PaymentView),
        CancelProblems,
    )
)]
#[tracing::instrument(name = "cancel", skip_all, fields(payment_id = %raw_id))]
pub(crate) async fn cancel<R: PaymentRepository, G: PaymentGateway, K: IdempotencyKeys>(
    _: Admin,
    State(state): State<Shared<R, G, K>>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| (1..=255).contains(&k.len()))
    else {
        return Problem::idempotency_key_required().into_response();
    };
    if PaymentId::from_str(&raw_id).is_err() {
        // Names no payment, so it can change nothing: answered (400) without
        // claiming the key, and a path of any length never reaches the store.
        let (status, content) = run(&state.cancel, &raw_id, key, &headers, &body).await;
        return replay(status.as_u16(), content);
    }
    let scope = format!("cancel:{raw_id}");
    let fingerprint = format!("{:x}", Sha256::digest(&body));
    match state.keys.claim(&scope, key, &fingerprint).await {
        Ok(KeyClaim::Claimed) => {}
        Ok(KeyClaim::Replay { status, body }) => return replay(status, body),
        Ok(KeyClaim::InFlight) => return Problem::idempotency_key_in_use().into_response(),
        Ok(KeyClaim::Mismatch) => return Problem::idempotency_key_reused().into_response(),
        Err(error) => return Problem::from(error).into_response(),
    }

    let (status, content) = run(&state.cancel, &raw_id, key, &headers, &body).await;
    let recorded = if status == StatusCode::SERVICE_UNAVAILABLE {
        state.keys.release(&scope, key).await
    } else {
        state
            .keys
            .complete(&scope, key, status.as_u16(), &content)
            .await
    };
    if let Err(error) = recorded {
        tracing::error!(error = format!("{error:#}"), "idempotency key not recorded");
    }
    replay(status.as_u16(), content)
}

/// Runs the cancel and renders its answer (status and exact bytes).
async fn run<R: PaymentRepository, G: PaymentGateway>(
    cancel: &CancelPayment<R, G>,
    raw_id: &str,
    key: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, Vec<u8>) {
    let request = match parse(raw_id, key, headers, body) {
        Ok(request) => request,
        Err(problem) => return render_problem(problem),
    };
    match cancel.handle(request).await {
        // `Ended` is the order service's (a client's cancel of a READY
        // payment is refused): answered as what it is, the payment now.
        Ok(Canceled::Done(payment) | Canceled::Repeated(payment) | Canceled::Ended(payment)) => {
            (StatusCode::OK, json_bytes(&PaymentView::from(&payment)))
        }
        Ok(Canceled::Pending(payment) | Canceled::Waiting(payment)) => (
            StatusCode::ACCEPTED,
            json_bytes(&PaymentView::from(&payment)),
        ),
        Err(error) => render_problem(error.into()),
    }
}

fn parse(raw_id: &str, key: &str, headers: &HeaderMap, body: &[u8]) -> Result<Cancel, Problem> {
    let mut errors = Vec::new();
    let payment_id = PaymentId::from_str(raw_id)
        .map_err(|e| {
            errors.push(FieldError {
                field: "paymentId",
                reason: e.to_string(),
            })
        })
        .ok();
    let parsed: Option<CancelBody> = serde_json::from_slice(body)
        .map_err(|e| {
            errors.push(FieldError {
                field: "body",
                reason: e.to_string(),
            })
        })
        .ok();
    let (reason, amount) = match parsed {
        Some(CancelBody {
            cancel_reason,
            cancel_amount,
        }) => {
            let reason = cancel_reason.filter(|r| !r.trim().is_empty());
            if reason.is_none() {
                errors.push(FieldError {
                    field: "cancelReason",
                    reason: "is required".into(),
                });
            }
            let amount = match cancel_amount {
                None | Some(Value::Null) => Ok(None),
                Some(value) => amount_from_json(&value)
                    .map(Some)
                    .map_err(|e| e.to_string()),
            }
            .map_err(|reason| {
                errors.push(FieldError {
                    field: "cancelAmount",
                    reason,
                })
            })
            .ok()
            .flatten();
            (reason, amount)
        }
        None => (None, None),
    };
    match (payment_id, reason) {
        (Some(payment_id), Some(reason)) if errors.is_empty() => Ok(Cancel {
            payment_id,
            amount,
            reason,
            request_key: Some(key.to_owned()),
            trigger: Trigger::Untracked,
            causation: Causation {
                causation_id: headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                correlation_id: None,
                // Only a well-formed W3C traceparent is continued (and stored).
                traceparent: trace::traceparent(
                    headers.get("traceparent").and_then(|v| v.to_str().ok()),
                ),
            },
            requester: Requester::Client,
        }),
        _ => Err(Problem::invalid(errors)),
    }
}

fn render_problem(problem: Problem) -> (StatusCode, Vec<u8>) {
    let status = problem.status();
    (status, json_bytes(&problem.body()))
}

fn json_bytes(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Answers `status` with exactly `body` (JSON, or problem+json for errors).
fn replay(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

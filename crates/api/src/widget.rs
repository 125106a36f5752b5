//! The Toss widget's HTTP surface: the success and fail redirects and the
//! confirm API the front-end may call instead (Toss's webhook is in
//! `webhook.rs`). A redirect is an unauthenticated browser request: what it
//! carries is checked here against what the store can hold, and trusted
//! only once Toss confirms it.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use payment_application::{
    trace, Causation, Confirm, ConfirmError, ConfirmPayment, Confirmed, PaymentGateway,
    PaymentRepository, RecordFailedAttempt,
};
use payment_domain::{amount_from_json, Failure, OrderId, Payment, PaymentKey, UserId};
use serde::Deserialize;
use serde_json::Value;
use tracing::Span;

use crate::auth::Caller;
use crate::problem::{problems, FieldError, Problem};
use crate::view::PaymentView;

/// Where the browser goes after the widget flow; JSON is answered when unset
/// (or when the client asks for JSON).
#[derive(Debug, Clone, Default)]
pub struct WidgetRedirects {
    pub success_url: Option<String>,
    pub fail_url: Option<String>,
}

/// The use cases behind the widget routes.
#[derive(Debug)]
pub struct WidgetState<R, G> {
    pub confirm: ConfirmPayment<R, G>,
    pub failed_attempt: RecordFailedAttempt<R>,
    pub redirects: WidgetRedirects,
}

type Shared<R, G> = Arc<WidgetState<R, G>>;

pub(crate) fn routes<R: PaymentRepository, G: PaymentGateway>(state: Shared<R, G>) -> Router {
    Router::new()
        .route("/api/v1/payments/confirm", post(confirm_api::<R, G>))
        .route("/payments/toss/success", get(success_redirect::<R, G>))
        .route("/payments/toss/fail", get(fail_redirect::<R, G>))
        .with_state(state)
}

/// The widget's three parameters (a JSON body for the confirm API, the
/// query of the success redirect). All three are required; each missing or
/// malformed one is named in the 400 answer.
#[derive(Debug, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct ConfirmParams {
    /// Toss's payment key from the widget: 1-200 visible ASCII characters.
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"^[!-~]+$", example = "tgen_20261122abcdef")]
    #[param(value_type = String, min_length = 1, max_length = 200, pattern = r"^[!-~]+$")]
    payment_key: Option<String>,
    /// 6-64 of `[A-Za-z0-9_-]`.
    #[schema(value_type = String, min_length = 6, max_length = 64, pattern = r"^[A-Za-z0-9_-]{6,64}$", example = "order-0001")]
    #[param(value_type = String, min_length = 6, max_length = 64, pattern = r"^[A-Za-z0-9_-]{6,64}$")]
    order_id: Option<String>,
    /// Must equal the order's amount, or the confirm is refused (`AMOUNT_MISMATCH`).
    #[schema(value_type = crate::view::AmountInput, example = 15000)]
    #[param(value_type = crate::view::AmountInput)]
    amount: Option<Value>,
}

/// Parses the three widget parameters, naming every bad one.
fn parse_confirm(params: ConfirmParams, causation: Causation) -> Result<Confirm, Problem> {
    let mut errors = Vec::new();
    let payment_key = FieldError::required("paymentKey", params.payment_key, PaymentKey::parse)
        .map_err(|e| errors.push(e))
        .ok();
    let order_id = FieldError::required("orderId", params.order_id, OrderId::parse)
        .map_err(|e| errors.push(e))
        .ok();
    let amount = match params.amount {
        None => Err("is required".to_owned()),
        Some(value) => amount_from_json(&value).map_err(|e| e.to_string()),
    }
    .and_then(|a| {
        if a.is_sign_negative() {
            Err("must not be negative".into())
        } else {
            Ok(a)
        }
    })
    .map_err(|reason| {
        errors.push(FieldError {
            field: "amount",
            reason,
        })
    })
    .ok();
    match (payment_key, order_id, amount) {
        (Some(payment_key), Some(order_id), Some(amount)) if errors.is_empty() => Ok(Confirm {
            payment_key,
            order_id,
            amount,
            causation,
        }),
        _ => Err(Problem::invalid(errors)),
    }
}

fn causation(headers: &HeaderMap) -> Causation {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Causation {
        causation_id: text("x-request-id"),
        correlation_id: text("x-correlation-id"),
        traceparent: trace::traceparent(text("traceparent").as_deref()),
    }
}

/// The outcome of a confirm as HTTP (JSON flavour).
enum ConfirmAnswer {
    Done(Payment),
    Processing(Payment),
    Failed(Problem),
}

impl ConfirmAnswer {
    fn into_json(self) -> Response {
        match self {
            Self::Done(payment) => {
                (StatusCode::OK, Json(PaymentView::from(&payment))).into_response()
            }
            Self::Processing(payment) => {
                (StatusCode::ACCEPTED, Json(PaymentView::from(&payment))).into_response()
            }
            Self::Failed(problem) => problem.into_response(),
        }
    }
}

/// Confirms for `owner`: `None` confirms any payment (an admin, or the
/// widget redirect, which Toss's answer alone is trusted for).
async fn run_confirm<R: PaymentRepository, G: PaymentGateway>(
    state: &WidgetState<R, G>,
    request: Confirm,
    owner: Option<&UserId>,
) -> ConfirmAnswer {
    let span = Span::current();
    span.record("order_id", request.order_id.as_str());
    let order_id = request.order_id.clone();
    let answer = match state.confirm.handle_for(request, owner).await {
        Ok(Confirmed::Done(payment)) => ConfirmAnswer::Done(payment),
        Ok(Confirmed::Processing(payment)) => ConfirmAnswer::Processing(payment),
        Ok(Confirmed::Aborted(payment)) => ConfirmAnswer::Failed(Problem::declined(&payment)),
        Err(error) => {
            if let ConfirmError::AmountMismatch { expected, claimed } = &error {
                metrics::counter!("payment_amount_tampering_total").increment(1);
                tracing::warn!(%order_id, %expected, %claimed, "confirm refused: amount does not match the order (tampering?)");
            }
            ConfirmAnswer::Failed(error.into())
        }
    };
    let outcome = match &answer {
        ConfirmAnswer::Done(_) => "done",
        ConfirmAnswer::Processing(_) => "processing",
        ConfirmAnswer::Failed(problem) => problem.code(),
    };
    metrics::counter!("payment_confirmations_total", "outcome" => outcome).increment(1);
    answer
}

problems!(
    /// What a confirm may answer besides the payment.
    ConfirmApiProblems: USER, INVALID, CONFIRM, DECLINED
);

/// `POST /api/v1/payments/confirm {paymentKey, orderId, amount}`. When Toss
/// refuses our own credentials the answer is `SERVICE_UNAVAILABLE` and the
/// payment is READY again.
#[utoipa::path(
    post, path = "/api/v1/payments/confirm", tag = "widget", request_body = ConfirmParams, security(("bearer" = [])),
    responses(
        (status = 200, description = "Approved (now, or before: a repeated confirm)", body = PaymentView),
        (status = 202, description = "Outcome not known yet: IN_PROGRESS, settled by the reconciler", body = PaymentView),
        ConfirmApiProblems,
    )
)]
#[tracing::instrument(name = "confirm", skip_all, fields(order_id))]
async fn confirm_api<R: PaymentRepository, G: PaymentGateway>(
    caller: Caller,
    State(state): State<Shared<R, G>>,
    headers: HeaderMap,
    body: Result<Json<ConfirmParams>, JsonRejection>,
) -> Response {
    let params = match body {
        Ok(Json(params)) => params,
        Err(rejection) => {
            return Problem::invalid(vec![FieldError {
                field: "body",
                reason: rejection.body_text(),
            }])
            .into_response()
        }
    };
    match parse_confirm(params, causation(&headers)) {
        Ok(request) => run_confirm(&state, request, caller.owner())
            .await
            .into_json(),
        Err(problem) => problem.into_response(),
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"))
}

fn redirect(base: &str, pairs: &[(&str, &str)]) -> Response {
    let query = serde_urlencoded::to_string(pairs).unwrap_or_default();
    let separator = if base.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{base}{separator}{query}")).into_response()
}

problems!(
    /// What the success redirect may answer (as JSON) besides the payment.
    SuccessProblems: INVALID, CONFIRM, DECLINED
);

/// `GET /payments/toss/success?paymentKey&orderId&amount`: the widget's
/// success redirect. Confirms, then sends the browser on.
#[utoipa::path(
    get, path = "/payments/toss/success", tag = "widget", params(ConfirmParams),
    responses(
        (status = 200, description = "JSON answer (no redirect configured, or `Accept: application/json`)", body = PaymentView),
        (status = 202, description = "Processing", body = PaymentView),
        (status = 303, description = "Redirect to the configured success/fail page"),
        SuccessProblems,
    )
)]
#[tracing::instrument(name = "widget_success", skip_all, fields(order_id))]
async fn success_redirect<R: PaymentRepository, G: PaymentGateway>(
    State(state): State<Shared<R, G>>,
    headers: HeaderMap,
    params: Result<Query<ConfirmParams>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => return Problem::from(rejection).into_response(),
    };
    let request = match parse_confirm(params, causation(&headers)) {
        Ok(request) => request,
        Err(problem) => return problem.into_response(),
    };
    let order_id = request.order_id.to_string();
    let answer = run_confirm(&state, request, None).await;
    let redirects = &state.redirects;
    match (&answer, &redirects.success_url, &redirects.fail_url) {
        (_, _, _) if wants_json(&headers) => answer.into_json(),
        (ConfirmAnswer::Done(p) | ConfirmAnswer::Processing(p), Some(url), _) => redirect(
            url,
            &[
                ("orderId", &order_id),
                ("paymentId", &p.id().to_string()),
                ("status", p.status().as_str()),
            ],
        ),
        (ConfirmAnswer::Failed(problem), _, Some(url)) => {
            redirect(url, &[("orderId", &order_id), ("code", problem.code())])
        }
        _ => answer.into_json(),
    }
}

/// The longest failure code and message the store keeps (the
/// `failure_code` and `failure_message` columns, in characters).
const FAILURE_CODE_MAX: usize = 100;
const FAILURE_MESSAGE_MAX: usize = 1000;

/// The widget's fail redirect query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct FailParams {
    /// Toss's error code (e.g. `PAY_PROCESS_CANCELED`); at most 100 characters.
    #[param(max_length = 100)]
    code: Option<String>,
    /// At most 1000 characters.
    #[param(max_length = 1000)]
    message: Option<String>,
    /// Required: 6-64 of `[A-Za-z0-9_-]`.
    #[param(value_type = String, min_length = 6, max_length = 64, pattern = r"^[A-Za-z0-9_-]{6,64}$")]
    order_id: Option<String>,
}

/// At most `max` characters, or the field's error.
fn bounded(field: &'static str, value: String, max: usize) -> Result<String, FieldError> {
    if value.chars().count() <= max {
        Ok(value)
    } else {
        Err(FieldError {
            field,
            reason: format!("must be at most {max} characters"),
        })
    }
}

/// Parses the fail redirect's query, naming every bad field.
fn parse_fail(params: FailParams) -> Result<(OrderId, Failure), Problem> {
    let mut errors = Vec::new();
    let order_id = FieldError::required("orderId", params.order_id, OrderId::parse)
        .map_err(|e| errors.push(e))
        .ok();
    let code = bounded(
        "code",
        params.code.unwrap_or_else(|| "USER_CANCEL".into()),
        FAILURE_CODE_MAX,
    )
    .map_err(|e| errors.push(e))
    .ok();
    let message = bounded(
        "message",
        params.message.unwrap_or_default(),
        FAILURE_MESSAGE_MAX,
    )
    .map_err(|e| errors.push(e))
    .ok();
    match (order_id, code, message) {
        (Some(order_id), Some(code), Some(message)) => Ok((order_id, Failure { code, message })),
        _ => Err(Problem::invalid(errors)),
    }
}

problems!(
    /// What the fail redirect may answer besides the payment.
    FailProblems: INVALID, ATTEMPT
);

/// `GET /payments/toss/fail?code&message&orderId`: the widget's fail
/// redirect. The attempt's failure is recorded on a READY payment, which
/// stays open for a retry until it expires; any other payment is unchanged.
#[utoipa::path(
    get, path = "/payments/toss/fail", tag = "widget", params(FailParams),
    responses(
        (status = 200, description = "The payment: READY with the failure recorded, or unchanged if it was no longer READY", body = PaymentView),
        (status = 303, description = "Redirect to the configured fail page"),
        FailProblems,
    )
)]
#[tracing::instrument(name = "widget_fail", skip_all, fields(order_id))]
async fn fail_redirect<R: PaymentRepository, G: PaymentGateway>(
    State(state): State<Shared<R, G>>,
    headers: HeaderMap,
    params: Result<Query<FailParams>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => return Problem::from(rejection).into_response(),
    };
    let (order_id, failure) = match parse_fail(params) {
        Ok(parsed) => parsed,
        Err(problem) => return problem.into_response(),
    };
    Span::current().record("order_id", order_id.as_str());
    let code = failure.code.clone();
    match state.failed_attempt.handle(&order_id, failure).await {
        Ok(payment) => match &state.redirects.fail_url {
            Some(url) if !wants_json(&headers) => {
                redirect(url, &[("orderId", order_id.as_str()), ("code", &code)])
            }
            _ => Json(PaymentView::from(&payment)).into_response(),
        },
        Err(error) => Problem::from(error).into_response(),
    }
}

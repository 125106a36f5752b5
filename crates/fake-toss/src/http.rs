//! The HTTP side: the Toss routes and the test-control routes, the request
//! observer, and [`Reply`], an answer as status and exact body bytes (what
//! the idempotency store keeps and replays).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::rules::{idempotency_key, Op};
use crate::state::Shared;
use crate::{RequestRecord, Scenario};

/// An answer: status and exact body bytes (always JSON).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Self {
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

    pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Self {
        let body = serde_json::json!({ "code": code, "message": message });
        Self {
            status,
            body: Bytes::from(body.to_string()),
        }
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
        Ok(Scenario::Decline { status, .. } | Scenario::ProcessThenError { status, .. })
            if !(400..=599).contains(&status) =>
        {
            Reply::invalid_request("an error's status must be 400-599")
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
    shared.dashboard_cancel(&payment_key, &body)
}

async fn not_found() -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "존재하지 않는 정보 입니다.",
    )
}

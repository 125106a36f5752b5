//! Liveness, readiness and Prometheus metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::ApiState;

/// A probe that has not answered in this time counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/health/live", tag = "ops", responses((status = 200, description = "Alive")))]
pub(crate) async fn live() -> Json<Value> {
    Json(json!({ "status": "UP" }))
}

/// Every dependency answers: 200, or 503 naming the parts that do not.
#[utoipa::path(get, path = "/health/ready", tag = "ops", responses(
    (status = 200, description = "Database, broker and consumers are usable"),
    (status = 503, description = "Not ready: `down` names the failing parts, `checks` says why"),
))]
pub(crate) async fn ready(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let results = futures::future::join_all(state.probes.iter().map(|probe| async move {
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, probe.check())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")));
        (probe.name(), outcome)
    }))
    .await;
    let mut checks = Map::new();
    let mut down = Vec::new();
    for (name, outcome) in results {
        let check = match outcome {
            Ok(()) => json!({ "status": "UP" }),
            Err(error) => {
                tracing::warn!(dependency = name, %error, "readiness check failed");
                down.push(name);
                json!({ "status": "DOWN", "error": error })
            }
        };
        checks.insert(name.to_owned(), check);
    }
    if down.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "UP", "checks": checks })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "DOWN", "down": down, "checks": checks })),
        )
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Metrics", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

//! The HTTP face of the payment service (axum): routes, request tracing and
//! the operational endpoints. Handlers translate HTTP to use cases and back;
//! they hold no business rule and no SQL.

mod cancel;
mod health;
mod observability;
mod openapi;
mod problem;
mod queries;
mod view;
mod webhook;
mod widget;

pub use cancel::CancelState;
pub use openapi::ApiDoc;

pub use problem::{FieldError, Problem, ProblemCode};
pub use view::PaymentView;
pub use widget::{WidgetRedirects, WidgetState};

use std::sync::Arc;

use axum::http::HeaderName;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use payment_application::{
    GatewayNotice, HealthProbe, IdempotencyKeys, PaymentGateway, PaymentQueries, PaymentRepository,
};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Everything `/health/ready` checks.
    pub probes: Arc<[Arc<dyn HealthProbe>]>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.probes.iter().map(|p| p.name()).collect();
        f.debug_struct("ApiState")
            .field("probes", &names)
            .finish_non_exhaustive()
    }
}

/// The whole HTTP surface.
pub fn router<R, Q, G, K>(
    ops: ApiState,
    queries: Q,
    widget: WidgetState<R, G>,
    cancel: CancelState<R, G, K>,
    notice: GatewayNotice<R, G>,
) -> Router
where
    R: PaymentRepository,
    Q: PaymentQueries + Clone,
    G: PaymentGateway,
    K: IdempotencyKeys,
{
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(health::routes().with_state(ops))
        .merge(widget::routes(Arc::new(widget)))
        .merge(queries::routes(queries))
        .merge(cancel::routes(cancel))
        .merge(webhook::routes(notice))
        .merge(openapi::routes())
        .layer(axum::middleware::from_fn(observability::track_requests))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(
            |request: &axum::http::Request<axum::body::Body>| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!(
                    "http",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id,
                )
            },
        ))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

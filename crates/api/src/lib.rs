//! The HTTP face of the payment service (axum): routes, request tracing,
//! authentication of `/api/v1/**` and the operational endpoints (on the
//! public router, or on a router of their own for a separate address).
//! Handlers translate HTTP to use cases and back; they hold no business rule
//! and no SQL.

mod auth;
mod cancel;
mod health;
mod observability;
mod openapi;
mod problem;
mod queries;
mod view;
mod webhook;
mod widget;

pub use auth::{hs256_token, AuthSettings, AuthSetupError, Authenticator, Claims, ADMIN_SCOPE};
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

/// The public HTTP surface: the API (`/api/v1/**` behind `auth`), the
/// widget redirects, the Toss webhook and the document; with `ops`, also
/// health and metrics (else serve [`ops_router`] elsewhere).
pub fn router<R, Q, G, K>(
    ops: Option<ApiState>,
    auth: Authenticator,
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
    let mut public = Router::new()
        .merge(widget::routes(Arc::new(widget)))
        .merge(queries::routes(queries))
        .merge(cancel::routes(cancel))
        .merge(webhook::routes(notice))
        .merge(openapi::routes())
        // Explicit, so that the layer below covers unrouted paths too: any
        // path under /api/v1 needs a token, routed or not.
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::authenticate,
        ));
    if let Some(ops) = ops {
        public = public.merge(health::routes().with_state(ops));
    }
    traced(public)
}

/// Health and metrics alone, for `http.ops_addr`.
pub fn ops_router(ops: ApiState) -> Router {
    traced(health::routes().with_state(ops))
}

/// Request metrics, request ids and a tracing span per request.
fn traced(router: Router) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    router
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

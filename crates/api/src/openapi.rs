//! The OpenAPI document, generated from the handlers' annotations, served
//! as JSON at `/openapi.json` with an interactive page at `/docs`.

use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;
use utoipa_scalar::{Scalar, Servable as _};

use crate::{cancel, health, problem, queries, view, widget};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "payment-service", description = "Payments through Toss, events through Kafka. Every error is `application/problem+json` with a stable `code`."),
    paths(
        widget::confirm_api,
        widget::success_redirect,
        widget::fail_redirect,
        widget::webhook,
        cancel::cancel,
        queries::payment,
        queries::by_order,
        queries::events,
        queries::transactions,
        health::live,
        health::ready,
        health::metrics,
    ),
    components(schemas(
        view::PaymentView,
        view::FailureView,
        problem::ProblemDoc,
        problem::FieldError,
        queries::EventView,
        queries::TransactionView,
        widget::ConfirmParams,
        cancel::CancelBody,
    )),
    tags(
        (name = "widget", description = "The Toss widget flow: redirects, confirm, webhook"),
        (name = "payments", description = "Reading payments and their audit trail"),
        (name = "ops", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

pub(crate) fn routes() -> Router {
    let document = ApiDoc::openapi();
    let json = document.clone();
    Router::new()
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(json) }),
        )
        .merge(Scalar::with_url("/docs", document))
}

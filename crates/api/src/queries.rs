//! Read APIs: a payment, an order's payment, its audit trail (the event
//! stream) and its gateway transactions. Reads come from the event store,
//! so they show exactly what was decided.

use std::str::FromStr as _;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use payment_application::integration::amount_json;
use payment_application::PaymentQueries;
use payment_domain::{OrderId, PaymentId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Admin, Caller};
use crate::problem::{problems, FieldError, Problem};
use crate::view::PaymentView;

pub(crate) fn routes<R: PaymentQueries + Clone>(repository: R) -> Router {
    Router::new()
        .route("/api/v1/payments", get(by_order::<R>))
        .route("/api/v1/payments/{payment_id}", get(payment::<R>))
        .route("/api/v1/payments/{payment_id}/events", get(events::<R>))
        .route(
            "/api/v1/payments/{payment_id}/transactions",
            get(transactions::<R>),
        )
        .with_state(repository)
}

fn parse_id(raw: &str) -> Result<PaymentId, Problem> {
    PaymentId::from_str(raw).map_err(|e| {
        Problem::invalid(vec![FieldError {
            field: "paymentId",
            reason: e.to_string(),
        }])
    })
}

problems!(
    /// What a read of one payment may answer besides it.
    PaymentProblems: USER, INVALID, NOT_FOUND, STORE
);

problems!(
    /// What a read of an order's payments may answer besides them.
    ByOrderProblems: USER, INVALID, STORE
);

problems!(
    /// What a read of a payment's audit trail may answer besides it.
    AuditProblems: ADMIN, INVALID, NOT_FOUND, STORE
);

/// A payment's current state.
#[utoipa::path(
    get, path = "/api/v1/payments/{payment_id}", tag = "payments", security(("bearer" = [])),
    params(("payment_id" = String, Path, format = Uuid, description = "The payment id (UUID)")),
    responses(
        (status = 200, description = "The payment", body = PaymentView),
        PaymentProblems,
    )
)]
pub(crate) async fn payment<R: PaymentQueries>(
    caller: Caller,
    State(repository): State<R>,
    Path(raw): Path<String>,
) -> Response {
    let id = match parse_id(&raw) {
        Ok(id) => id,
        Err(problem) => return problem.into_response(),
    };
    match repository.payment(id).await {
        Ok(Some(payment)) if caller.may_see(payment.user_id()) => {
            Json(PaymentView::from(&payment)).into_response()
        }
        // Another user's payment is answered as a missing one: no existence leak.
        Ok(_) => Problem::payment_not_found(id).into_response(),
        Err(error) => Problem::from(error).into_response(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct ByOrder {
    /// The shop's order id: 6-64 of `[A-Za-z0-9_-]`.
    #[param(value_type = String, pattern = r"^[A-Za-z0-9_-]{6,64}$", min_length = 6, max_length = 64)]
    order_id: Option<String>,
}

/// The payments of an order (at most one: an order has one payment); a
/// caller without `payments:admin` sees only their own.
#[utoipa::path(
    get, path = "/api/v1/payments", tag = "payments", params(ByOrder), security(("bearer" = [])),
    responses(
        (status = 200, description = "The order's payments (empty when none)", body = [PaymentView]),
        ByOrderProblems,
    )
)]
pub(crate) async fn by_order<R: PaymentQueries>(
    caller: Caller,
    State(repository): State<R>,
    query: Result<Query<ByOrder>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return Problem::from(rejection).into_response(),
    };
    let order_id = match FieldError::required("orderId", query.order_id, OrderId::parse) {
        Ok(order_id) => order_id,
        Err(error) => return Problem::invalid(vec![error]).into_response(),
    };
    match repository.find_by_order(&order_id).await {
        Ok(found) => Json(
            found
                .iter()
                .filter(|payment| caller.may_see(payment.user_id()))
                .map(PaymentView::from)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(error) => Problem::from(error).into_response(),
    }
}

/// One entry of a payment's audit trail.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    version: u64,
    event_type: &'static str,
    occurred_at: String,
    /// The event's own fields.
    #[schema(value_type = Object)]
    data: Value,
}

/// A payment's audit trail: every event, oldest first.
#[utoipa::path(
    get, path = "/api/v1/payments/{payment_id}/events", tag = "payments", security(("bearer" = ["payments:admin"])),
    params(("payment_id" = String, Path, format = Uuid, description = "The payment id (UUID)")),
    responses(
        (status = 200, description = "The events", body = [EventView]),
        AuditProblems,
    )
)]
pub(crate) async fn events<R: PaymentQueries>(
    _: Admin,
    State(repository): State<R>,
    Path(raw): Path<String>,
) -> Response {
    let id = match parse_id(&raw) {
        Ok(id) => id,
        Err(problem) => return problem.into_response(),
    };
    match repository.events(id).await {
        Ok(trail) if trail.is_empty() => Problem::payment_not_found(id).into_response(),
        Ok(trail) => {
            let views: Vec<EventView> = trail
                .into_iter()
                .map(|recorded| {
                    let mut value = serde_json::to_value(&recorded.event).unwrap_or_default();
                    EventView {
                        version: recorded.version,
                        event_type: recorded.event.event_type(),
                        occurred_at: recorded.occurred_at.to_rfc3339(),
                        data: value.get_mut("data").map(Value::take).unwrap_or_default(),
                    }
                })
                .collect();
            Json(views).into_response()
        }
        Err(error) => Problem::from(error).into_response(),
    }
}

/// One interaction with the payment gateway.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionView {
    transaction_id: String,
    kind: &'static str,
    #[schema(value_type = crate::view::Amount)]
    amount: Value,
    currency: &'static str,
    status: &'static str,
    transaction_key: Option<String>,
    failure_code: Option<String>,
    requested_at: String,
    completed_at: Option<String>,
}

/// A payment's gateway transactions (approvals and cancels), oldest first.
#[utoipa::path(
    get, path = "/api/v1/payments/{payment_id}/transactions", tag = "payments", security(("bearer" = ["payments:admin"])),
    params(("payment_id" = String, Path, format = Uuid, description = "The payment id (UUID)")),
    responses(
        (status = 200, description = "The transactions", body = [TransactionView]),
        AuditProblems,
    )
)]
pub(crate) async fn transactions<R: PaymentQueries>(
    _: Admin,
    State(repository): State<R>,
    Path(raw): Path<String>,
) -> Response {
    let id = match parse_id(&raw) {
        Ok(id) => id,
        Err(problem) => return problem.into_response(),
    };
    match repository.payment(id).await {
        Ok(Some(_)) => {}
        Ok(None) => return Problem::payment_not_found(id).into_response(),
        Err(error) => return Problem::from(error).into_response(),
    }
    match repository.transactions(id).await {
        Ok(found) => Json(
            found
                .iter()
                .map(|t| TransactionView {
                    transaction_id: t.id().to_string(),
                    kind: t.kind().as_str(),
                    amount: amount_json(t.amount()),
                    currency: t.amount().currency().code(),
                    status: t.status().as_str(),
                    transaction_key: t.transaction_key().map(str::to_owned),
                    failure_code: t.failure_code().map(str::to_owned),
                    requested_at: t.requested_at().to_rfc3339(),
                    completed_at: t.completed_at().map(|at| at.to_rfc3339()),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(error) => Problem::from(error).into_response(),
    }
}

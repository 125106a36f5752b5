//! The OpenAPI document, generated from the handlers' annotations, served
//! as JSON at `/openapi.json` with an interactive page at `/docs`. It is
//! meant to be exact: every constraint the server enforces is declared (and
//! proven by `scripts/api-fuzz.sh`). Unknown body fields and query
//! parameters are accepted and ignored, everywhere. `/api/v1/**` declares
//! the `bearer` scheme; the scope an operation needs is its security
//! requirement's list (`payments:admin`, or none: any authenticated user,
//! limited to their own payments). Response links ([`LINKS`]) say how one
//! answer leads to the next operation, for clients and stateful fuzzers.

use axum::routing::get;
use axum::Router;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};
use utoipa_scalar::{Scalar, Servable as _};

use crate::{cancel, health, problem, queries, view, webhook, widget};

#[derive(Debug, OpenApi)]
#[openapi(
    modifiers(&BearerScheme, &Links),
    info(title = "payment-service", description = "Payments through Toss, events through Kafka. Every error is `application/problem+json` with a stable `code`."),
    paths(
        widget::confirm_api,
        widget::success_redirect,
        widget::fail_redirect,
        webhook::webhook,
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
        view::PendingCancelView,
        view::Amount,
        view::AmountInput,
        problem::ProblemDoc,
        problem::FieldError,
        queries::EventView,
        queries::TransactionView,
        widget::ConfirmParams,
        cancel::CancelBody,
        webhook::WebhookBody,
    )),
    tags(
        (name = "widget", description = "The Toss widget flow: redirects, confirm, webhook"),
        (name = "payments", description = "Reading payments and their audit trail"),
        (name = "ops", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme the `/api/v1` operations name.
#[derive(Debug)]
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT signed with the service's key (HS256 secret, or RS256/ES256). `sub` is the \
                         user; the `scope` claim (space-separated) may hold `payments:admin`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// A response's `paymentId`; the first one of a list's; the request's.
const PAYMENT_ID: &str = "$response.body#/paymentId";
const FIRST_PAYMENT_ID: &str = "$response.body#/0/paymentId";
const REQUESTED_PAYMENT_ID: &str = "$request.path.payment_id";

/// The document's links: how a client, or a stateful fuzzer, goes from an
/// answer to the next operation. Each is (operation, its statuses, the
/// operation linked to, the parameter filled, the OpenAPI runtime
/// expression filling it); operations are named by their `operationId`
/// (the handler's name). Payments are created outside HTTP (the order
/// topic), so chains start at an order's payments or at a confirm.
const LINKS: &[(&str, &[&str], &str, &str, &str)] = &[
    (
        "by_order",
        &["200"],
        "payment",
        "payment_id",
        FIRST_PAYMENT_ID,
    ),
    (
        "by_order",
        &["200"],
        "events",
        "payment_id",
        FIRST_PAYMENT_ID,
    ),
    (
        "by_order",
        &["200"],
        "transactions",
        "payment_id",
        FIRST_PAYMENT_ID,
    ),
    (
        "by_order",
        &["200"],
        "cancel",
        "payment_id",
        FIRST_PAYMENT_ID,
    ),
    ("payment", &["200"], "events", "payment_id", PAYMENT_ID),
    (
        "payment",
        &["200"],
        "transactions",
        "payment_id",
        PAYMENT_ID,
    ),
    ("payment", &["200"], "cancel", "payment_id", PAYMENT_ID),
    (
        "payment",
        &["200"],
        "by_order",
        "orderId",
        "$response.body#/orderId",
    ),
    (
        "confirm_api",
        &["200", "202"],
        "payment",
        "payment_id",
        PAYMENT_ID,
    ),
    (
        "confirm_api",
        &["200", "202"],
        "cancel",
        "payment_id",
        PAYMENT_ID,
    ),
    (
        "success_redirect",
        &["200", "202"],
        "payment",
        "payment_id",
        PAYMENT_ID,
    ),
    (
        "fail_redirect",
        &["200"],
        "payment",
        "payment_id",
        PAYMENT_ID,
    ),
    (
        "cancel",
        &["200", "202"],
        "payment",
        "payment_id",
        PAYMENT_ID,
    ),
    (
        "events",
        &["200"],
        "payment",
        "payment_id",
        REQUESTED_PAYMENT_ID,
    ),
    (
        "transactions",
        &["200"],
        "payment",
        "payment_id",
        REQUESTED_PAYMENT_ID,
    ),
];

/// Adds [`LINKS`] to the responses they start from.
#[derive(Debug)]
struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let Some(id) = operation.operation_id.clone() else {
                    continue;
                };
                for (_, statuses, to, parameter, value) in LINKS.iter().filter(|l| l.0 == id) {
                    for status in *statuses {
                        if let Some(RefOr::T(response)) =
                            operation.responses.responses.get_mut(*status)
                        {
                            response.links.insert(
                                (*to).to_owned(),
                                RefOr::T(
                                    LinkBuilder::new()
                                        // utoipa 5.5.0 writes `Link::operation_id`
                                        // as `operation_id` (its `Link` lacks
                                        // `rename_all = "camelCase"`; fixed
                                        // upstream since), which no tool reads:
                                        // the key is written verbatim instead.
                                        .extensions(Some(Extensions::from_iter([(
                                            "operationId",
                                            *to,
                                        )])))
                                        .parameter(*parameter, *value)
                                        .build(),
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    /// Every place in the document that mentions a float format.
    fn floats(value: &Value, at: &str, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let here = format!("{at}/{key}");
                    if key == "format" && matches!(child.as_str(), Some("double" | "float")) {
                        found.push(here.clone());
                    }
                    floats(child, &here, found);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    floats(child, &format!("{at}/{i}"), found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn no_amount_is_declared_a_float() {
        let mut found = Vec::new();
        floats(&document(), "", &mut found);
        assert!(found.is_empty(), "float formats at {found:?}");
    }

    #[test]
    fn amounts_are_exact_decimals_as_numbers_or_strings() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["PaymentView"]["properties"]["amount"]["$ref"],
            "#/components/schemas/Amount"
        );
        assert_eq!(
            schemas["TransactionView"]["properties"]["amount"]["$ref"],
            "#/components/schemas/Amount"
        );
        let answered = &schemas["Amount"];
        assert_eq!(answered["type"], "number");
        assert_eq!(answered["minimum"], 0);
        assert_eq!(answered["maximum"], 999_999_999_999_999_u64);

        // Whole amounts as JSON integers, decimals as strings: both forms
        // are bounded exactly, with no float arithmetic (no `multipleOf`).
        let accepted = &schemas["AmountInput"]["oneOf"];
        assert_eq!(accepted[0]["type"], "integer");
        assert_eq!(accepted[0]["minimum"], 0);
        assert_eq!(accepted[0]["maximum"], 999_999_999_999_999_u64);
        assert!(accepted[0].get("multipleOf").is_none(), "{accepted}");
        assert_eq!(accepted[1]["type"], "string");
        let pattern = accepted[1]["pattern"].as_str().unwrap();
        assert_eq!(pattern, r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,2}0*)?$");
        assert!(!doc.to_string().contains(r#""multipleOf":"#));
        // The confirm body and query, and the cancel body, take AmountInput.
        let takes_amount_input = |schema: &Value| {
            assert!(
                schema
                    .to_string()
                    .contains("#/components/schemas/AmountInput"),
                "{schema}"
            );
        };
        takes_amount_input(&schemas["CancelBody"]["properties"]["cancelAmount"]);
        takes_amount_input(&schemas["ConfirmParams"]["properties"]["amount"]);
        let parameters = doc["paths"]["/payments/toss/success"]["get"]["parameters"]
            .as_array()
            .unwrap();
        takes_amount_input(parameters.iter().find(|p| p["name"] == "amount").unwrap());
    }

    /// The error responses of every operation but the ops ones are written
    /// from `ProblemCode`: each names codes of its own status, described by
    /// their `doc`, and every operation can answer a failure of ours.
    #[test]
    fn every_error_response_is_written_from_problem_codes() {
        use crate::problem::{describe, ProblemCode, ALL};
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if operation["tags"][0] == "ops" {
                    continue;
                }
                let mut answered = Vec::new();
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.as_str() < "400" {
                        continue;
                    }
                    let at = format!("{method} {path} {status}");
                    let schema = &response["content"]["application/problem+json"]["schema"];
                    assert_eq!(
                        schema["allOf"][0]["$ref"], "#/components/schemas/ProblemDoc",
                        "{at}: {response}"
                    );
                    let codes: Vec<ProblemCode> = schema["allOf"][1]["properties"]["code"]["enum"]
                        .as_array()
                        .unwrap_or_else(|| panic!("{at}: no code enum"))
                        .iter()
                        .map(|code| {
                            *ALL.iter()
                                .find(|known| known.as_str() == code)
                                .unwrap_or_else(|| panic!("{at}: {code} is no ProblemCode"))
                        })
                        .collect();
                    for code in &codes {
                        assert_eq!(code.status().as_str(), status, "{at}: {code:?}");
                    }
                    assert_eq!(response["description"], describe(&codes), "{at}");
                    answered.extend(codes);
                }
                for ours in [ProblemCode::InternalError, ProblemCode::ServiceUnavailable] {
                    assert!(answered.contains(&ours), "{method} {path}: no {ours:?}");
                }
            }
        }
    }

    /// `/api/v1/**` is behind the `bearer` scheme: each of its operations
    /// names it (with `payments:admin` or no scope) and declares 401, and
    /// 403 exactly when it needs the scope; nothing else names a scheme.
    /// (`tests/tests/auth.rs` checks the server enforces what is declared.)
    #[test]
    fn the_bearer_scheme_and_each_operation_scope_are_declared() {
        let doc = document();
        let scheme = &doc["components"]["securitySchemes"]["bearer"];
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        assert_eq!(scheme["bearerFormat"], "JWT");
        let mut scopes = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let security = &operation["security"];
                let responses = &operation["responses"];
                if !path.starts_with("/api/v1/") {
                    assert!(security.is_null(), "{method} {path}: {security}");
                    continue;
                }
                assert_eq!(
                    security.as_array().map(Vec::len),
                    Some(1),
                    "{method} {path}"
                );
                let scope = &security[0]["bearer"];
                let admin = match scope.as_array().unwrap().as_slice() {
                    [] => false,
                    [only] if only == crate::ADMIN_SCOPE => true,
                    other => panic!("{method} {path}: scopes {other:?}"),
                };
                assert!(responses["401"].is_object(), "{method} {path}");
                assert_eq!(responses["403"].is_object(), admin, "{method} {path}");
                scopes.push((format!("{method} {path}"), admin));
            }
        }
        scopes.sort();
        let admin_only: Vec<&str> = scopes
            .iter()
            .filter(|(_, admin)| *admin)
            .map(|(operation, _)| operation.as_str())
            .collect();
        assert_eq!(scopes.len(), 6, "{scopes:?}");
        assert_eq!(
            admin_only,
            [
                "get /api/v1/payments/{payment_id}/events",
                "get /api/v1/payments/{payment_id}/transactions",
                "post /api/v1/payments/{payment_id}/cancel",
            ]
        );
    }

    /// The schema `pointer` (`/0/paymentId`) names in a response `schema`.
    fn resolve<'a>(doc: &'a Value, mut schema: &'a Value, pointer: &str) -> Option<&'a Value> {
        let deref = |schema: &'a Value| match schema["$ref"].as_str() {
            Some(reference) => doc.pointer(reference.trim_start_matches('#')),
            None => Some(schema),
        };
        for segment in pointer.split('/').skip(1) {
            schema = deref(schema)?;
            schema = if segment.parse::<usize>().is_ok() {
                schema.get("items")?
            } else {
                schema.get("properties")?.get(segment)?
            };
        }
        deref(schema)
    }

    /// Every link names an operation of the document and fills its
    /// parameters from what the response (or request) holds, so that a
    /// stateful fuzzer can chain operations.
    #[test]
    fn links_chain_operations_through_what_responses_hold() {
        let doc = document();
        // `operationId`, as OpenAPI spells it (see `Links`).
        assert!(!doc.to_string().contains(r#""operation_id":"#));
        let mut operations = std::collections::BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap();
                assert!(
                    operations.insert(id, (path, method, operation)).is_none(),
                    "{id} twice"
                );
            }
        }
        let mut found = Vec::new();
        for (from, (path, method, operation)) in &operations {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let Some(links) = response["links"].as_object() else {
                    continue;
                };
                for (name, link) in links {
                    let at = format!("{method} {path} {status} {name}");
                    let to = link["operationId"].as_str().unwrap();
                    let (_, _, target) = operations
                        .get(to)
                        .unwrap_or_else(|| panic!("{at}: no operation {to}"));
                    for (parameter, expression) in link["parameters"].as_object().unwrap() {
                        let known = target["parameters"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| p["name"] == *parameter);
                        assert!(known, "{at}: {to} has no parameter {parameter}");
                        let expression = expression.as_str().unwrap();
                        if let Some(pointer) = expression.strip_prefix("$response.body#") {
                            let schema = &response["content"]["application/json"]["schema"];
                            assert!(
                                resolve(&doc, schema, pointer).is_some(),
                                "{at}: {expression} is not in the response"
                            );
                        } else {
                            let name = expression.strip_prefix("$request.path.");
                            let known = operation["parameters"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|p| Some(p["name"].as_str().unwrap()) == name);
                            assert!(known, "{at}: {expression} names no parameter");
                        }
                    }
                    found.push(format!("{from} {status} -> {to}"));
                }
            }
        }
        for expected in [
            "by_order 200 -> payment",
            "by_order 200 -> events",
            "by_order 200 -> transactions",
            "by_order 200 -> cancel",
            "payment 200 -> cancel",
            "confirm_api 200 -> payment",
            "confirm_api 202 -> payment",
            "cancel 200 -> payment",
        ] {
            assert!(
                found.iter().any(|f| f == expected),
                "{expected} not in {found:#?}"
            );
        }
    }
}

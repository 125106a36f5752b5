//! Operational endpoints over real HTTP, with a real MariaDB and broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use payment_e2e::spawn_app;
use serde_json::{json, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

#[sqlx::test(migrations = false)]
async fn liveness_answers_200(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let app = spawn_app(&db, json!({})).await;
    let response = app.get("/health/live").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "UP");
    app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn readiness_is_200_when_database_and_broker_answer(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(&db, json!({})).await;
    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "UP");
    assert_eq!(body["checks"]["database"]["status"], "UP");
    assert_eq!(body["checks"]["broker"]["status"], "UP");
    app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn readiness_is_503_naming_the_broker_when_it_is_unreachable(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    // A port nothing listens on: bind it, note it, free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app(&db, json!({ "kafka": { "brokers": closed.to_string() } })).await;
    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "DOWN");
    assert_eq!(body["down"], json!(["broker"]));
    assert_eq!(body["checks"]["broker"]["status"], "DOWN");
    assert!(body["checks"]["broker"]["error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    assert_eq!(body["checks"]["database"]["status"], "UP");
    app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn metrics_are_served_as_prometheus_text(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let app = spawn_app(&db, json!({})).await;
    app.get("/health/live").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let body = response.text().await.unwrap();
    assert!(body.contains("http_requests_total"), "{body}");
    app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn every_response_carries_a_request_id(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let app = spawn_app(&db, json!({})).await;
    let response = app.get("/health/live").await;
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn the_service_applies_its_migrations_at_start(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(&db, json!({})).await;
    let pool = pool_options.connect_with(db).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() ORDER BY table_name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for table in [
        "idempotency_keys",
        "inbox",
        "outbox",
        "payment_events",
        "payment_transactions",
        "payments",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing from {tables:?}"
        );
    }
    app.stop().await.unwrap();
}

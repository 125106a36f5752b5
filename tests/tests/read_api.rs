//! Read APIs and the OpenAPI document over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use payment_e2e::orders::{place_order, TestTopics};
use payment_e2e::spawn_app;
use serde_json::{json, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

#[sqlx::test(migrations = false)]
async fn a_payment_its_order_its_audit_trail_and_its_transactions_can_be_read(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let topics = TestTopics::create().await;
    let app = spawn_app(&db, topics.config()).await; // the network-free fake gateway
    let pool = pool_options.connect_with(db).await.unwrap();
    let payment_id = place_order(&topics, &pool, "order-read-1", 12_000).await;
    let confirmed = app
        .http
        .post(format!("{}/api/v1/payments/confirm", app.address))
        .json(&json!({ "paymentKey": "tgen_read_1", "orderId": "order-read-1", "amount": 12000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);

    let payment: Value = app
        .get(&format!("/api/v1/payments/{payment_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(payment["status"], "DONE");
    assert_eq!(payment["amount"], 12_000);
    assert_eq!(payment["balanceAmount"], 12_000);
    assert_eq!(payment["orderId"], "order-read-1");

    let by_order: Value = app
        .get("/api/v1/payments?orderId=order-read-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_order.as_array().unwrap().len(), 1);
    assert_eq!(by_order[0]["paymentId"], payment_id);
    let none: Value = app
        .get("/api/v1/payments?orderId=order-nobody")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!([]));

    let events: Value = app
        .get(&format!("/api/v1/payments/{payment_id}/events"))
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["PaymentCreated", "ConfirmationStarted", "PaymentApproved"]
    );
    assert_eq!(events[0]["version"], 1);
    assert_eq!(events[0]["data"]["order_id"], "order-read-1");

    let transactions: Value = app
        .get(&format!("/api/v1/payments/{payment_id}/transactions"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(transactions.as_array().unwrap().len(), 1);
    assert_eq!(transactions[0]["kind"], "APPROVAL");
    assert_eq!(transactions[0]["status"], "SUCCEEDED");
    assert_eq!(transactions[0]["amount"], 12_000);

    let missing = app
        .get("/api/v1/payments/01a20000-0000-7000-8000-000000000000")
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        missing.json::<Value>().await.unwrap()["code"],
        "PAYMENT_NOT_FOUND"
    );
    let malformed = app.get("/api/v1/payments/not-a-uuid").await;
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["errors"][0]["field"],
        "paymentId"
    );
    let no_order = app.get("/api/v1/payments").await;
    assert_eq!(
        no_order.json::<Value>().await.unwrap()["errors"][0]["field"],
        "orderId"
    );
    app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn the_openapi_document_lists_every_endpoint_with_its_error_codes(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(&db, json!({})).await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/payments/confirm", "post"),
        ("/payments/toss/success", "get"),
        ("/payments/toss/fail", "get"),
        ("/webhooks/toss", "post"),
        ("/api/v1/payments", "get"),
        ("/api/v1/payments/{payment_id}", "get"),
        ("/api/v1/payments/{payment_id}/events", "get"),
        ("/api/v1/payments/{payment_id}/transactions", "get"),
        ("/api/v1/payments/{payment_id}/cancel", "post"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/metrics", "get"),
    ] {
        let operation = &paths.get(path).unwrap_or_else(|| panic!("{path} missing"))[method];
        assert!(operation.is_object(), "{method} {path} missing");
        let errors: Vec<&String> = operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|s| s.as_str() >= "400")
            .collect();
        if path.starts_with("/api")
            || path.starts_with("/payments")
            || path.starts_with("/webhooks")
        {
            assert!(!errors.is_empty(), "{method} {path} documents no error");
        }
    }
    let confirm_errors =
        document["paths"]["/api/v1/payments/confirm"]["post"]["responses"].to_string();
    for code in [
        "AMOUNT_MISMATCH",
        "PAYMENT_DECLINED",
        "PAYMENT_IN_PROGRESS",
        "PAYMENT_NOT_FOUND",
        "INVALID_REQUEST",
    ] {
        assert!(confirm_errors.contains(code), "{code} not documented");
    }
    let cancel_errors =
        document["paths"]["/api/v1/payments/{payment_id}/cancel"]["post"].to_string();
    for code in [
        "IDEMPOTENCY_KEY_REQUIRED",
        "IDEMPOTENCY_KEY_REUSED",
        "IDEMPOTENCY_KEY_IN_USE",
        "NOT_CANCELABLE_AMOUNT",
        "PAYMENT_NOT_CANCELABLE",
        "CANCEL_DECLINED",
    ] {
        assert!(cancel_errors.contains(code), "{code} not documented");
    }
    let docs_page = app.get("/docs").await;
    assert_eq!(docs_page.status(), 200);
    assert!(docs_page.text().await.unwrap().contains("openapi"));
    app.stop().await.unwrap();
}

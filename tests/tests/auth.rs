//! Who may call what, over real HTTP: `/api/v1/**` needs a bearer JWT the
//! service verifies; a user reads and confirms only their own payments
//! (another user's is a 404); cancels and the audit trail need
//! `payments:admin`; the widget redirects, the Toss webhook and the ops
//! endpoints need no token; `http.ops_addr` takes health and metrics off the
//! public address.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use payment_e2e::orders::{place_order, TestTopics};
use payment_e2e::{http_client, spawn_app, token, AUTH_SECRET};
use serde_json::{json, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

/// `place_order` creates payments of user `42` (the order event's `userId`).
const OWNER: &str = "42";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(secret: &[u8], sub: &str, scope: Option<&str>, exp: u64) -> String {
    payment_api::hs256_token(
        secret,
        &payment_api::Claims {
            sub: sub.into(),
            scope: scope.map(Into::into),
            exp,
            iss: None,
            aud: None,
        },
    )
    .unwrap()
}

async fn problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    body
}

#[sqlx::test(migrations = false)]
async fn api_v1_answers_401_with_a_bearer_challenge_without_a_valid_token(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let topics = TestTopics::create().await;
    let app = spawn_app(&db, topics.config()).await;
    let some_id = "0190f5d4-8c1e-7a3b-9f00-000000000001";
    let url = format!("{}/api/v1/payments/{some_id}", app.address);

    let anonymous = http_client(None).get(&url).send().await.unwrap();
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        r#"Bearer realm="payment-service""#
    );
    problem(anonymous, 401, "UNAUTHENTICATED").await;

    let wrong_key = signed(
        b"some-other-secret-of-at-least-32-bytes",
        OWNER,
        Some("payments:admin"),
        now() + 600,
    );
    let expired = signed(
        AUTH_SECRET.as_bytes(),
        OWNER,
        Some("payments:admin"),
        now() - 3_600,
    );
    for bad in [wrong_key.as_str(), expired.as_str(), "not-a-jwt"] {
        let refused = http_client(Some(bad)).get(&url).send().await.unwrap();
        let challenge = refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        problem(refused, 401, "UNAUTHENTICATED").await;
    }
    let basic = http_client(None)
        .get(&url)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    problem(basic, 401, "UNAUTHENTICATED").await;

    // Every path under /api/v1, routed or not, and every method.
    let unrouted = http_client(None)
        .get(format!("{}/api/v1/nothing-here", app.address))
        .send()
        .await
        .unwrap();
    problem(unrouted, 401, "UNAUTHENTICATED").await;
    let cancel = http_client(None)
        .post(format!("{url}/cancel"))
        .header("idempotency-key", "k-anon")
        .json(&json!({ "cancelReason": "nope" }))
        .send()
        .await
        .unwrap();
    problem(cancel, 401, "UNAUTHENTICATED").await;

    // The harness's default client carries a valid admin token.
    let admin = app.get(&format!("/api/v1/payments/{some_id}")).await;
    problem(admin, 404, "PAYMENT_NOT_FOUND").await;
}

#[sqlx::test(migrations = false)]
async fn a_user_reads_and_confirms_only_their_own_payments_and_cannot_cancel(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let topics = TestTopics::create().await;
    let app = spawn_app(&db, topics.config()).await; // the network-free fake gateway
    let pool = pool_options.connect_with(db).await.unwrap();
    let mine = place_order(&topics, &pool, "order-auth-own", 5_000).await;
    let other = place_order(&topics, &pool, "order-auth-other", 7_000).await;
    let owner = http_client(Some(&token(OWNER, Some("openid profile"))));
    let stranger = http_client(Some(&token("7", None)));
    let at = |path: &str| format!("{}{path}", app.address);

    // Reads: the owner sees the payment, the stranger sees nothing at all.
    let read = owner
        .get(at(&format!("/api/v1/payments/{mine}")))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap()["userId"], OWNER);
    let hidden = stranger
        .get(at(&format!("/api/v1/payments/{mine}")))
        .send()
        .await
        .unwrap();
    let body = problem(hidden, 404, "PAYMENT_NOT_FOUND").await;
    let missing = stranger
        .get(at("/api/v1/payments/0190f5d4-8c1e-7a3b-9f00-000000000002"))
        .send()
        .await
        .unwrap();
    let absent = problem(missing, 404, "PAYMENT_NOT_FOUND").await;
    assert_eq!(
        body["title"], absent["title"],
        "the same answer as a missing one"
    );
    for (client, expected) in [(&owner, 1), (&stranger, 0)] {
        let listed: Value = client
            .get(at("/api/v1/payments?orderId=order-auth-own"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed.as_array().unwrap().len(), expected, "{listed}");
    }

    // The audit trail and the transactions need the admin scope.
    for path in ["events", "transactions"] {
        let trail = owner
            .get(at(&format!("/api/v1/payments/{mine}/{path}")))
            .send()
            .await
            .unwrap();
        let challenge = trail.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.contains(r#"error="insufficient_scope""#)
                && challenge.contains(r#"scope="payments:admin""#),
            "{challenge}"
        );
        problem(trail, 403, "INSUFFICIENT_SCOPE").await;
    }

    // Confirm: another user's order is a missing one (and is not touched);
    // one's own is confirmed.
    let confirm = |client: &reqwest::Client, order: &str, key: &str, amount: u64| {
        client
            .post(at("/api/v1/payments/confirm"))
            .json(&json!({ "paymentKey": key, "orderId": order, "amount": amount }))
            .send()
    };
    let foreign = confirm(&stranger, "order-auth-own", "tgen_auth_x", 5_000)
        .await
        .unwrap();
    problem(foreign, 404, "PAYMENT_NOT_FOUND").await;
    // A wrong amount on another user's order must not reveal it either.
    let probing = confirm(&stranger, "order-auth-own", "tgen_auth_x", 1)
        .await
        .unwrap();
    problem(probing, 404, "PAYMENT_NOT_FOUND").await;
    let own = confirm(&owner, "order-auth-own", "tgen_auth_own", 5_000)
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert_eq!(own.json::<Value>().await.unwrap()["status"], "DONE");

    // Cancel needs the admin scope, and a refusal does not use up the key.
    let cancel = |client: &reqwest::Client| {
        client
            .post(at(&format!("/api/v1/payments/{mine}/cancel")))
            .header("idempotency-key", "auth-cancel-1")
            .json(&json!({ "cancelReason": "customer asked" }))
            .send()
    };
    problem(cancel(&owner).await.unwrap(), 403, "INSUFFICIENT_SCOPE").await;
    let canceled = cancel(&app.http).await.unwrap();
    assert_eq!(canceled.status(), 200);
    assert_eq!(
        canceled.json::<Value>().await.unwrap()["status"],
        "CANCELED"
    );

    // An admin reads anyone's payment.
    let any = app.get(&format!("/api/v1/payments/{other}")).await;
    assert_eq!(any.status(), 200);
}

/// The OpenAPI document declares the `bearer` scheme and, per `/api/v1`
/// operation, the scope the server enforces: without a token each answers
/// 401; with a token of a user without scopes, exactly those that list
/// `payments:admin` answer 403.
#[sqlx::test(migrations = false)]
async fn the_openapi_document_declares_the_scope_each_operation_enforces(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(&db, json!({})).await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let scheme = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    let anonymous = http_client(None);
    let user = http_client(Some(&token(OWNER, Some("openid"))));
    let some_id = "0190f5d4-8c1e-7a3b-9f00-000000000003";
    let mut checked = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let at = format!("{method} {path}");
            let scopes = operation["security"][0]["bearer"]
                .as_array()
                .unwrap_or_else(|| panic!("{at} declares no bearer requirement"));
            let admin_only = scopes.iter().any(|s| s == payment_api::ADMIN_SCOPE);
            let url = format!("{}{}", app.address, path.replace("{payment_id}", some_id));
            let send = |client: &reqwest::Client| {
                let request = client.request(
                    reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    &url,
                );
                match method.as_str() {
                    "post" => request
                        .header("idempotency-key", "openapi-scope")
                        .json(&json!({ "cancelReason": "scope check" })),
                    _ => request.query(&[("orderId", "order-scope")]),
                }
                .send()
            };
            problem(send(&anonymous).await.unwrap(), 401, "UNAUTHENTICATED").await;
            let as_user = send(&user).await.unwrap();
            if admin_only {
                problem(as_user, 403, "INSUFFICIENT_SCOPE").await;
            } else {
                let status = as_user.status().as_u16();
                assert!(![401, 403].contains(&status), "{at}: {status} for a user");
            }
            checked.push((at, admin_only));
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            ("get /api/v1/payments".to_owned(), false),
            ("get /api/v1/payments/{payment_id}".to_owned(), false),
            ("get /api/v1/payments/{payment_id}/events".to_owned(), true),
            (
                "get /api/v1/payments/{payment_id}/transactions".to_owned(),
                true
            ),
            ("post /api/v1/payments/confirm".to_owned(), false),
            ("post /api/v1/payments/{payment_id}/cancel".to_owned(), true),
        ]
    );
    app.stop().await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn redirects_the_webhook_and_ops_need_no_token(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let topics = TestTopics::create().await;
    let app = spawn_app(&db, topics.config()).await;
    let pool = pool_options.connect_with(db).await.unwrap();
    place_order(&topics, &pool, "order-auth-redirect", 3_000).await;
    place_order(&topics, &pool, "order-auth-failed", 3_000).await;
    let anonymous = http_client(None);
    let at = |path: &str| format!("{}{path}", app.address);

    let redirect = |query: &'static str| {
        anonymous
            .get(at(query))
            .header("accept", "application/json")
            .send()
    };
    let success = redirect(
        "/payments/toss/success?paymentKey=tgen_auth_r&orderId=order-auth-redirect&amount=3000",
    )
    .await
    .unwrap();
    assert_eq!(success.status(), 200);
    assert_eq!(success.json::<Value>().await.unwrap()["status"], "DONE");
    let fail = redirect(
        "/payments/toss/fail?code=PAY_PROCESS_CANCELED&message=x&orderId=order-auth-failed",
    )
    .await
    .unwrap();
    assert_eq!(fail.status(), 200);
    let webhook = anonymous
        .post(at("/webhooks/toss"))
        .json(&json!({ "eventType": "DEPOSIT_CALLBACK", "data": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 200);
    for open in ["/health/live", "/metrics", "/openapi.json"] {
        let answer = anonymous.get(at(open)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{open}");
    }
}

#[sqlx::test(migrations = false)]
async fn with_an_ops_address_health_and_metrics_leave_the_public_one(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let topics = TestTopics::create().await;
    let mut config = topics.config();
    config["http"] = json!({ "addr": "127.0.0.1:0", "ops_addr": "127.0.0.1:0" });
    let app = spawn_app(&db, config).await;
    let ops = app.ops_address.clone().expect("an ops address");
    let anonymous = http_client(None);
    for path in ["/health/live", "/health/ready", "/metrics"] {
        let public = anonymous
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(public.status(), 404, "{path} on the public address");
    }
    let live = anonymous
        .get(format!("{ops}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let metrics = anonymous
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    // The API stays where it was.
    let openapi = anonymous
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(openapi.status(), 200);
}

//! Helpers for the end-to-end tests: start the real service (the same
//! `Application` `main` runs) on a free port, against its own fresh database
//! and the local broker, and talk to it over real HTTP.
#![allow(clippy::expect_used)]

pub mod backlog;
pub mod containers;
pub mod kafka;
pub mod orders;
pub mod saga;
pub mod toss;

use std::time::Duration;

use figment::providers::{Env, Serialized};
use figment::Figment;
use payment_service::{Application, Config};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::ConnectOptions as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running service. Stop it with [`TestApp::stop`] to check a clean exit.
#[derive(Debug)]
pub struct TestApp {
    pub address: String,
    /// Health and metrics, when `http.ops_addr` was set.
    pub ops_address: Option<String>,
    pub http: reqwest::Client,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
}

/// The HS256 secret every spawned service verifies bearer tokens with.
pub const AUTH_SECRET: &str = "e2e-only-hs256-secret-of-at-least-32-bytes";

/// A bearer token for `sub` with the space-separated `scope`, signed with
/// [`AUTH_SECRET`] and valid for an hour.
#[must_use]
pub fn token(sub: &str, scope: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    payment_api::hs256_token(
        AUTH_SECRET.as_bytes(),
        &payment_api::Claims {
            sub: sub.to_owned(),
            scope: scope.map(str::to_owned),
            exp: now + 3_600,
            iss: None,
            aud: None,
        },
    )
    .expect("token encodes")
}

/// An HTTP client sending `Authorization: Bearer <token>` (none for `None`).
#[must_use]
pub fn http_client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header value"),
        );
    }
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// The broker the local stack runs (`PAYMENT__KAFKA__BROKERS`, set by
/// `scripts/stack.sh env`).
#[must_use]
pub fn brokers() -> String {
    std::env::var("PAYMENT__KAFKA__BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// Starts the service on `database` (a fresh database from `sqlx::test`),
/// with the environment's settings, then `overrides` (JSON, dotted keys
/// nested: `{"kafka": {"brokers": "…"}}`). The service verifies tokens
/// with [`AUTH_SECRET`]; [`TestApp::http`] sends a `payments:admin` token.
pub async fn spawn_app(database: &MySqlConnectOptions, overrides: serde_json::Value) -> TestApp {
    let figment = Figment::new()
        .merge(Env::prefixed("PAYMENT__").split("__"))
        .merge(Serialized::defaults(figment_value(serde_json::json!({
            "http": { "addr": "127.0.0.1:0" },
            "database": { "url": database.to_url_lossy().to_string() },
            // Its own consumer group: a group shared by concurrently running
            // tests would rebalance whenever one of them starts or stops.
            "kafka": {
                "brokers": brokers(),
                "group_id": format!("e2e-{}", uuid::Uuid::now_v7().simple()),
                "session_timeout_ms": 3000,
            },
            "gateway": "fake",
            "auth": { "hs256_secret": AUTH_SECRET },
        }))))
        .merge(Serialized::defaults(figment_value(overrides)));
    let config = Config::from_figment(figment).expect("test configuration");
    let app = Application::build(&config)
        .await
        .expect("application builds");
    let port = app.port().expect("bound port");
    let ops_port = app.ops_port().expect("bound ops port");
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        ops_address: ops_port.map(|port| format!("http://127.0.0.1:{port}")),
        http: http_client(Some(&token("e2e-admin", Some(payment_api::ADMIN_SCOPE)))),
        shutdown,
        server,
    }
}

/// `value` as figment's own value: with serde_json's `arbitrary_precision`
/// (the domain reads amounts exactly), a JSON number serializes as a map
/// outside serde_json, which figment would see instead of the number.
fn figment_value(value: serde_json::Value) -> figment::value::Value {
    use figment::value::{Dict, Empty, Tag, Value};
    match value {
        serde_json::Value::Null => Value::Empty(Tag::Default, Empty::None),
        serde_json::Value::Bool(flag) => Value::from(flag),
        serde_json::Value::Number(number) => number
            .as_u64()
            .map(Value::from)
            .or_else(|| number.as_i64().map(Value::from))
            .or_else(|| number.as_f64().map(Value::from))
            .unwrap_or_else(|| Value::from(number.to_string())),
        serde_json::Value::String(text) => Value::from(text),
        serde_json::Value::Array(items) => {
            Value::from(items.into_iter().map(figment_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(fields) => Value::from(
            fields
                .into_iter()
                .map(|(key, value)| (key, figment_value(value)))
                .collect::<Dict>(),
        ),
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the service")
    }

    /// The sum of a Prometheus counter over the series whose labels include
    /// every `labels` pair (0 when absent).
    pub async fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .filter(|line| {
                labels
                    .iter()
                    .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the service has handled (committed or dead-lettered)
    /// `count` messages of `topic`, by its `kafka_messages_total` counter.
    pub async fn wait_handled(&self, topic: &str, count: f64, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let handled = self
                .counter("kafka_messages_total", &[("topic", topic)])
                .await;
            if handled >= count {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "only {handled} of {count} messages of {topic} handled"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the service abruptly, as a crash would: nothing is finished,
    /// committed or flushed.
    pub fn kill(self) {
        self.server.abort();
    }

    /// Signals shutdown and waits for the service to finish.
    ///
    /// # Errors
    /// What `run_until_stopped` returned, or a timeout.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        tokio::time::timeout(Duration::from_secs(15), self.server).await??
    }
}

//! The service wired to its own fake Toss server, for the money-path tests.

use std::time::Duration;

use fake_toss::{FakeConfig, FakeToss};
use serde_json::{json, Value};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::MySqlPool;

use crate::kafka::{self, Received};
use crate::orders::TestTopics;
use crate::{spawn_app, TestApp};

/// A service, its fake Toss, its database and its topics.
#[derive(Debug)]
pub struct TossWorld {
    pub app: TestApp,
    pub toss: FakeToss,
    pub pool: MySqlPool,
    pub topics: TestTopics,
}

/// How fast the background reconciler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciler {
    Fast,
    /// Fast, and an unknown cancel is never re-sent and is settled or
    /// escalated after one second.
    FastImpatient,
    Off,
}

impl TossWorld {
    /// Starts everything; `read_timeout_ms` is the service's Toss read timeout.
    pub async fn start(
        pool_options: MySqlPoolOptions,
        db: MySqlConnectOptions,
        reconciler: Reconciler,
        read_timeout_ms: u64,
    ) -> Self {
        let secret = FakeConfig::DEFAULT_SECRET_KEY;
        let toss = FakeToss::start(FakeConfig::new(secret)).expect("fake Toss starts");
        let topics = TestTopics::create().await;
        let mut config = topics.config();
        config["gateway"] = json!("toss");
        config["toss"] = json!({
            "base_url": toss.base_url(),
            "secret_key": secret,
            "read_timeout_ms": read_timeout_ms,
        });
        config["reconciler"] = match reconciler {
            Reconciler::Fast => {
                json!({ "interval_ms": 200, "min_age_ms": 200, "first_backoff_ms": 200, "max_backoff_ms": 400 })
            }
            Reconciler::FastImpatient => json!({
                "interval_ms": 200, "min_age_ms": 200, "first_backoff_ms": 200, "max_backoff_ms": 400,
                "cancel_resend_for_secs": 0, "cancel_settle_within_secs": 1,
            }),
            Reconciler::Off => json!({ "interval_ms": 3_600_000 }),
        };
        let app = spawn_app(&db, config).await;
        let pool = pool_options.connect_with(db).await.expect("test pool");
        Self {
            app,
            toss,
            pool,
            topics,
        }
    }

    /// `POST /api/v1/payments/confirm`.
    pub async fn confirm(
        &self,
        payment_key: &str,
        order_id: &str,
        amount: u64,
    ) -> reqwest::Response {
        self.app
            .http
            .post(format!("{}/api/v1/payments/confirm", self.app.address))
            .json(&json!({ "paymentKey": payment_key, "orderId": order_id, "amount": amount }))
            .send()
            .await
            .expect("confirm answered")
    }

    /// `POST /api/v1/payments/{id}/cancel` with an `Idempotency-Key` (if any).
    pub async fn cancel(
        &self,
        payment_id: &str,
        key: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut request = self
            .app
            .http
            .post(format!(
                "{}/api/v1/payments/{payment_id}/cancel",
                self.app.address
            ))
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("cancel answered")
    }
}

/// The event about `payment_id` on `topic` (waits for it).
pub async fn event_for(topic: &str, payment_id: &str) -> Received {
    events_for(topic, payment_id, 1).await.remove(0)
}

/// At least `count` events about `payment_id` on `topic`, in order.
pub async fn events_for(topic: &str, payment_id: &str, count: usize) -> Vec<Received> {
    let about = |m: &Received| m.json()["subject"] == payment_id;
    let received = kafka::read_until(topic, Duration::from_secs(30), |seen| {
        seen.iter().filter(|m| about(m)).count() >= count
    })
    .await;
    let found: Vec<Received> = received.into_iter().filter(about).collect();
    assert!(
        found.len() >= count,
        "{} of {count} events for {payment_id} on {topic}",
        found.len()
    );
    found
}

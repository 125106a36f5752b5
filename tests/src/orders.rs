//! Placing orders the way the order service does, and waiting for their
//! payments.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::MySqlPool;

use crate::kafka;

/// One test's topics (and the service settings that point at them), so
/// concurrently running tests never see each other's messages.
#[derive(Debug, Clone)]
pub struct TestTopics {
    pub order_placed: String,
    pub order_refund_requested: String,
    pub payment_created: String,
    pub payment_completed: String,
    pub payment_failed: String,
    pub payment_canceled: String,
    pub payment_cancel_failed: String,
}

impl TestTopics {
    /// Fresh topics, created on the broker.
    pub async fn create() -> Self {
        let topics = Self {
            order_placed: kafka::unique_topic("order.placed"),
            order_refund_requested: kafka::unique_topic("order.refund.requested"),
            payment_created: kafka::unique_topic("payment.created"),
            payment_completed: kafka::unique_topic("payment.completed"),
            payment_failed: kafka::unique_topic("payment.failed"),
            payment_canceled: kafka::unique_topic("payment.canceled"),
            payment_cancel_failed: kafka::unique_topic("payment.cancel.failed"),
        };
        kafka::create_topics(&[
            topics.order_placed.clone(),
            format!("{}.dlq", topics.order_placed),
            topics.order_refund_requested.clone(),
            format!("{}.dlq", topics.order_refund_requested),
            topics.payment_created.clone(),
            topics.payment_completed.clone(),
            topics.payment_failed.clone(),
            topics.payment_canceled.clone(),
            topics.payment_cancel_failed.clone(),
        ])
        .await;
        topics
    }

    /// The service settings for these topics (one consumer group for every
    /// instance of the same test, as in production).
    #[must_use]
    pub fn config(&self) -> Value {
        json!({
            "kafka": { "group_id": format!("{}.group", self.order_placed) },
            "topics": {
                "order_placed": self.order_placed,
                "order_refund_requested": self.order_refund_requested,
                "payment_created": self.payment_created,
                "payment_completed": self.payment_completed,
                "payment_failed": self.payment_failed,
                "payment_canceled": self.payment_canceled,
                "payment_cancel_failed": self.payment_cancel_failed,
            },
        })
    }
}

/// An `OrderPlacedEvent` CloudEvent as the order service publishes it.
#[must_use]
pub fn order_placed(event_id: &str, order_id: &str, amount: u64) -> Vec<u8> {
    json!({
        "id": event_id,
        "source": "/order-service",
        "specversion": "1.0",
        "type": "OrderPlacedEvent",
        "time": "2026-11-22T00:00:00Z",
        "subject": order_id,
        "datacontenttype": "application/json",
        "data": {
            "orderId": order_id,
            "userId": 42,
            "amount": amount,
            "currency": "KRW",
            "occurredAt": "2026-11-22T00:00:00Z",
        },
    })
    .to_string()
    .into_bytes()
}

/// Places an order and waits until the service has created its payment;
/// answers the payment id.
pub async fn place_order(
    topics: &TestTopics,
    pool: &MySqlPool,
    order_id: &str,
    amount: u64,
) -> String {
    let payload = order_placed(&format!("evt-{order_id}"), order_id, amount);
    kafka::publish(
        &kafka::producer(),
        &topics.order_placed,
        order_id,
        &payload,
        &[],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found: Option<String> =
            sqlx::query_scalar("SELECT payment_id FROM payments WHERE order_id = ?")
                .bind(order_id)
                .fetch_optional(pool)
                .await
                .expect("query payments");
        if let Some(id) = found {
            return id;
        }
        assert!(Instant::now() < deadline, "no payment for {order_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The projection's status of a payment.
pub async fn status(pool: &MySqlPool, order_id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM payments WHERE order_id = ?")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .expect("payment exists")
}

/// Waits until the payment of `order_id` is in `expected` status.
pub async fn wait_status(pool: &MySqlPool, order_id: &str, expected: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let now = status(pool, order_id).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{order_id} is {now}, never {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

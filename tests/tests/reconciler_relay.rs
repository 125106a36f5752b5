//! The embedded outbox relay keeps each payment's events in order even when
//! a send fails: a later event of the same payment is held back (not
//! published, not deleted) until the earlier one has gone out. Real MariaDB,
//! real broker; the failed send is a record larger than the producer takes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use payment_application::{Commit, OutboxMessage, PaymentRepository as _};
use payment_e2e::kafka;
use payment_infra::mariadb::{MariaDbPaymentRepository, MIGRATOR};
use payment_infra::outbox::{OutboxRelay, RelaySettings};
use serde_json::json;
use sqlx::MySqlPool;
use tokio::sync::Notify;
use uuid::Uuid;

fn message(topic: &str, aggregate: &str, filler: usize) -> OutboxMessage {
    let id = Uuid::now_v7();
    OutboxMessage {
        id,
        topic: topic.to_owned(),
        key: aggregate.to_owned(),
        event_type: "PaymentCanceledEvent".into(),
        payload: json!({ "id": id, "subject": aggregate, "data": { "filler": "x".repeat(filler) } }),
        traceparent: None,
        created_at: Utc::now(),
    }
}

async fn outbox_ids(pool: &MySqlPool) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM outbox ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_later_event_of_a_payment_is_held_back_when_an_earlier_one_fails_to_send(
    pool: MySqlPool,
) {
    let topic = kafka::unique_topic("relay.order");
    kafka::create_topics(std::slice::from_ref(&topic)).await;
    // Over the producer's message.max.bytes (1 MB): refused before it is sent.
    let too_large = message(&topic, "payment-a", 1_100_000);
    let after_it = message(&topic, "payment-a", 10);
    let other = message(&topic, "payment-b", 10);
    MariaDbPaymentRepository::new(pool.clone())
        .commit(Commit {
            outbox: vec![too_large.clone(), after_it.clone(), other.clone()],
            ..Commit::default()
        })
        .await
        .unwrap();
    let relay = OutboxRelay::new(
        pool.clone(),
        kafka::producer(),
        RelaySettings {
            batch_size: 100,
            poll_interval: Duration::from_millis(50),
        },
        Arc::new(Notify::new()),
    );

    assert_eq!(
        relay.relay_once().await.unwrap(),
        1,
        "only payment-b's event"
    );
    assert_eq!(
        outbox_ids(&pool).await,
        vec![too_large.id.to_string(), after_it.id.to_string()],
        "payment-a's events both wait, in order"
    );
    let other_id = other.id.to_string();
    let received = kafka::read_then_settle(&topic, |seen| {
        seen.iter().any(|m| m.headers["id"] == other_id)
    })
    .await;
    let ids: Vec<&str> = received.iter().map(|m| m.headers["id"].as_str()).collect();
    assert_eq!(ids, vec![other.id.to_string()]);
}

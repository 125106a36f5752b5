//! What `outbox replay` cannot republish, against a real MariaDB: the
//! payment events committed before the outbox log holds every message —
//! before logging began, or older than what its retention kept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Duration, Utc};
use payment_infra::outbox_replay::OutboxReplay;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use sqlx::MySqlPool;

async fn event_at(pool: &MySqlPool, version: u64, at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO payment_events (payment_id, version, event_type, data, occurred_at) \
         VALUES ('00000000-0000-7000-8000-00000000000a', ?, 'PaymentCreated', '{}', ?)",
    )
    .bind(version)
    .bind(at)
    .execute(pool)
    .await
    .unwrap();
}

fn replay(pool: &MySqlPool) -> OutboxReplay {
    // Never used here: nothing is published.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .create()
        .unwrap();
    OutboxReplay::new(pool.clone(), producer)
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn messages_the_log_retention_pruned_are_reported_as_not_republishable(pool: MySqlPool) {
    let now = Utc::now();
    // Logging began five hours ago; the retention has since pruned every
    // message older than 90 minutes.
    sqlx::query("UPDATE _sqlx_migrations SET installed_on = ? WHERE version = 20261203000001")
        .bind(now - Duration::hours(5))
        .execute(&pool)
        .await
        .unwrap();
    let oldest_kept = now - Duration::minutes(90);
    sqlx::query(
        "INSERT INTO outbox_log (id, aggregatetype, aggregateid, type, payload, created_at) \
         VALUES ('00000000-0000-7000-8000-000000000001', 't', 'p', 'PaymentCreatedEvent', '{}', ?)",
    )
    .bind(oldest_kept)
    .execute(&pool)
    .await
    .unwrap();
    for (version, hours_ago) in [(1, 3), (2, 2), (3, 1)] {
        event_at(&pool, version, now - Duration::hours(hours_ago)).await;
    }

    let (complete_since, events) = replay(&pool)
        .predating(now - Duration::hours(4), None)
        .await
        .unwrap()
        .expect("events before the oldest kept message");
    assert_eq!(events, 2, "the events of 3 h and 2 h ago");
    assert!((complete_since - oldest_kept).num_milliseconds().abs() < 1);
    assert!(replay(&pool)
        .predating(now - Duration::minutes(80), None)
        .await
        .unwrap()
        .is_none());
}

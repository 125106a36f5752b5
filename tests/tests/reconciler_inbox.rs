//! The `inbox` (messages already handled, per consumer) is pruned after its
//! retention by a periodic job of the running service, on a real MariaDB.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use chrono::Utc;
use payment_e2e::orders::TestTopics;
use payment_e2e::spawn_app;
use serde_json::json;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::MySqlPool;

async fn inbox(pool: &MySqlPool) -> Vec<String> {
    sqlx::query_scalar("SELECT CAST(message_id AS CHAR) FROM inbox ORDER BY message_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn inbox_records_past_their_retention_are_pruned(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let topics = TestTopics::create().await;
    let mut config = topics.config();
    config["inbox"] = json!({ "retention_hours": 24, "prune_interval_secs": 1 });
    let app = spawn_app(&db, config).await; // migrates
    let pool = pool_options.connect_with(db).await.unwrap();
    for (id, age) in [
        ("evt-old", chrono::Duration::hours(25)),
        ("evt-recent", chrono::Duration::hours(23)),
    ] {
        sqlx::query("INSERT INTO inbox (consumer, message_id, processed_at) VALUES (?, ?, ?)")
            .bind("order.placed")
            .bind(id)
            .bind(Utc::now() - age)
            .execute(&pool)
            .await
            .unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    while inbox(&pool).await.contains(&"evt-old".to_owned()) {
        assert!(Instant::now() < deadline, "evt-old never pruned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(inbox(&pool).await, vec!["evt-recent".to_owned()]);
    app.stop().await.unwrap();
}

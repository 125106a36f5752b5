//! Debezium relay mode prunes old outbox rows (docs/operations.md); embedded mode
//! never does (its relay deletes a row once the broker acked it). The
//! `outbox_log` (what `outbox replay` republishes) is pruned by its own,
//! longer retention. Against the real MariaDB and broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use payment_e2e::spawn_app;
use payment_infra::mariadb::{OutboxPruner, OutboxTable, MIGRATOR};
use serde_json::json;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::MySqlPool;
use uuid::Uuid;

/// Writes one outbox row created at `created_at` to `topic`; its `id`.
async fn write_row(pool: &MySqlPool, topic: &str, created_at: DateTime<Utc>) -> String {
    let id = Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, created_at) \
         VALUES (?, ?, 'pay-1', 'PaymentCreatedEvent', '{}', ?)",
    )
    .bind(&id)
    .bind(topic)
    .bind(created_at)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn remaining(pool: &MySqlPool) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM outbox ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn ago(duration: Duration) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(duration).unwrap()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn rows_past_the_retention_are_deleted_in_batches_younger_ones_kept(pool: MySqlPool) {
    let hour = Duration::from_secs(3_600);
    for minutes in [300, 240, 180, 120, 61] {
        write_row(&pool, "t", ago(Duration::from_secs(minutes * 60))).await;
    }
    let young = vec![
        write_row(&pool, "t", ago(Duration::from_secs(59 * 60))).await,
        write_row(&pool, "t", Utc::now()).await,
    ];

    // Batches of 2: the five old rows take three statements.
    let pruner = OutboxPruner::new(pool.clone(), OutboxTable::Outbox, hour, 2);
    assert_eq!(pruner.prune_once().await.unwrap(), 5);
    assert_eq!(remaining(&pool).await, young);
    assert_eq!(pruner.prune_once().await.unwrap(), 0);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_outbox_log_is_pruned_by_its_own_retention_and_the_outbox_left_alone(pool: MySqlPool) {
    let week = Duration::from_secs(7 * 24 * 3_600);
    let outbox_row = write_row(&pool, "t", ago(2 * week)).await;
    let log = |id: &'static str, created_at: DateTime<Utc>| {
        sqlx::query(
            "INSERT INTO outbox_log (id, aggregatetype, aggregateid, type, payload, created_at) \
             VALUES (?, 't', 'pay-1', 'PaymentCreatedEvent', '{}', ?)",
        )
        .bind(id)
        .bind(created_at)
        .execute(&pool)
    };
    log("00000000-0000-7000-8000-000000000001", ago(2 * week))
        .await
        .unwrap();
    log(
        "00000000-0000-7000-8000-000000000002",
        ago(week + Duration::from_secs(60)),
    )
    .await
    .unwrap();
    log(
        "00000000-0000-7000-8000-000000000003",
        ago(week - Duration::from_secs(60)),
    )
    .await
    .unwrap();

    let pruner = OutboxPruner::new(pool.clone(), OutboxTable::Log, week, 100);
    assert_eq!(pruner.prune_once().await.unwrap(), 2);
    let logged: Vec<String> = sqlx::query_scalar("SELECT id FROM outbox_log ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        logged,
        vec!["00000000-0000-7000-8000-000000000003".to_owned()]
    );
    assert_eq!(remaining(&pool).await, vec![outbox_row]);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_old_row_behind_a_younger_one_waits_and_the_younger_one_stays(pool: MySqlPool) {
    // Written by an instance whose clock is behind: `seq` order and age
    // disagree. Only the old prefix of the table goes in one round.
    write_row(&pool, "t", ago(Duration::from_secs(7_200))).await;
    let young = write_row(&pool, "t", Utc::now()).await;
    let late = write_row(&pool, "t", ago(Duration::from_secs(7_200))).await;

    let pruner = OutboxPruner::new(
        pool.clone(),
        OutboxTable::Outbox,
        Duration::from_secs(3_600),
        100,
    );
    assert_eq!(pruner.prune_once().await.unwrap(), 1);
    assert_eq!(remaining(&pool).await, vec![young, late]);
}

/// Starts the service with `relay`, a 1 s retention pruned every second and
/// no reachable broker (so the embedded relay cannot publish and delete),
/// writes one old row; the row and the rows left once the table is empty
/// or `within` has passed.
async fn rows_left_after_running(
    db: &MySqlConnectOptions,
    relay: &str,
    within: Duration,
) -> (String, Vec<String>) {
    let app = spawn_app(
        db,
        json!({
            "kafka": { "brokers": "127.0.0.1:1", "create_topics": false },
            "outbox": { "relay": relay, "retention_secs": 1, "prune_interval_secs": 1 },
        }),
    )
    .await;
    let pool = MySqlPoolOptions::new()
        .connect_with(db.clone())
        .await
        .unwrap();
    let row = write_row(&pool, "it.outbox-prune", ago(Duration::from_secs(60))).await;
    let started = Instant::now();
    while started.elapsed() < within && !remaining(&pool).await.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = remaining(&pool).await;
    // Not `stop`: the embedded relay waits for a broker that never answers
    // (`message.timeout.ms`), longer than a clean stop waits.
    app.kill();
    (row, left)
}

#[sqlx::test(migrations = false)]
async fn the_service_in_debezium_mode_prunes_old_rows(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let (_, left) = rows_left_after_running(&db, "debezium", Duration::from_secs(30)).await;
    assert_eq!(left, Vec::<String>::new());
}

#[sqlx::test(migrations = false)]
async fn the_service_in_embedded_mode_never_prunes(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    // A negative check: 4 s of a 1 s prune interval could not pass by slowness.
    let (row, left) = rows_left_after_running(&db, "embedded", Duration::from_secs(4)).await;
    assert_eq!(left, vec![row]);
}

//! The service's connection pool against a real MariaDB: connections in use
//! a moment ago are handed out without a ping, and one that the server
//! closed while it sat idle is replaced, never handed out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use payment_infra::mariadb::{pool_options, PING_IF_IDLE_FOR};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

#[sqlx::test(migrations = false)]
async fn a_connection_killed_while_idle_is_replaced_not_handed_out(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let pool = pool_options(1, Duration::from_secs(5))
        .connect_with(db.clone())
        .await
        .unwrap();
    let first: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let again: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(again, first, "one pooled connection, reused");

    let admin = MySqlPoolOptions::new()
        .max_connections(1)
        .connect_with(db)
        .await
        .unwrap();
    sqlx::query(&format!("KILL {first}"))
        .execute(&admin)
        .await
        .unwrap();
    tokio::time::sleep(PING_IF_IDLE_FOR + Duration::from_millis(300)).await;

    let replaced: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_ne!(replaced, first, "the dead connection was not handed out");
}

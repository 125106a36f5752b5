//! MariaDB through sqlx: the connection pool, embedded migrations, the
//! payment repository and a readiness probe.

mod errors;
mod idempotency;
mod outbox_prune;
mod projection;
mod repository;
mod saga;

use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use payment_application::HealthProbe;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Connection as _, MySqlPool};

pub use idempotency::MariaDbIdempotencyKeys;
pub use outbox_prune::{OutboxPruner, OutboxTable};
pub use projection::{Folded, ProjectionRebuild};
pub use repository::MariaDbPaymentRepository;
pub use saga::MariaDbBookings;

/// The schema, embedded in the binary; applied at start-up and by `migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Opens a pool lazily: the service starts (and reports not-ready) even while
/// the database is down, and connects as soon as it is back.
///
/// # Errors
/// When `url` is not a valid MariaDB URL.
pub fn connect_lazy(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> anyhow::Result<MySqlPool> {
    let options: MySqlConnectOptions = url.parse().context("invalid database URL")?;
    Ok(pool_options(max_connections, acquire_timeout).connect_lazy_with(options))
}

/// A pooled connection idle at least this long is pinged before it is
/// handed out; one in use a moment ago is not.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The pool's settings. sqlx's default pings EVERY connection it hands out
/// (`test_before_acquire`): a second round trip for each primary-key read
/// and one more per transaction. Here only a connection that sat idle for
/// [`PING_IF_IDLE_FOR`] is pinged (and replaced when the ping fails); a
/// connection that broke within that second fails its query, which the
/// caller sees as [`payment_application::StoreError::Unavailable`] and
/// retries as any outage.
#[must_use]
pub fn pool_options(max_connections: u32, acquire_timeout: Duration) -> MySqlPoolOptions {
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Applies pending migrations.
///
/// # Errors
/// When the database is unreachable or a migration fails (or an applied one
/// was edited: migrations are never changed once released).
pub async fn migrate(pool: &MySqlPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("apply database migrations")
}

/// Readiness: the database answers a trivial query.
#[derive(Debug, Clone)]
pub struct DatabaseProbe {
    pool: MySqlPool,
}

impl DatabaseProbe {
    #[must_use]
    pub const fn new(pool: MySqlPool) -> Self {
        Self { pool }
    }
}

impl HealthProbe for DatabaseProbe {
    fn name(&self) -> &'static str {
        "database"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

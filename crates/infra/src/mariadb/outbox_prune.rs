//! Pruning by age, of the two tables of outbound messages.
//!
//! `outbox`, in debezium relay mode: the service only writes its rows and
//! prunes the old ones (docs/operations.md, "Processes and relays").
//! Debezium reads the binlog, not the table: a row's INSERT is captured from
//! the binlog whenever the connector gets there, whether or not the row is
//! still in the table, and the router drops the DELETE
//! (`tombstones.on.delete=false`: nothing is published). So deleting rows by
//! age never loses an event, even while Connect is down; the retention only
//! keeps recent rows at hand for inspection. In embedded mode the outbox is
//! never pruned: the relay deletes each row once the broker acked it.
//!
//! `outbox_log`, in both modes: every message, kept for `outbox replay`
//! for as long as its retention says (days, not hours).
//!
//! Each statement deletes at most one batch, by primary-key range: the head
//! of the table in `seq` order is read without locks, and only its prefix of
//! rows older than the cut-off is deleted (`seq <= last AND created_at <
//! cut-off`). A `created_at` filter alone would scan, and under REPEATABLE
//! READ lock, every young row up to the end of the table — blocking the
//! inserts of the commands being served. An old row queued behind a younger
//! one (clocks of two instances apart) waits for the next rounds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use payment_application::StoreError;
use sqlx::MySqlPool;

use super::errors::SqlContext as _;

/// The append-only tables of outbound messages that are pruned by age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxTable {
    /// `outbox`: in debezium mode only (the embedded relay deletes what it
    /// published).
    Outbox,
    /// `outbox_log`: every message, kept for `outbox replay`, in both modes.
    Log,
}

impl OutboxTable {
    const fn name(self) -> &'static str {
        match self {
            Self::Outbox => "outbox",
            Self::Log => "outbox_log",
        }
    }
}

/// Deletes rows of one [`OutboxTable`] older than `retention`, `batch` rows
/// per statement.
#[derive(Debug, Clone)]
pub struct OutboxPruner {
    pool: MySqlPool,
    table: OutboxTable,
    retention: Duration,
    batch: u32,
}

impl OutboxPruner {
    #[must_use]
    pub const fn new(pool: MySqlPool, table: OutboxTable, retention: Duration, batch: u32) -> Self {
        Self {
            pool,
            table,
            retention,
            batch,
        }
    }

    /// Deletes the rows written more than `retention` ago; the number deleted.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Unexpected`] when the
    /// store fails; what was deleted so far stays deleted.
    pub async fn prune_once(&self) -> Result<usize, StoreError> {
        let retention = chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        let cutoff = Utc::now()
            .checked_sub_signed(retention)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut pruned = 0;
        loop {
            let table = self.table.name();
            let head: Vec<(u64, DateTime<Utc>)> = sqlx::query_as(&format!(
                "SELECT seq, created_at FROM {table} ORDER BY seq LIMIT ?"
            ))
            .bind(self.batch)
            .fetch_all(&self.pool)
            .await
            .store_context("read the head of an outbox table")?;
            let old = head
                .iter()
                .take_while(|(_, created_at)| *created_at < cutoff)
                .count();
            let Some(&(last, _)) = old.checked_sub(1).and_then(|i| head.get(i)) else {
                return Ok(pruned);
            };
            let deleted = sqlx::query(&format!(
                "DELETE FROM {table} WHERE seq <= ? AND created_at < ?"
            ))
            .bind(last)
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .store_context("prune an outbox table")?
            .rows_affected();
            pruned += usize::try_from(deleted).unwrap_or(usize::MAX);
            if old < head.len() || head.len() < self.batch as usize {
                return Ok(pruned);
            }
        }
    }
}

//! The `payments` projection rebuilt from `payment_events`, in batches of
//! payments: fold each stream with the domain's own `apply`, compare the
//! fold with the stored row, and (unless only verifying) rewrite the rows
//! that differ. Used by the `rebuild-projection` operator command.
//!
//! A rewrite never goes back in time: a row is replaced only while its
//! version is at most the fold's (`DELETE … WHERE version <= ?` then
//! `INSERT`, one transaction per batch), so a payment a live service
//! changed meanwhile keeps its newer row.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use payment_domain::{Payment, PaymentEvent, PaymentId};
use rust_decimal::Decimal;
use sqlx::MySqlPool;

use super::repository::{decode_event, insert_projection};

/// One stored event: version, type, data, when it was recorded.
type StoredEvent = (u64, String, String, DateTime<Utc>);

/// A payment folded from its events, and what its row says.
#[derive(Debug, Clone)]
pub struct Folded {
    pub payment_id: PaymentId,
    /// `Err`: the stream does not replay (reported, never written).
    pub payment: Result<Payment, String>,
    pub events: u64,
    /// When the last event was recorded (the row's `updated_at`).
    pub last_event_at: DateTime<Utc>,
    /// The columns that differ from the stored row (empty: equal); a
    /// missing row differs in every column (`row`).
    pub differences: Vec<&'static str>,
}

/// The stored columns that derive from the events.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    payment_id: String,
    order_id: String,
    user_id: String,
    amount: Decimal,
    balance_amount: Decimal,
    currency: String,
    status: String,
    payment_key: Option<String>,
    method: Option<String>,
    approved_at: Option<DateTime<Utc>>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    version: u64,
    created_at: DateTime<Utc>,
}

/// Timestamps as the column keeps them (microseconds, truncated).
fn micros(at: Option<DateTime<Utc>>) -> Option<i64> {
    at.map(|t| t.timestamp_micros())
}

fn differences(payment: &Payment, row: &Row) -> Vec<&'static str> {
    let failure = payment.failure();
    let checks = [
        ("order_id", payment.order_id().as_str() == row.order_id),
        ("user_id", payment.user_id().as_str() == row.user_id),
        ("amount", payment.amount().amount() == row.amount),
        (
            "balance_amount",
            payment.balance().amount() == row.balance_amount,
        ),
        (
            "currency",
            payment.amount().currency().code() == row.currency,
        ),
        ("status", payment.status().as_str() == row.status),
        (
            "payment_key",
            payment.payment_key().map(|k| k.as_str()) == row.payment_key.as_deref(),
        ),
        ("method", payment.method() == row.method.as_deref()),
        (
            "approved_at",
            micros(payment.approved_at()) == micros(row.approved_at),
        ),
        (
            "failure_code",
            failure.map(|f| f.code.as_str()) == row.failure_code.as_deref(),
        ),
        (
            "failure_message",
            failure.map(|f| f.message.as_str()) == row.failure_message.as_deref(),
        ),
        ("version", payment.version() == row.version),
        (
            "created_at",
            micros(Some(payment.created_at())) == micros(Some(row.created_at)),
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, equal)| !equal)
        .map(|(column, _)| column)
        .collect()
}

/// The projection's rebuilder. Cheap to clone (it holds a pool).
#[derive(Debug, Clone)]
pub struct ProjectionRebuild {
    pool: MySqlPool,
}

impl ProjectionRebuild {
    #[must_use]
    pub const fn new(pool: MySqlPool) -> Self {
        Self { pool }
    }

    /// How many events there are to fold (for the progress bar).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn event_count(&self) -> anyhow::Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_events")
            .fetch_one(&self.pool)
            .await
            .context("count events")?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    /// Up to `limit` payment ids after `after`, in id order.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn next_payments(
        &self,
        after: Option<PaymentId>,
        limit: u32,
    ) -> anyhow::Result<Vec<PaymentId>> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT payment_id FROM payment_events WHERE payment_id > ? \
             ORDER BY payment_id LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("list payments")?;
        ids.iter()
            .map(|id| id.parse().context("payment_events.payment_id"))
            .collect()
    }

    /// Folds the streams of `ids` and compares each with its row.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn fold(&self, ids: &[PaymentId]) -> anyhow::Result<Vec<Folded>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let events_sql = format!(
            "SELECT payment_id, version, event_type, data, occurred_at FROM payment_events \
             WHERE payment_id IN ({marks}) ORDER BY payment_id, version"
        );
        let mut query =
            sqlx::query_as::<_, (String, u64, String, String, DateTime<Utc>)>(&events_sql);
        for id in ids {
            query = query.bind(id.to_string());
        }
        let mut streams: BTreeMap<String, Vec<StoredEvent>> = BTreeMap::new();
        for (payment_id, version, event_type, data, at) in
            query.fetch_all(&self.pool).await.context("read events")?
        {
            streams
                .entry(payment_id)
                .or_default()
                .push((version, event_type, data, at));
        }
        let rows_sql = format!(
            "SELECT payment_id, CAST(order_id AS CHAR) AS order_id, user_id, amount, \
             balance_amount, currency, status, CAST(payment_key AS CHAR) AS payment_key, method, approved_at, failure_code, failure_message, version, created_at \
             FROM payments WHERE payment_id IN ({marks})"
        );
        let mut query = sqlx::query_as::<_, Row>(&rows_sql);
        for id in ids {
            query = query.bind(id.to_string());
        }
        let mut rows: BTreeMap<String, Row> = query
            .fetch_all(&self.pool)
            .await
            .context("read projection")?
            .into_iter()
            .map(|row| (row.payment_id.clone(), row))
            .collect();
        let mut folded = Vec::with_capacity(ids.len());
        for id in ids {
            let key = id.to_string();
            let stream = streams.remove(&key).unwrap_or_default();
            let last_event_at = stream.last().map_or_else(Utc::now, |(_, _, _, at)| *at);
            let payment = replay(&stream);
            let differences = match (&payment, rows.remove(&key)) {
                (Ok(payment), Some(row)) => differences(payment, &row),
                (Ok(_), None) => vec!["row"],
                (Err(_), _) => Vec::new(),
            };
            folded.push(Folded {
                payment_id: *id,
                payment,
                events: u64::try_from(stream.len()).unwrap_or_default(),
                last_event_at,
                differences,
            });
        }
        Ok(folded)
    }

    /// Rewrites the rows of `folded` that differ, in one transaction;
    /// answers how many were written (a row a live writer moved past the
    /// fold is left as it is).
    ///
    /// # Errors
    /// When the database fails (nothing of the batch is written).
    pub async fn rewrite(&self, folded: &[Folded]) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await.context("begin transaction")?;
        let mut written = 0;
        for one in folded.iter().filter(|f| !f.differences.is_empty()) {
            let Ok(payment) = &one.payment else { continue };
            sqlx::query("DELETE FROM payments WHERE payment_id = ? AND version <= ?")
                .bind(payment.id().to_string())
                .bind(payment.version())
                .execute(&mut *tx)
                .await
                .context("replace projection row")?;
            let newer: Option<u64> =
                sqlx::query_scalar("SELECT version FROM payments WHERE payment_id = ?")
                    .bind(payment.id().to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .context("read projection row")?;
            if newer.is_none() {
                insert_projection(&mut tx, payment, one.last_event_at)
                    .await
                    .context("write projection row")?;
                written += 1;
            }
        }
        tx.commit().await.context("commit transaction")?;
        Ok(written)
    }
}

fn replay(stream: &[StoredEvent]) -> Result<Payment, String> {
    let events = stream
        .iter()
        .zip(1_u64..)
        .map(|((version, event_type, data, _), expected)| {
            if *version != expected {
                return Err(format!("version {version} where {expected} was expected"));
            }
            decode_event(event_type, data).map_err(|e| format!("{e:#}"))
        })
        .collect::<Result<Vec<PaymentEvent>, String>>()?;
    Payment::replay(&events).map_err(|e| e.to_string())
}

//! `payment-service outbox replay`: republishes integration events from
//! `outbox_log`, where the repository keeps every outbox message (same
//! values, same transaction) after its outbox row is relayed and deleted.
//!
//! A message is sent exactly as the relay sends it — the same code
//! ([`crate::outbox::publish_in_order`]): topic = `aggregatetype`, key =
//! `aggregateid`, value = the CloudEvent text as committed, headers `id`,
//! `eventType`, `traceparent`, record timestamp = `created_at` — so the
//! consumers, which deduplicate on the event id, see a redelivery and
//! nothing else. Messages go out in log order (commit order), one
//! aggregate's after another's as the relay does, a batch at a time.
//!
//! Events committed before the log existed (its migration) have no logged
//! message: they cannot be republished, and [`OutboxReplay::predating`]
//! counts them.

use std::collections::HashSet;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rdkafka::producer::FutureProducer;
use sqlx::{MySql, MySqlPool, QueryBuilder};
use uuid::Uuid;

use crate::outbox::{publish_in_order, OutboxRow};

/// The migration that created `outbox_log`: messages are logged since it
/// was applied.
const LOG_MIGRATION: i64 = 20_261_203_000_001;

/// Which logged messages to republish (all conditions hold).
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Committed at or after.
    pub since: Option<DateTime<Utc>>,
    /// Committed before.
    pub until: Option<DateTime<Utc>>,
    /// Only these event ids (the CloudEvent `id`, the `id` header).
    pub event_ids: Vec<Uuid>,
    /// Only to these topics.
    pub topics: Vec<String>,
    /// Only up to this seq (what was logged when the replay began).
    pub through_seq: Option<u64>,
}

/// One republished (or not acked) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub seq: u64,
    pub id: String,
    pub topic: String,
}

/// What one batch did.
#[derive(Debug, Clone, Default)]
pub struct ReplayBatch {
    /// Acked by the broker, in log order.
    pub published: Vec<Replayed>,
    /// The first message the broker did not ack (then the batch's later
    /// messages of its aggregate were not sent either): the replay stops.
    pub unacked: Option<Replayed>,
    /// The last seq read: the next batch starts after it (`None`: done).
    pub last_seq: Option<u64>,
}

/// Reads `outbox_log` and republishes it.
pub struct OutboxReplay {
    pool: MySqlPool,
    producer: FutureProducer,
}

impl std::fmt::Debug for OutboxReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxReplay").finish_non_exhaustive()
    }
}

fn push_filter(query: &mut QueryBuilder<'_, MySql>, filter: &ReplayFilter) {
    if let Some(through) = filter.through_seq {
        query.push(" AND seq <= ").push_bind(through);
    }
    if let Some(since) = filter.since {
        query.push(" AND created_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        query.push(" AND created_at < ").push_bind(until);
    }
    if !filter.event_ids.is_empty() {
        query.push(" AND id IN (");
        let mut ids = query.separated(", ");
        for id in &filter.event_ids {
            ids.push_bind(id.to_string());
        }
        query.push(")");
    }
    if !filter.topics.is_empty() {
        query.push(" AND aggregatetype IN (");
        let mut topics = query.separated(", ");
        for topic in &filter.topics {
            topics.push_bind(topic.clone());
        }
        query.push(")");
    }
}

impl OutboxReplay {
    #[must_use]
    pub const fn new(pool: MySqlPool, producer: FutureProducer) -> Self {
        Self { pool, producer }
    }

    /// The last seq logged so far (0: none).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn last_seq(&self) -> anyhow::Result<u64> {
        let last: Option<u64> = sqlx::query_scalar("SELECT MAX(seq) FROM outbox_log")
            .fetch_one(&self.pool)
            .await
            .context("read the outbox log's end")?;
        Ok(last.unwrap_or_default())
    }

    /// How many logged messages match.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn count(&self, filter: &ReplayFilter) -> anyhow::Result<u64> {
        let mut query = QueryBuilder::new("SELECT COUNT(*) FROM outbox_log WHERE 1 = 1");
        push_filter(&mut query, filter);
        let count: i64 = query
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .context("count logged outbox messages")?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    /// The seq the replay starts after: just before the first match, found
    /// through the `created_at` index rather than by reading the log from
    /// its start.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn start(&self, filter: &ReplayFilter) -> anyhow::Result<u64> {
        let mut query = QueryBuilder::new("SELECT MIN(seq) FROM outbox_log WHERE 1 = 1");
        push_filter(&mut query, filter);
        let first: Option<u64> = query
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .context("find the first logged message")?;
        Ok(first.map_or(u64::MAX, |seq| seq.saturating_sub(1)))
    }

    /// The asked-for event ids that are not in the log.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn missing(&self, event_ids: &[Uuid]) -> anyhow::Result<Vec<Uuid>> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::new("SELECT id FROM outbox_log WHERE 1 = 1");
        push_filter(
            &mut query,
            &ReplayFilter {
                event_ids: event_ids.to_vec(),
                ..ReplayFilter::default()
            },
        );
        let found: Vec<String> = query
            .build_query_scalar()
            .fetch_all(&self.pool)
            .await
            .context("look the event ids up")?;
        Ok(event_ids
            .iter()
            .filter(|id| !found.contains(&id.to_string()))
            .copied()
            .collect())
    }

    /// Since when the log holds every message — the later of when logging
    /// began and its oldest row (older ones were pruned by its retention) —
    /// and how many payment events in `[since, until)` were committed
    /// before that (their messages cannot be republished). `None` when the
    /// window starts after it.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn predating(
        &self,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Option<(DateTime<Utc>, u64)>> {
        let logged_since: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT installed_on FROM _sqlx_migrations WHERE version = ?")
                .bind(LOG_MIGRATION)
                .fetch_optional(&self.pool)
                .await
                .context("read when the outbox log began")?;
        let oldest: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT MIN(created_at) FROM outbox_log")
                .fetch_one(&self.pool)
                .await
                .context("read the oldest logged message")?;
        let logged_since = match (logged_since, oldest) {
            (Some(began), Some(oldest)) => Some(began.max(oldest)),
            (began, oldest) => began.or(oldest),
        };
        let Some(logged_since) = logged_since.filter(|at| since < *at) else {
            return Ok(None);
        };
        let end = until.map_or(logged_since, |until| until.min(logged_since));
        let events: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM payment_events WHERE occurred_at >= ? AND occurred_at < ?",
        )
        .bind(since)
        .bind(end)
        .fetch_one(&self.pool)
        .await
        .context("count the events older than the outbox log")?;
        Ok(Some((
            logged_since,
            u64::try_from(events).unwrap_or_default(),
        )))
    }

    /// Republishes up to `limit` matching messages after `after` (a seq),
    /// waiting for the broker's acks.
    ///
    /// # Errors
    /// When the database fails (nothing of this batch was sent).
    pub async fn replay_batch(
        &self,
        filter: &ReplayFilter,
        after: u64,
        limit: u32,
    ) -> anyhow::Result<ReplayBatch> {
        let mut query = QueryBuilder::new(
            "SELECT seq, id, aggregatetype, aggregateid, type, payload, traceparent, created_at \
             FROM outbox_log WHERE seq > ",
        );
        query.push_bind(after);
        push_filter(&mut query, filter);
        query.push(" ORDER BY seq LIMIT ").push_bind(limit);
        let rows: Vec<OutboxRow> = query
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .context("read logged outbox messages")?;
        let Some(last) = rows.last() else {
            return Ok(ReplayBatch::default());
        };
        let last_seq = Some(last.seq);
        let batch: Vec<&OutboxRow> = rows.iter().collect();
        let acked: HashSet<u64> = publish_in_order(&self.producer, &batch)
            .await
            .into_iter()
            .collect();
        let replayed = |row: &OutboxRow| Replayed {
            seq: row.seq,
            id: row.id.clone(),
            topic: row.aggregatetype.clone(),
        };
        Ok(ReplayBatch {
            published: rows
                .iter()
                .filter(|row| acked.contains(&row.seq))
                .map(replayed)
                .collect(),
            unacked: rows
                .iter()
                .find(|row| !acked.contains(&row.seq))
                .map(replayed),
            last_seq,
        })
    }
}

//! The embedded outbox relay: moves committed `outbox` rows to Kafka.
//!
//! Each round claims the oldest rows with `FOR UPDATE SKIP LOCKED` (so
//! several service instances never claim the same row), publishes them with
//! the idempotent producer (topic = `aggregatetype`, key = `aggregateid`,
//! value = the CloudEvent; headers `id`, `eventType`, `traceparent`; record
//! timestamp = the row's `created_at`), waits for the broker's acks, and deletes exactly the acked rows in the same
//! transaction. Dying between publish and delete republishes the same event
//! id later: duplicates are possible, losses are not.
//!
//! Per-aggregate order holds across instances too: a claimed row is held
//! back while an older row of the same aggregate is claimed by someone else.
//! And within a round: an aggregate's rows are sent one after another, and
//! a row that is not acked holds back the aggregate's later rows (they are
//! neither sent nor deleted), so a failed send is never overtaken.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use sqlx::{Acquire as _, MySqlPool, QueryBuilder};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How the relay paces itself.
#[derive(Debug, Clone, Copy)]
pub struct RelaySettings {
    /// Rows claimed per round.
    pub batch_size: u32,
    /// Fallback poll when no local commit wakes the relay (rows written by
    /// another instance, or a failed round).
    pub poll_interval: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 200,
            poll_interval: Duration::from_millis(500),
        }
    }
}

pub struct OutboxRelay {
    pool: MySqlPool,
    producer: FutureProducer,
    settings: RelaySettings,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// An outbox row (or its copy in `outbox_log`), as it is published.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OutboxRow {
    pub(crate) seq: u64,
    pub(crate) id: String,
    pub(crate) aggregatetype: String,
    pub(crate) aggregateid: String,
    #[sqlx(rename = "type")]
    pub(crate) event_type: String,
    pub(crate) payload: String,
    pub(crate) traceparent: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
}

impl OutboxRelay {
    /// `wake` is notified by the repository whenever this process commits
    /// outbox rows.
    #[must_use]
    pub const fn new(
        pool: MySqlPool,
        producer: FutureProducer,
        settings: RelaySettings,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            producer,
            settings,
            wake,
        }
    }

    /// Relays until `shutdown`, then flushes the producer.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(
            batch_size = self.settings.batch_size,
            "outbox relay started"
        );
        loop {
            let full_batch = match self.relay_once().await {
                Ok(published) => published == self.settings.batch_size as usize,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "outbox relay round failed; retrying"
                    );
                    metrics::counter!("outbox_relay_failures_total").increment(1);
                    false
                }
            };
            if full_batch && !shutdown.is_cancelled() {
                continue; // more rows are waiting
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        if let Err(error) = self.producer.flush(Duration::from_secs(10)) {
            tracing::warn!(%error, "producer flush at shutdown failed");
        }
        tracing::info!("outbox relay stopped");
    }

    /// One round: claim, publish, wait for acks, delete the acked rows.
    /// Answers how many rows were published.
    ///
    /// # Errors
    /// When the database fails; rows not deleted are published again later.
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let mut connection = self.pool.acquire().await.context("acquire connection")?;
        // Read the latest commits (not a snapshot) when checking for older
        // rows held by other instances.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *connection)
            .await
            .context("set isolation level")?;
        let mut tx = connection
            .begin()
            .await
            .context("begin relay transaction")?;
        let claimed: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, id, aggregatetype, aggregateid, type, payload, traceparent, created_at \
             FROM outbox ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&mut *tx)
        .await
        .context("claim outbox rows")?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let held_back = held_back_by_others(&mut tx, &claimed).await?;
        let ready: Vec<&OutboxRow> = claimed
            .iter()
            .filter(|row| {
                held_back
                    .get(row.aggregateid.as_str())
                    .is_none_or(|&first| row.seq < first)
            })
            .collect();

        let published = publish_in_order(&self.producer, &ready).await;
        delete_published(&mut tx, &published).await?;
        tx.commit().await.context("commit relay transaction")?;
        metrics::counter!("outbox_published_total").increment(published.len() as u64);
        Ok(published.len())
    }
}

/// Sends the rows (the relay's, or `outbox replay`'s), each aggregate's
/// one after another (the aggregates side by side), and answers the acked
/// seqs. Once a row is not acked, the later rows of its aggregate are not
/// sent this round: they wait, in the table, behind it.
pub(crate) async fn publish_in_order(producer: &FutureProducer, rows: &[&OutboxRow]) -> Vec<u64> {
    let mut by_aggregate: HashMap<&str, Vec<&OutboxRow>> = HashMap::new();
    for row in rows {
        by_aggregate.entry(&row.aggregateid).or_default().push(row);
    }
    let sends = by_aggregate.into_values().map(|rows| async move {
        let mut acked = Vec::with_capacity(rows.len());
        for (sent, row) in rows.iter().enumerate() {
            match send(producer, row).await {
                Ok(()) => acked.push(row.seq),
                Err(error) => {
                    tracing::warn!(
                        seq = row.seq,
                        aggregate = row.aggregateid,
                        held_back = rows.len() - sent - 1,
                        %error,
                        "outbox row not acked; it and its aggregate's later rows are held back"
                    );
                    break;
                }
            }
        }
        acked
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Sends one row and waits for the broker's ack.
async fn send(
    producer: &FutureProducer,
    row: &OutboxRow,
) -> Result<(), rdkafka::error::KafkaError> {
    // As Debezium's Outbox Event Router puts them: `traceparent` is
    // always there, with no value when the row has none.
    let headers = OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: "id",
            value: Some(row.id.as_str()),
        })
        .insert(Header {
            key: "eventType",
            value: Some(row.event_type.as_str()),
        })
        .insert(Header {
            key: "traceparent",
            value: row.traceparent.as_deref(),
        });
    // Debezium truncates DATETIME(6) to milliseconds, and so do we.
    let record = FutureRecord::to(&row.aggregatetype)
        .key(&row.aggregateid)
        .payload(&row.payload)
        .headers(headers)
        .timestamp(row.created_at.timestamp_millis());
    // `send` waits for room in the local queue, then for the ack.
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(drop)
        .map_err(|(error, _)| error)
}

/// Deletes the acked rows in one statement. The seqs come in as a JSON
/// array, and the join is forced to start from it (`STRAIGHT_JOIN`), so
/// every row is found by one primary-key lookup (`eq_ref`) whatever the
/// table's statistics say: a plain `seq IN (…)` is planned as a full scan
/// when the table looks small, and a scan would lock (and deadlock on) the
/// rows another instance has claimed.
async fn delete_published(
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    published: &[u64],
) -> anyhow::Result<()> {
    if published.is_empty() {
        return Ok(());
    }
    let seqs = serde_json::to_string(published).context("encode published seqs")?;
    sqlx::query(
        "DELETE o FROM JSON_TABLE(?, '$[*]' COLUMNS (seq BIGINT UNSIGNED PATH '$')) AS v \
         STRAIGHT_JOIN outbox AS o ON o.seq = v.seq",
    )
    .bind(seqs)
    .execute(&mut **tx)
    .await
    .context("delete published rows")?;
    Ok(())
}

/// For each claimed aggregate, the first seq of a row of that aggregate that
/// is NOT ours (claimed by another instance) and older than our newest row:
/// our rows from there on must wait.
async fn held_back_by_others(
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    claimed: &[OutboxRow],
) -> anyhow::Result<HashMap<String, u64>> {
    let ours: HashSet<u64> = claimed.iter().map(|row| row.seq).collect();
    let newest = claimed.iter().map(|row| row.seq).max().unwrap_or(0);
    let mut query = QueryBuilder::new("SELECT seq, aggregateid FROM outbox WHERE seq <= ");
    query.push_bind(newest).push(" AND aggregateid IN (");
    let mut ids = query.separated(", ");
    let distinct: HashSet<&str> = claimed.iter().map(|row| row.aggregateid.as_str()).collect();
    for id in distinct {
        ids.push_bind(id);
    }
    query.push(") ORDER BY seq");
    let rows: Vec<(u64, String)> = query
        .build_query_as()
        .fetch_all(&mut **tx)
        .await
        .context("check older rows of the claimed aggregates")?;
    let mut first_foreign = HashMap::new();
    for (seq, aggregate) in rows {
        if !ours.contains(&seq) {
            first_foreign.entry(aggregate).or_insert(seq);
        }
    }
    Ok(first_foreign)
}

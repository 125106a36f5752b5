//! [`PaymentRepository`] (the command side) and [`PaymentQueries`] (the
//! reads) on MariaDB. The transaction boundary of every command lives here:
//! one [`PaymentRepository::commit`] call is one `BEGIN … COMMIT` writing the
//! inbox record, the events, the projection, the gateway transactions and
//! the outbox rows; any failure rolls all of it back.

use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use payment_application::{
    Append, Commit, Due, InboxEntry, OutboxMessage, PaymentQueries, PaymentRef, PaymentRepository,
    RecordedEvent, RetrySchedule, Scheduled, Snapshot, Stale, StoreError,
};
use payment_domain::{
    Currency, Money, OrderId, Payment, PaymentEvent, PaymentId, PaymentStatus, PaymentTransaction,
    TransactionKind, TransactionStatus,
};
use rust_decimal::Decimal;
use sqlx::{MySql, MySqlPool, QueryBuilder, Transaction};
use tokio::sync::Notify;

use super::errors::{classify, store_error, DbFailure, SqlContext as _};

/// The MariaDB adapter. Cheap to clone (it holds a pool).
#[derive(Debug, Clone)]
pub struct MariaDbPaymentRepository {
    pool: MySqlPool,
    outbox_committed: Option<Arc<Notify>>,
}

impl MariaDbPaymentRepository {
    #[must_use]
    pub const fn new(pool: MySqlPool) -> Self {
        Self {
            pool,
            outbox_committed: None,
        }
    }

    /// Notifies `signal` after every commit that wrote outbox rows, so the
    /// embedded relay publishes them at once instead of at its next poll.
    #[must_use]
    pub fn notifying(mut self, signal: Arc<Notify>) -> Self {
        self.outbox_committed = Some(signal);
        self
    }

    async fn insert_inbox(
        tx: &mut Transaction<'_, MySql>,
        entry: &InboxEntry,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO inbox (consumer, message_id, processed_at) VALUES (?, ?, ?)")
            .bind(&entry.consumer)
            .bind(&entry.message_id)
            .bind(at)
            .execute(&mut **tx)
            .await
            .map_err(|e| match classify(&e) {
                DbFailure::Duplicate(_) => StoreError::AlreadyProcessed(entry.clone()),
                _ => store_error(e, "insert inbox record"),
            })?;
        Ok(())
    }

    async fn append(tx: &mut Transaction<'_, MySql>, append: &Append) -> Result<(), StoreError> {
        let payment = &append.state;
        let payment_id = payment.id();
        let conflict = || StoreError::Conflict {
            payment_id,
            expected_version: append.expected_version,
        };
        check_versions(append)?;
        for (version, event) in (append.expected_version + 1..).zip(&append.events) {
            let data = event_data(event)?;
            sqlx::query(
                "INSERT INTO payment_events (payment_id, version, event_type, data, occurred_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(payment_id.to_string())
            .bind(version)
            .bind(event.event_type())
            .bind(data)
            .bind(append.occurred_at)
            .execute(&mut **tx)
            .await
            .map_err(|e| match classify(&e) {
                DbFailure::Duplicate(_) | DbFailure::Deadlock => conflict(),
                _ => store_error(e, "append event"),
            })?;
        }
        if append.expected_version == 0 {
            insert_projection(tx, payment, append.occurred_at).await
        } else {
            update_projection(tx, payment, append.expected_version, append.occurred_at).await
        }
        .map_err(|e| match classify(&e) {
            DbFailure::Duplicate(key) if key.contains("uq_payments_order_id") => {
                StoreError::DuplicateOrder(payment.order_id().clone())
            }
            DbFailure::Duplicate(_) | DbFailure::Deadlock => conflict(),
            _ => store_error(e, "write payment projection"),
        })
        .and_then(|rows| if rows == 1 { Ok(()) } else { Err(conflict()) })
    }

    /// Deletes the inbox records of messages processed before
    /// `processed_before`, a chunk at a time (short locks); answers how many.
    /// A message redelivered after its record is gone would be applied
    /// again, so the retention must outlast any redelivery: the topics'
    /// retention, or how far back an operator may reset a consumer group.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Unexpected`] when the
    /// store fails; what was deleted so far stays deleted.
    pub async fn prune_inbox(&self, processed_before: DateTime<Utc>) -> Result<u64, StoreError> {
        const CHUNK: u64 = 5_000;
        let mut pruned = 0;
        loop {
            let deleted = sqlx::query("DELETE FROM inbox WHERE processed_at < ? LIMIT ?")
                .bind(processed_before)
                .bind(CHUNK)
                .execute(&self.pool)
                .await
                .store_context("prune inbox")?
                .rows_affected();
            pruned += deleted;
            if deleted < CHUNK {
                return Ok(pruned);
            }
        }
    }
}

/// Refuses an append whose state does not fold exactly its events onto
/// the expected version (a bug in the caller, never written).
fn check_versions(append: &Append) -> Result<(), StoreError> {
    let appended = u64::try_from(append.events.len())
        .context("event count")
        .map_err(StoreError::Unexpected)?;
    if append.expected_version + appended == append.state.version() {
        Ok(())
    } else {
        Err(StoreError::Unexpected(anyhow::anyhow!(
            "state version {} does not follow version {} plus {appended} events",
            append.state.version(),
            append.expected_version
        )))
    }
}

/// A payment as its projection row keeps it (`state`, the fold's JSON).
fn projected(id: PaymentId, state: &str) -> Result<Payment, StoreError> {
    serde_json::from_str(state)
        .with_context(|| format!("payment {id}: unreadable projected state"))
        .map_err(StoreError::Unexpected)
}

/// The `state` column of a payment's row.
fn state_json(payment: &Payment) -> Result<String, sqlx::Error> {
    serde_json::to_string(payment).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// The fold of a stored stream (`None` when it is empty).
fn replay(id: PaymentId, history: &[RecordedEvent]) -> Result<Option<Payment>, StoreError> {
    if history.is_empty() {
        return Ok(None);
    }
    Payment::replay(history.iter().map(|recorded| &recorded.event))
        .map(Some)
        .with_context(|| format!("replay payment {id}"))
        .map_err(StoreError::Unexpected)
}

impl PaymentRepository for MariaDbPaymentRepository {
    async fn load(&self, which: &PaymentRef) -> Result<Option<Snapshot>, StoreError> {
        let (id, history) = match which {
            PaymentRef::Id(id) => (*id, self.events(*id).await?),
            // The stream through the order index: one round trip, not two.
            PaymentRef::Order(order_id) => {
                let rows: Vec<OrderEventRow> = sqlx::query_as(
                    "SELECT e.payment_id, e.version, e.event_type, e.data, e.occurred_at \
                     FROM payments p JOIN payment_events e ON e.payment_id = p.payment_id \
                     WHERE p.order_id = ? ORDER BY e.version",
                )
                .bind(order_id.as_str())
                .fetch_all(&self.pool)
                .await
                .store_context("read payment events by order")?;
                let Some(first) = rows.first() else {
                    return Ok(None);
                };
                let id: PaymentId = first
                    .payment_id
                    .parse()
                    .context("stored payment id")
                    .map_err(StoreError::Unexpected)?;
                (id, recorded(id, rows.into_iter().map(|row| row.event))?)
            }
        };
        let Some(payment) = replay(id, &history)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            payment,
            history,
            transactions: self.transactions(id).await?,
        }))
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let now = commit
            .append
            .as_ref()
            .map_or_else(Utc::now, |a| a.occurred_at);
        let mut tx = self.pool.begin().await.store_context("begin transaction")?;
        if let Some(entry) = &commit.inbox {
            Self::insert_inbox(&mut tx, entry, now).await?;
        }
        if let Some(append) = &commit.append {
            Self::append(&mut tx, append).await?;
        }
        for transaction in &commit.transactions {
            upsert_transaction(&mut tx, transaction)
                .await
                .store_context("write payment transaction")?;
        }
        for message in &commit.outbox {
            insert_outbox(&mut tx, message)
                .await
                .store_context("write outbox message")?;
        }
        tx.commit().await.store_context("commit transaction")?;
        if let Some(signal) = self
            .outbox_committed
            .as_ref()
            .filter(|_| !commit.outbox.is_empty())
        {
            signal.notify_one();
        }
        Ok(())
    }

    /// One `BEGIN … COMMIT` for all of `commits`, each table written with
    /// one multi-row statement (the projection's updates one by one, under
    /// their version guard): the round trips of one command, whatever the
    /// batch's size.
    async fn commit_all(&self, commits: Vec<Commit>) -> Result<(), StoreError> {
        if commits.len() <= 1 {
            return match commits.into_iter().next() {
                Some(commit) => self.commit(commit).await,
                None => Ok(()),
            };
        }
        let now = Utc::now();
        let mut tx = self.pool.begin().await.store_context("begin transaction")?;
        let inbox: Vec<&InboxEntry> = commits.iter().filter_map(|c| c.inbox.as_ref()).collect();
        insert_inbox_rows(&mut tx, &inbox, now).await?;
        let appends: Vec<&Append> = commits.iter().filter_map(|c| c.append.as_ref()).collect();
        append_all(&mut tx, &appends).await?;
        for transaction in commits.iter().flat_map(|c| &c.transactions) {
            upsert_transaction(&mut tx, transaction)
                .await
                .store_context("write payment transaction")?;
        }
        let outbox: Vec<&OutboxMessage> = commits.iter().flat_map(|c| &c.outbox).collect();
        insert_outbox_rows(&mut tx, &outbox)
            .await
            .store_context("write outbox messages")?;
        tx.commit().await.store_context("commit transaction")?;
        if let Some(signal) = self
            .outbox_committed
            .as_ref()
            .filter(|_| !outbox.is_empty())
        {
            signal.notify_one();
        }
        Ok(())
    }
}

/// The inbox records of a batch, in one statement; a duplicate names the
/// message handled before.
async fn insert_inbox_rows(
    tx: &mut Transaction<'_, MySql>,
    entries: &[&InboxEntry],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut insert =
        QueryBuilder::<MySql>::new("INSERT INTO inbox (consumer, message_id, processed_at) ");
    insert.push_values(entries, |mut row, entry| {
        row.push_bind(&entry.consumer)
            .push_bind(&entry.message_id)
            .push_bind(at);
    });
    insert
        .build()
        .execute(&mut **tx)
        .await
        .map_err(|e| match classify(&e) {
            DbFailure::Duplicate(message) => StoreError::AlreadyProcessed(
                (*named_in(&message, entries, |entry| {
                    format!("'{}-{}'", entry.consumer, entry.message_id)
                }))
                .clone(),
            ),
            _ => store_error(e, "insert inbox records"),
        })?;
    Ok(())
}

/// The events and projection rows of a batch's appends (distinct
/// payments): every event in one statement, the new payments' rows in
/// another, each existing payment's row updated under its version guard.
async fn append_all(
    tx: &mut Transaction<'_, MySql>,
    appends: &[&Append],
) -> Result<(), StoreError> {
    let conflict = |append: &Append| StoreError::Conflict {
        payment_id: append.state.id(),
        expected_version: append.expected_version,
    };
    let mut events = Vec::new();
    for append in appends {
        check_versions(append)?;
        for (version, event) in (append.expected_version + 1..).zip(&append.events) {
            events.push((append, version, event, event_data(event)?));
        }
    }
    if !events.is_empty() {
        let mut insert = QueryBuilder::<MySql>::new(
            "INSERT INTO payment_events (payment_id, version, event_type, data, occurred_at) ",
        );
        insert.push_values(&events, |mut row, (append, version, event, data)| {
            row.push_bind(append.state.id().to_string())
                .push_bind(*version)
                .push_bind(event.event_type())
                .push_bind(data)
                .push_bind(append.occurred_at);
        });
        insert
            .build()
            .execute(&mut **tx)
            .await
            .map_err(|e| match classify(&e) {
                DbFailure::Duplicate(message) => conflict(named_in(&message, appends, |a| {
                    format!("'{}-", a.state.id())
                })),
                DbFailure::Deadlock => conflict(appends[0]),
                _ => store_error(e, "append events"),
            })?;
    }
    let (created, changed): (Vec<&Append>, Vec<&Append>) =
        appends.iter().partition(|a| a.expected_version == 0);
    if !created.is_empty() {
        let rows: Vec<_> = created.iter().map(|a| (&a.state, a.occurred_at)).collect();
        let written = insert_projections(tx, &rows)
            .await
            .map_err(|e| match classify(&e) {
                DbFailure::Duplicate(message) if message.contains("uq_payments_order_id") => {
                    let append = named_in(&message, &created, |a| {
                        format!("'{}'", a.state.order_id().as_str())
                    });
                    StoreError::DuplicateOrder(append.state.order_id().clone())
                }
                DbFailure::Duplicate(_) | DbFailure::Deadlock => conflict(created[0]),
                _ => store_error(e, "write payment projections"),
            })?;
        if written != rows.len() as u64 {
            return Err(conflict(created[0]));
        }
    }
    for append in changed {
        let rows = update_projection(
            tx,
            &append.state,
            append.expected_version,
            append.occurred_at,
        )
        .await
        .map_err(|e| match classify(&e) {
            DbFailure::Duplicate(_) | DbFailure::Deadlock => conflict(append),
            _ => store_error(e, "write payment projection"),
        })?;
        if rows != 1 {
            return Err(conflict(append));
        }
    }
    Ok(())
}

/// The item of `items` a duplicate-key `message` names (its `quoted`
/// value appears in it), else the first.
fn named_in<'a, T>(message: &str, items: &'a [&'a T], quoted: impl Fn(&T) -> String) -> &'a T {
    items
        .iter()
        .find(|item| message.contains(&quoted(item)))
        .unwrap_or(&items[0])
}

/// The batch's outbox rows, in one statement and in order (`seq` follows
/// the order of the rows), and their copies in `outbox_log`, which outlive
/// the relay (`outbox replay` republishes from there).
async fn insert_outbox_rows(
    tx: &mut Transaction<'_, MySql>,
    messages: &[&OutboxMessage],
) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    // One text for both tables: the log keeps the very bytes published.
    let payloads: Vec<String> = messages.iter().map(|m| m.payload.to_string()).collect();
    for table in ["outbox", "outbox_log"] {
        let mut insert = QueryBuilder::<MySql>::new(format!(
            "INSERT INTO {table} (id, aggregatetype, aggregateid, type, payload, traceparent, \
             created_at) "
        ));
        insert.push_values(
            messages.iter().zip(&payloads),
            |mut row, (message, payload)| {
                row.push_bind(message.id.to_string())
                    .push_bind(&message.topic)
                    .push_bind(&message.key)
                    .push_bind(&message.event_type)
                    .push_bind(payload)
                    .push_bind(message.traceparent.as_deref())
                    .push_bind(message.created_at);
            },
        );
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

impl PaymentQueries for MariaDbPaymentRepository {
    /// The projection's row (one primary-key lookup); a row written before
    /// the `state` column existed is replayed from the stream.
    async fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        let state: Option<Option<String>> =
            sqlx::query_scalar("SELECT state FROM payments WHERE payment_id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .store_context("read payment")?;
        match state {
            None => Ok(None),
            Some(Some(state)) => projected(id, &state).map(Some),
            Some(None) => replay(id, &self.events(id).await?),
        }
    }

    /// As [`PaymentQueries::payment`], through the unique order index.
    async fn find_by_order(&self, order_id: &OrderId) -> Result<Option<Payment>, StoreError> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT payment_id, state FROM payments WHERE order_id = ?")
                .bind(order_id.as_str())
                .fetch_optional(&self.pool)
                .await
                .store_context("find payment by order id")?;
        let Some((id, state)) = row else {
            return Ok(None);
        };
        let id: PaymentId = id
            .parse()
            .context("stored payment id")
            .map_err(StoreError::Unexpected)?;
        match state {
            Some(state) => projected(id, &state).map(Some),
            None => replay(id, &self.events(id).await?),
        }
    }

    async fn events(&self, id: PaymentId) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT version, event_type, data, occurred_at FROM payment_events \
             WHERE payment_id = ? ORDER BY version",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await
        .store_context("read payment events")?;
        recorded(id, rows)
    }

    async fn transactions(&self, id: PaymentId) -> Result<Vec<PaymentTransaction>, StoreError> {
        let rows: Vec<TransactionRow> = sqlx::query_as(concat!(
            TRANSACTION_COLUMNS!(),
            " FROM payment_transactions WHERE payment_id = ? ORDER BY requested_at, transaction_id"
        ))
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await
        .store_context("read payment transactions")?;
        rows.into_iter()
            .map(TransactionRow::into_transaction)
            .collect::<anyhow::Result<_>>()
            .map_err(StoreError::Unexpected)
    }

    async fn stale(
        &self,
        status: PaymentStatus,
        unchanged_since: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Stale>, StoreError> {
        // One range of ix_payments_status_updated (status, updated_at,
        // next_attempt_at), in its order; the postponed payments are
        // skipped inside the index.
        let rows: Vec<(String, u32)> = sqlx::query_as(
            "SELECT payment_id, attempts FROM payments \
             WHERE status = ? AND updated_at < ? AND next_attempt_at <= ? \
             ORDER BY updated_at LIMIT ?",
        )
        .bind(status.as_str())
        .bind(unchanged_since)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .store_context("find stale payments")?;
        rows.into_iter()
            .map(|(id, attempts)| {
                Ok(Stale {
                    payment_id: id.parse().context("stored payment id")?,
                    attempts,
                })
            })
            .collect::<anyhow::Result<_>>()
            .map_err(StoreError::Unexpected)
    }

    async fn due(
        &self,
        kind: TransactionKind,
        now: DateTime<Utc>,
        requested_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError> {
        // One range of ix_payment_transactions_due (status, kind,
        // next_attempt_at); `requested_at` only filters out the requests
        // still in flight, which are few.
        let rows: Vec<DueRow> = sqlx::query_as(concat!(
            TRANSACTION_COLUMNS!(),
            ", attempts FROM payment_transactions \
             WHERE status = 'UNKNOWN' AND kind = ? AND next_attempt_at <= ? \
             AND requested_at < ? ORDER BY next_attempt_at LIMIT ?"
        ))
        .bind(kind.as_str())
        .bind(now)
        .bind(requested_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .store_context("find due transactions")?;
        rows.into_iter()
            .map(|row| {
                Ok(Due {
                    transaction: row.transaction.into_transaction()?,
                    attempts: row.attempts,
                })
            })
            .collect::<anyhow::Result<_>>()
            .map_err(StoreError::Unexpected)
    }
}

impl RetrySchedule for MariaDbPaymentRepository {
    async fn postpone(
        &self,
        subject: Scheduled,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (statement, id) = match subject {
            Scheduled::Transaction(transaction) => (
                "UPDATE payment_transactions SET attempts = ?, next_attempt_at = ? \
                 WHERE transaction_id = ? AND status = 'UNKNOWN'",
                transaction.to_string(),
            ),
            Scheduled::Payment(payment) => (
                "UPDATE payments SET attempts = ?, next_attempt_at = ? WHERE payment_id = ?",
                payment.to_string(),
            ),
        };
        sqlx::query(statement)
            .bind(attempts)
            .bind(next_attempt_at)
            .bind(id)
            .execute(&self.pool)
            .await
            .store_context("postpone background work")?;
        Ok(())
    }
}

/// The columns a [`TransactionRow`] is read from.
macro_rules! TRANSACTION_COLUMNS {
    () => {
        "SELECT transaction_id, payment_id, kind, amount, currency, status, \
         CAST(idempotency_key AS CHAR) AS idempotency_key, transaction_key, failure_code, \
         requested_at, completed_at"
    };
}
use TRANSACTION_COLUMNS;

#[derive(sqlx::FromRow)]
struct TransactionRow {
    transaction_id: String,
    payment_id: String,
    kind: String,
    amount: Decimal,
    currency: String,
    status: String,
    idempotency_key: String,
    transaction_key: Option<String>,
    failure_code: Option<String>,
    requested_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl TransactionRow {
    fn into_transaction(self) -> anyhow::Result<PaymentTransaction> {
        let payment_id: PaymentId = self.payment_id.parse()?;
        let kind = match self.kind.as_str() {
            "APPROVAL" => TransactionKind::Approval,
            "CANCEL" => TransactionKind::Cancel,
            other => anyhow::bail!("unknown transaction kind {other:?}"),
        };
        let status = match self.status.as_str() {
            "SUCCEEDED" => TransactionStatus::Succeeded,
            "FAILED" => TransactionStatus::Failed,
            "UNKNOWN" => TransactionStatus::Unknown,
            other => anyhow::bail!("unknown transaction status {other:?}"),
        };
        let currency: Currency = self.currency.parse()?;
        Ok(PaymentTransaction::restore(
            self.transaction_id.parse()?,
            payment_id,
            kind,
            Money::new(self.amount, currency)?,
            status,
            self.idempotency_key,
            self.transaction_key,
            self.failure_code,
            self.requested_at,
            self.completed_at,
        ))
    }
}

#[derive(sqlx::FromRow)]
struct DueRow {
    #[sqlx(flatten)]
    transaction: TransactionRow,
    attempts: u32,
}

/// A payment's stored events, checked to be its whole stream in order.
fn recorded(
    id: PaymentId,
    rows: impl IntoIterator<Item = EventRow>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.into_iter()
        .zip(1_u64..)
        .map(|(row, expected)| {
            anyhow::ensure!(
                row.version == expected,
                "payment {id}: event version {} where {expected} was expected",
                row.version
            );
            Ok(RecordedEvent {
                payment_id: id,
                version: row.version,
                occurred_at: row.occurred_at,
                event: decode_event(&row.event_type, &row.data)?,
            })
        })
        .collect::<anyhow::Result<_>>()
        .map_err(StoreError::Unexpected)
}

#[derive(sqlx::FromRow)]
struct OrderEventRow {
    payment_id: String,
    #[sqlx(flatten)]
    event: EventRow,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    version: u64,
    event_type: String,
    data: String,
    occurred_at: DateTime<Utc>,
}

/// The `data` column: the event's fields without its type tag (which has
/// its own column).
fn event_data(event: &PaymentEvent) -> Result<String, StoreError> {
    let mut value = serde_json::to_value(event)
        .context("serialize event")
        .map_err(StoreError::Unexpected)?;
    let data = value
        .get_mut("data")
        .map(serde_json::Value::take)
        .unwrap_or_default();
    Ok(data.to_string())
}

pub(super) fn decode_event(event_type: &str, data: &str) -> anyhow::Result<PaymentEvent> {
    let data: serde_json::Value =
        serde_json::from_str(data).with_context(|| format!("{event_type} data is not JSON"))?;
    serde_json::from_value(serde_json::json!({ "event_type": event_type, "data": data }))
        .with_context(|| format!("decode {event_type}"))
}

pub(super) async fn insert_projection(
    tx: &mut Transaction<'_, MySql>,
    payment: &Payment,
    at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    insert_projections(tx, &[(payment, at)]).await
}

/// The `payments` rows of new payments (each with when it was written), in
/// one statement; answers how many rows were written.
async fn insert_projections(
    tx: &mut Transaction<'_, MySql>,
    payments: &[(&Payment, DateTime<Utc>)],
) -> Result<u64, sqlx::Error> {
    let mut insert = QueryBuilder::<MySql>::new(
        "INSERT INTO payments (payment_id, order_id, user_id, amount, balance_amount, currency, \
         status, payment_key, method, approved_at, failure_code, failure_message, version, \
         created_at, updated_at, state) ",
    );
    let states = payments
        .iter()
        .map(|(payment, _)| state_json(payment))
        .collect::<Result<Vec<_>, _>>()?;
    insert.push_values(
        payments.iter().zip(states),
        |mut row, ((payment, at), state)| {
            let failure = payment.failure();
            row.push_bind(payment.id().to_string())
                .push_bind(payment.order_id().as_str())
                .push_bind(payment.user_id().as_str())
                .push_bind(payment.amount().amount())
                .push_bind(payment.balance().amount())
                .push_bind(payment.amount().currency().code())
                .push_bind(payment.status().as_str())
                .push_bind(payment.payment_key().map(|k| k.as_str()))
                .push_bind(payment.method())
                .push_bind(payment.approved_at())
                .push_bind(failure.map(|f| f.code.as_str()))
                .push_bind(failure.map(|f| f.message.as_str()))
                .push_bind(payment.version())
                .push_bind(payment.created_at())
                .push_bind(*at)
                .push_bind(state);
        },
    );
    insert
        .build()
        .execute(&mut **tx)
        .await
        .map(|done| done.rows_affected())
}

async fn update_projection(
    tx: &mut Transaction<'_, MySql>,
    payment: &Payment,
    expected_version: u64,
    at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let failure = payment.failure();
    sqlx::query(
        "UPDATE payments SET balance_amount = ?, status = ?, payment_key = ?, method = ?, \
         approved_at = ?, failure_code = ?, failure_message = ?, version = ?, updated_at = ?, \
         state = ? WHERE payment_id = ? AND version = ?",
    )
    .bind(payment.balance().amount())
    .bind(payment.status().as_str())
    .bind(payment.payment_key().map(|k| k.as_str()))
    .bind(payment.method())
    .bind(payment.approved_at())
    .bind(failure.map(|f| f.code.as_str()))
    .bind(failure.map(|f| f.message.as_str()))
    .bind(payment.version())
    .bind(at)
    .bind(state_json(payment)?)
    .bind(payment.id().to_string())
    .bind(expected_version)
    .execute(&mut **tx)
    .await
    .map(|done| done.rows_affected())
}

async fn upsert_transaction(
    tx: &mut Transaction<'_, MySql>,
    transaction: &PaymentTransaction,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_transactions (transaction_id, payment_id, kind, amount, currency, \
         status, idempotency_key, transaction_key, failure_code, requested_at, completed_at, \
         next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE status = VALUES(status), \
         transaction_key = VALUES(transaction_key), failure_code = VALUES(failure_code), \
         completed_at = VALUES(completed_at)",
    )
    .bind(transaction.id().to_string())
    .bind(transaction.payment_id().to_string())
    .bind(transaction.kind().as_str())
    .bind(transaction.amount().amount())
    .bind(transaction.amount().currency().code())
    .bind(transaction.status().as_str())
    .bind(transaction.idempotency_key())
    .bind(transaction.transaction_key())
    .bind(transaction.failure_code())
    .bind(transaction.requested_at())
    .bind(transaction.completed_at())
    .bind(transaction.requested_at()) // due at once
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn insert_outbox(
    tx: &mut Transaction<'_, MySql>,
    message: &OutboxMessage,
) -> Result<(), sqlx::Error> {
    insert_outbox_rows(tx, &[message]).await
}

//! The ports: what the use cases need from the outside world, as small traits
//! with written contracts. Adapters in `payment-infra` implement them; use
//! cases are generic over them and wired once in the binary.

use std::future::Future;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use payment_domain::{
    OrderId, Payment, PaymentEvent, PaymentId, PaymentStatus, PaymentTransaction, TransactionId,
    TransactionKind,
};
use uuid::Uuid;

use crate::error::Classify;

/// Everything one command changes, persisted atomically by
/// [`PaymentRepository::commit`]: all of it, or none of it.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// New events for one payment's stream, with the state they fold to.
    pub append: Option<Append>,
    /// Gateway interactions created or settled by the command (upserted by id).
    pub transactions: Vec<PaymentTransaction>,
    /// Integration events to publish, in order.
    pub outbox: Vec<OutboxMessage>,
    /// What triggered the command, recorded so it is never applied twice.
    pub inbox: Option<InboxEntry>,
}

/// Events appended to a payment's stream, optimistically: they follow
/// `expected_version`, or the commit fails with [`StoreError::Conflict`].
#[derive(Debug, Clone)]
pub struct Append {
    /// The version the caller's decision was based on (0 for a new payment).
    pub expected_version: u64,
    pub events: Vec<PaymentEvent>,
    /// The state after `events` (written to the `payments` projection).
    pub state: Payment,
    pub occurred_at: DateTime<Utc>,
}

/// A message that triggered a command: a Kafka message id per consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// Who handled it (e.g. the topic), so two consumers of one id do not clash.
    pub consumer: String,
    pub message_id: String,
}

/// An integration event waiting in the outbox (Debezium Outbox Event Router
/// columns): `topic` is the `aggregatetype`, `key` the `aggregateid`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// The event id consumers deduplicate on.
    pub id: Uuid,
    pub topic: String,
    pub key: String,
    pub event_type: String,
    /// The CloudEvent, structured mode.
    pub payload: serde_json::Value,
    pub traceparent: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Why a commit or a read failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else appended to the stream after `expected_version` was read:
    /// nothing was written; decide again on fresh state.
    #[error("payment {payment_id} changed concurrently (expected version {expected_version})")]
    Conflict {
        payment_id: PaymentId,
        expected_version: u64,
    },
    /// Another payment already exists for this order: nothing was written.
    #[error("order {0} already has a payment")]
    DuplicateOrder(OrderId),
    /// The triggering message was already handled: nothing was written.
    #[error("message {} was already processed by {}", .0.message_id, .0.consumer)]
    AlreadyProcessed(InboxEntry),
    /// The store could not be reached or was busy (connection refused or
    /// reset, pool timeout, deadlock, lock wait timeout): nothing is known to
    /// be written, and the same call may succeed later.
    #[error(transparent)]
    Unavailable(anyhow::Error),
    /// The store refused the data (a value outside a column's range, a
    /// violated constraint) or answered something that cannot be right (a
    /// stream that does not replay, an unreadable row): nothing was written,
    /// and the same call fails the same way every time.
    #[error(transparent)]
    Unexpected(anyhow::Error),
}

impl Classify for StoreError {
    fn is_permanent(&self) -> bool {
        !matches!(self, Self::Conflict { .. } | Self::Unavailable(_))
    }
}

/// Which payment a command is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentRef {
    Id(PaymentId),
    /// The payment of an order (an order has at most one).
    Order(OrderId),
}

/// A payment as a decision about it needs it, read at one version.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The fold of `history`.
    pub payment: Payment,
    /// Its whole stream, oldest first.
    pub history: Vec<RecordedEvent>,
    /// Its gateway interactions, oldest first.
    pub transactions: Vec<PaymentTransaction>,
}

/// The command side of the payment store: what a decision reads, and the
/// one atomic write that records it.
pub trait PaymentRepository: Send + Sync + 'static {
    /// The payment `which` refers to, with its stream and transactions.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be read now;
    /// [`StoreError::Unexpected`] when a stream does not replay.
    fn load(
        &self,
        which: &PaymentRef,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Persists `commit` in ONE database transaction: events, projection,
    /// transactions, outbox rows and the inbox record, or nothing.
    ///
    /// # Errors
    /// [`StoreError::Conflict`], [`StoreError::DuplicateOrder`] and
    /// [`StoreError::AlreadyProcessed`] mean nothing was written and say why;
    /// [`StoreError::Unavailable`] and [`StoreError::Unexpected`] mean the
    /// store failed (nothing committed), transiently or for good.
    fn commit(&self, commit: Commit) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Persists several commands' commits in ONE database transaction, as
    /// [`PaymentRepository::commit`] persists one: all of them, or none.
    /// The commits concern distinct payments.
    ///
    /// A store that cannot write several commits together keeps this
    /// default: it writes a single commit and refuses more (nothing
    /// written), and the caller commits them one by one.
    ///
    /// # Errors
    /// As [`PaymentRepository::commit`], for the first commit that failed;
    /// nothing was written.
    fn commit_all(
        &self,
        commits: Vec<Commit>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            let count = commits.len();
            let mut commits = commits.into_iter();
            match (commits.next(), commits.next()) {
                (None, _) => Ok(()),
                (Some(commit), None) => self.commit(commit).await,
                (Some(_), Some(_)) => Err(StoreError::Unexpected(anyhow::anyhow!(
                    "this store commits one command at a time, not {count}"
                ))),
            }
        }
    }
}

/// The query side of the payment store: reads for the API and for the
/// background jobs' selection of work. Nothing decided from these is
/// written without loading through [`PaymentRepository::load`] again.
pub trait PaymentQueries: Send + Sync + 'static {
    /// The current state of a payment.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be read now;
    /// [`StoreError::Unexpected`] when a stream does not replay.
    fn payment(
        &self,
        id: PaymentId,
    ) -> impl Future<Output = Result<Option<Payment>, StoreError>> + Send;

    /// The payment of an order, if any.
    ///
    /// # Errors
    /// As [`PaymentQueries::payment`].
    fn find_by_order(
        &self,
        order_id: &OrderId,
    ) -> impl Future<Output = Result<Option<Payment>, StoreError>> + Send;

    /// A payment's whole stream, oldest first: its audit trail.
    ///
    /// # Errors
    /// As [`PaymentQueries::payment`].
    fn events(
        &self,
        id: PaymentId,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// A payment's gateway interactions, oldest first.
    ///
    /// # Errors
    /// As [`PaymentQueries::payment`].
    fn transactions(
        &self,
        id: PaymentId,
    ) -> impl Future<Output = Result<Vec<PaymentTransaction>, StoreError>> + Send;

    /// Up to `limit` payments in `status` not changed since `unchanged_since`
    /// and due at `now` (not postponed past it through
    /// [`RetrySchedule::postpone`]), least recently changed first, with the
    /// attempts already made: the expiry's work, in one indexed query.
    ///
    /// # Errors
    /// As [`PaymentQueries::payment`].
    fn stale(
        &self,
        status: PaymentStatus,
        unchanged_since: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Stale>, StoreError>> + Send;

    /// Up to `limit` gateway interactions of `kind` still UNKNOWN, due for
    /// another look at `now` and requested before `requested_before` (a
    /// request still in flight is left alone), soonest due first, with the
    /// looks already taken: the reconciler's work, in one indexed query.
    ///
    /// # Errors
    /// As [`PaymentQueries::payment`].
    fn due(
        &self,
        kind: TransactionKind,
        now: DateTime<Utc>,
        requested_before: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Due>, StoreError>> + Send;
}

/// A gateway interaction whose outcome is unknown, due for another look.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub transaction: PaymentTransaction,
    /// Looks taken so far that settled nothing.
    pub attempts: u32,
}

/// A payment the expiry may be due to end, with the attempts already made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    pub payment_id: PaymentId,
    /// Attempts that ended nothing (the payment could not be expired).
    pub attempts: u32,
}

/// What background work is about: a gateway interaction whose outcome is
/// unknown (the reconciler's), or a payment (the expiry's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduled {
    /// Postponed only while it is still UNKNOWN (one settled meanwhile is
    /// left as it is).
    Transaction(TransactionId),
    Payment(PaymentId),
}

/// When background work that came to nothing is due again, kept in the
/// store so that selecting what is due stays one indexed query and a
/// restart forgets nothing. The one write outside the command runner: it
/// changes no payment — no event, no projection, nothing published — only
/// when background work is due.
pub trait RetrySchedule: Send + Sync + 'static {
    /// Records that the work on `subject` has been attempted `attempts`
    /// times and is next due at `next_attempt_at`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Unexpected`] when the
    /// store fails.
    fn postpone(
        &self,
        subject: Scheduled,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// An event as stored: its place in the stream and when it was recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub payment_id: PaymentId,
    pub version: u64,
    pub occurred_at: DateTime<Utc>,
    pub event: PaymentEvent,
}

/// What claiming an HTTP `Idempotency-Key` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// New key: the request runs, and its answer is recorded.
    Claimed,
    /// The first request with this key is still running.
    InFlight,
    /// Same key, same request: the first answer, byte for byte.
    Replay { status: u16, body: Vec<u8> },
    /// Same key, another request.
    Mismatch,
}

/// HTTP idempotency keys (Stripe / IETF semantics), kept for a while.
pub trait IdempotencyKeys: Send + Sync + 'static {
    /// Claims `key` in `scope` for a request with this `fingerprint`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Unexpected`] when the
    /// store fails.
    fn claim(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
    ) -> impl Future<Output = Result<KeyClaim, StoreError>> + Send;

    /// Records the answer to replay for the claimed key.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Unexpected`] when the
    /// store fails.
    fn complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets a claim whose request had no effect (it may be retried).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Unexpected`] when the
    /// store fails.
    fn release(
        &self,
        scope: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes keys created before `created_before`; answers how many.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Unexpected`] when the
    /// store fails.
    fn prune(
        &self,
        created_before: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// A dependency whose health decides readiness (database, broker, ...).
pub trait HealthProbe: Send + Sync + 'static {
    /// Short stable name reported by `/health/ready` (e.g. `database`).
    fn name(&self) -> &'static str;

    /// Answers `Ok` when the dependency is usable right now.
    ///
    /// # Errors
    /// A one-line reason, safe to show to operators.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

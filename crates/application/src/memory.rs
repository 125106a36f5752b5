//! An in-memory [`PaymentRepository`] and [`PaymentQueries`] for the use
//! cases' unit tests. It keeps the ports' contract (optimistic versions,
//! unique order, inbox, all or nothing); the MariaDB adapter's own tests
//! prove the real thing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use payment_domain::{
    OrderId, Payment, PaymentId, PaymentStatus, PaymentTransaction, TransactionId, TransactionKind,
    TransactionStatus,
};

use crate::ports::{
    Commit, Due, InboxEntry, OutboxMessage, PaymentQueries, PaymentRef, PaymentRepository,
    RecordedEvent, RetrySchedule, Scheduled, Snapshot, Stale, StoreError,
};

#[derive(Debug, Clone, Default)]
struct State {
    streams: HashMap<PaymentId, Vec<RecordedEvent>>,
    payments: HashMap<PaymentId, Payment>,
    orders: HashMap<OrderId, PaymentId>,
    inbox: HashSet<(String, String)>,
    outbox: Vec<OutboxMessage>,
    transactions: Vec<PaymentTransaction>,
    updated: HashMap<PaymentId, DateTime<Utc>>,
    /// The reconciler's backoff per transaction: looks taken, next due.
    schedule: HashMap<TransactionId, (u32, DateTime<Utc>)>,
    /// The expiry's backoff per payment: attempts made, next due.
    payment_schedule: HashMap<PaymentId, (u32, DateTime<Utc>)>,
    /// Payments whose stream does not replay: loading them fails.
    broken: HashSet<PaymentId>,
}

impl State {
    /// Writes `commit` (all of it) or answers why not (nothing written).
    fn apply(&mut self, commit: Commit) -> Result<(), StoreError> {
        let state = self;
        if let Some(entry) = &commit.inbox {
            if state
                .inbox
                .contains(&(entry.consumer.clone(), entry.message_id.clone()))
            {
                return Err(StoreError::AlreadyProcessed(entry.clone()));
            }
        }
        if let Some(append) = &commit.append {
            let id = append.state.id();
            let current = state.streams.get(&id).map_or(0, Vec::len) as u64;
            if current != append.expected_version {
                return Err(StoreError::Conflict {
                    payment_id: id,
                    expected_version: append.expected_version,
                });
            }
            let order = append.state.order_id().clone();
            if current == 0 && state.orders.contains_key(&order) {
                return Err(StoreError::DuplicateOrder(order));
            }
            let stream = state.streams.entry(id).or_default();
            for (version, event) in (current + 1..).zip(&append.events) {
                stream.push(RecordedEvent {
                    payment_id: id,
                    version,
                    occurred_at: append.occurred_at,
                    event: event.clone(),
                });
            }
            state.orders.insert(order, id);
            state.payments.insert(id, append.state.clone());
            state.updated.insert(id, append.occurred_at);
        }
        for transaction in commit.transactions {
            match state
                .transactions
                .iter_mut()
                .find(|t| t.id() == transaction.id())
            {
                Some(slot) => *slot = transaction,
                None => state.transactions.push(transaction),
            }
        }
        if let Some(entry) = commit.inbox {
            state.inbox.insert((entry.consumer, entry.message_id));
        }
        state.outbox.extend(commit.outbox);
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct MemoryRepository {
    state: Arc<Mutex<State>>,
}

impl MemoryRepository {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn outbox(&self) -> Vec<OutboxMessage> {
        self.lock().outbox.clone()
    }

    pub(crate) fn payments(&self) -> Vec<Payment> {
        self.lock().payments.values().cloned().collect()
    }

    pub(crate) fn all_transactions(&self) -> Vec<PaymentTransaction> {
        self.lock().transactions.clone()
    }

    /// Makes `id`'s stream unreadable, as a corrupt one is: every load of
    /// it fails for good.
    pub(crate) fn break_stream(&self, id: PaymentId) {
        self.lock().broken.insert(id);
    }

    /// Moves every gateway interaction `by` into the past, as if requested
    /// (and completed) that much earlier.
    pub(crate) fn backdate_transactions(&self, by: chrono::Duration) {
        for transaction in &mut self.lock().transactions {
            *transaction = PaymentTransaction::restore(
                transaction.id(),
                transaction.payment_id(),
                transaction.kind(),
                transaction.amount(),
                transaction.status(),
                transaction.idempotency_key().to_owned(),
                transaction.transaction_key().map(str::to_owned),
                transaction.failure_code().map(str::to_owned),
                transaction.requested_at() - by,
                transaction.completed_at().map(|at| at - by),
            );
        }
    }

    pub(crate) fn processed(&self, entry: &InboxEntry) -> bool {
        self.lock()
            .inbox
            .contains(&(entry.consumer.clone(), entry.message_id.clone()))
    }
}

impl PaymentRepository for MemoryRepository {
    async fn load(&self, which: &PaymentRef) -> Result<Option<Snapshot>, StoreError> {
        let state = self.lock();
        let id = match which {
            PaymentRef::Id(id) => Some(*id),
            PaymentRef::Order(order_id) => state.orders.get(order_id).copied(),
        };
        if let Some(id) = id.filter(|id| state.broken.contains(id)) {
            return Err(StoreError::Unexpected(anyhow::anyhow!(
                "replay payment {id}: the stream does not replay"
            )));
        }
        Ok(id
            .and_then(|id| state.payments.get(&id))
            .map(|payment| Snapshot {
                payment: payment.clone(),
                history: state
                    .streams
                    .get(&payment.id())
                    .cloned()
                    .unwrap_or_default(),
                transactions: state
                    .transactions
                    .iter()
                    .filter(|t| t.payment_id() == payment.id())
                    .cloned()
                    .collect(),
            }))
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.lock().apply(commit)
    }

    async fn commit_all(&self, commits: Vec<Commit>) -> Result<(), StoreError> {
        let mut state = self.lock();
        let mut next = state.clone();
        for commit in commits {
            next.apply(commit)?;
        }
        *state = next;
        Ok(())
    }
}

impl PaymentQueries for MemoryRepository {
    async fn payment(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
        Ok(self.lock().payments.get(&id).cloned())
    }

    async fn find_by_order(&self, order_id: &OrderId) -> Result<Option<Payment>, StoreError> {
        let state = self.lock();
        Ok(state
            .orders
            .get(order_id)
            .and_then(|id| state.payments.get(id))
            .cloned())
    }

    async fn events(&self, id: PaymentId) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self.lock().streams.get(&id).cloned().unwrap_or_default())
    }

    async fn transactions(&self, id: PaymentId) -> Result<Vec<PaymentTransaction>, StoreError> {
        let state = self.lock();
        Ok(state
            .transactions
            .iter()
            .filter(|t| t.payment_id() == id)
            .cloned()
            .collect())
    }

    async fn stale(
        &self,
        status: PaymentStatus,
        unchanged_since: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Stale>, StoreError> {
        let state = self.lock();
        let mut stale: Vec<(DateTime<Utc>, Stale)> = state
            .payments
            .values()
            .filter(|p| p.status() == status)
            .filter_map(|p| {
                let updated = *state.updated.get(&p.id())?;
                let (attempts, next) = state
                    .payment_schedule
                    .get(&p.id())
                    .copied()
                    .unwrap_or((0, DateTime::<Utc>::MIN_UTC));
                (updated < unchanged_since && next <= now).then_some((
                    updated,
                    Stale {
                        payment_id: p.id(),
                        attempts,
                    },
                ))
            })
            .collect();
        stale.sort_by_key(|(updated, s)| (*updated, s.payment_id));
        Ok(stale
            .into_iter()
            .take(limit as usize)
            .map(|(_, s)| s)
            .collect())
    }

    async fn due(
        &self,
        kind: TransactionKind,
        now: DateTime<Utc>,
        requested_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError> {
        let state = self.lock();
        let mut due: Vec<(DateTime<Utc>, Due)> = state
            .transactions
            .iter()
            .filter(|t| t.kind() == kind && t.status() == TransactionStatus::Unknown)
            .filter(|t| t.requested_at() < requested_before)
            .filter_map(|t| {
                let (attempts, next) = state
                    .schedule
                    .get(&t.id())
                    .copied()
                    .unwrap_or((0, t.requested_at()));
                (next <= now).then(|| {
                    let transaction = t.clone();
                    (
                        next,
                        Due {
                            transaction,
                            attempts,
                        },
                    )
                })
            })
            .collect();
        due.sort_by_key(|(next, _)| *next);
        Ok(due
            .into_iter()
            .take(limit as usize)
            .map(|(_, due)| due)
            .collect())
    }
}

impl RetrySchedule for MemoryRepository {
    async fn postpone(
        &self,
        subject: Scheduled,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        match subject {
            Scheduled::Transaction(transaction) => {
                let unknown = state
                    .transactions
                    .iter()
                    .any(|t| t.id() == transaction && t.status() == TransactionStatus::Unknown);
                if unknown {
                    state
                        .schedule
                        .insert(transaction, (attempts, next_attempt_at));
                }
            }
            Scheduled::Payment(payment) => {
                if state.payments.contains_key(&payment) {
                    state
                        .payment_schedule
                        .insert(payment, (attempts, next_attempt_at));
                }
            }
        }
        Ok(())
    }
}

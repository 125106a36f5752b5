//! An in-memory [`PaymentRepository`] for the use cases' unit tests. It keeps
//! the port's contract (optimistic versions, unique order, inbox, all or
//! nothing); the MariaDB adapter's own tests prove the real thing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use payment_domain::{OrderId, Payment, PaymentId};

use crate::ports::{Commit, OutboxMessage, PaymentRepository, RecordedEvent, StoreError};

#[derive(Debug, Default)]
struct State {
    streams: HashMap<PaymentId, Vec<RecordedEvent>>,
    payments: HashMap<PaymentId, Payment>,
    orders: HashMap<OrderId, PaymentId>,
    inbox: HashSet<(String, String)>,
    outbox: Vec<OutboxMessage>,
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
}

impl PaymentRepository for MemoryRepository {
    async fn load(&self, id: PaymentId) -> Result<Option<Payment>, StoreError> {
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

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let mut state = self.lock();
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
        }
        if let Some(entry) = commit.inbox {
            state.inbox.insert((entry.consumer, entry.message_id));
        }
        state.outbox.extend(commit.outbox);
        Ok(())
    }
}

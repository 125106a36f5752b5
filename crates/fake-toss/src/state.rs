//! What fake Toss remembers between requests: the payments, the counters,
//! the scenario, the request observer, and the `Idempotency-Key` store (a
//! key's first answer, kept 15 days, or the mark that it is still being
//! processed). Plain data behind one mutex; no HTTP and no Toss rules here.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::Value;

use crate::http::Reply;
use crate::model::Payment;
use crate::{Calls, RequestRecord, Scenario};

/// Toss keeps idempotency keys for 15 days.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(15 * 24 * 60 * 60);

pub(crate) type Observer = Arc<dyn Fn(&RequestRecord) + Send + Sync>;

/// State shared by the handle ([`crate::FakeToss`]) and the handlers.
pub(crate) struct Shared {
    pub(crate) secret_key: String,
    inner: Mutex<Inner>,
    observer: Mutex<Option<Observer>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) scenario: Scenario,
    pub(crate) payments: HashMap<String, Payment>,
    pub(crate) next_seq: u64,
    idempotency: HashMap<(String, String), Stored>,
    pub(crate) calls: Calls,
}

#[derive(Debug)]
enum Stored {
    /// The first request with this key has not been answered yet.
    InFlight,
    /// Its answer, replayed to every later request with the key.
    Answered { at: Instant, reply: Reply },
}

impl Shared {
    pub(crate) fn new(secret_key: String) -> Self {
        Self {
            secret_key,
            inner: Mutex::new(Inner::default()),
            observer: Mutex::new(None),
        }
    }

    /// Never held across an `.await`; a poisoned lock is still usable (the
    /// state is plain data, always left consistent between statements).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_scenario(&self, scenario: Scenario) {
        self.lock().scenario = scenario;
    }

    pub(crate) fn scenario(&self) -> Scenario {
        self.lock().scenario.clone()
    }

    pub(crate) fn calls(&self) -> Calls {
        self.lock().calls.clone()
    }

    pub(crate) fn payment(&self, payment_key: &str) -> Option<Value> {
        let inner = self.lock();
        let payment = inner.payments.get(payment_key)?;
        serde_json::to_value(payment).ok()
    }

    pub(crate) fn reset(&self) {
        let mut inner = self.lock();
        // In-flight keys stay: their requests will still record an answer.
        inner
            .idempotency
            .retain(|_, stored| matches!(stored, Stored::InFlight));
        inner.payments.clear();
        inner.calls = Calls::default();
        inner.scenario = Scenario::Approve;
    }

    pub(crate) fn set_observer(&self, observer: Observer) {
        *self.observer.lock().unwrap_or_else(PoisonError::into_inner) = Some(observer);
    }

    pub(crate) fn observer(&self) -> Option<Observer> {
        self.observer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn count(&self, f: impl FnOnce(&mut Calls)) {
        f(&mut self.lock().calls);
    }

    /// Claims `key` on `route` for this request, or answers it from the store.
    pub(crate) fn reserve(&self, route: &str, key: &str) -> Result<(), Reply> {
        let mut inner = self.lock();
        let slot = (route.to_owned(), key.to_owned());
        match inner.idempotency.get(&slot) {
            Some(Stored::InFlight) => {
                inner.calls.idempotency_conflicts += 1;
                Err(Reply::error(
                    StatusCode::CONFLICT,
                    "IDEMPOTENT_REQUEST_PROCESSING",
                    "이전 멱등 요청이 처리중입니다.",
                ))
            }
            Some(Stored::Answered { at, reply }) if at.elapsed() < IDEMPOTENCY_TTL => {
                let reply = reply.clone();
                inner.calls.idempotent_replays += 1;
                Err(reply)
            }
            _ => {
                inner.idempotency.insert(slot, Stored::InFlight);
                Ok(())
            }
        }
    }

    /// Stores the answer for replay, error answers included (a
    /// `400 PROVIDER_ERROR` is replayed for 15 days like a `200`) — except a
    /// 5xx, which frees the key: the next request with it is processed
    /// afresh. A confirm then meets `ALREADY_PROCESSED_PAYMENT` if it was
    /// done; a cancel that was done is done AGAIN if the balance allows (see
    /// the crate docs: a client settles a 5xx by a lookup, not a re-send).
    pub(crate) fn settle_key(&self, route: String, key: String, reply: &Reply) {
        let mut inner = self.lock();
        if reply.status.is_server_error() {
            inner.idempotency.remove(&(route, key));
        } else {
            inner.idempotency.insert(
                (route, key),
                Stored::Answered {
                    at: Instant::now(),
                    reply: reply.clone(),
                },
            );
        }
    }
}

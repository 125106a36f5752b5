//! What the use cases' unit tests share: a scripted gateway, the topics,
//! and payments put into a given state through the in-memory store.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use payment_domain::{
    execute, Currency, Money, OrderId, Payment, PaymentCommand, PaymentId, PaymentKey,
    TransactionId, UserId,
};
use rust_decimal::Decimal;

use crate::cancel::{Cancel, Requester};
use crate::gateway::{
    CancelRequest, ConfirmRequest, GatewayCancel, GatewayOutcome, GatewayPayment, GatewayStatus,
    LookupFailed, PaymentGateway,
};
use crate::integration::{Causation, Topics};
use crate::memory::MemoryRepository;
use crate::ports::{Append, Commit, PaymentRepository as _};
use crate::runner::Trigger;

/// A gateway double answering what the test scripts, and counting calls.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scripted {
    pub(crate) confirm: Arc<Mutex<Option<GatewayOutcome>>>,
    pub(crate) cancel: Arc<Mutex<Option<GatewayOutcome>>>,
    pub(crate) lookup: Arc<Mutex<Option<GatewayPayment>>>,
    /// Lookups fail (the gateway cannot be reached) while set.
    pub(crate) lookup_fails: Arc<AtomicBool>,
    pub(crate) confirms: Arc<AtomicUsize>,
    pub(crate) cancels: Arc<AtomicUsize>,
    /// The idempotency keys of every confirm, then of every cancel.
    pub(crate) keys: Arc<Mutex<Vec<String>>>,
    pub(crate) cancel_keys: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    pub(crate) fn answering(outcome: GatewayOutcome) -> Self {
        let gateway = Self::default();
        *gateway.confirm.lock().unwrap() = Some(outcome);
        gateway
    }

    pub(crate) fn cancels_with(&self, outcome: GatewayOutcome) {
        *self.cancel.lock().unwrap() = Some(outcome);
    }

    pub(crate) fn shows(&self, payment: GatewayPayment) {
        *self.lookup.lock().unwrap() = Some(payment);
    }

    pub(crate) fn confirms(&self) -> usize {
        self.confirms.load(Ordering::SeqCst)
    }

    pub(crate) fn cancels(&self) -> usize {
        self.cancels.load(Ordering::SeqCst)
    }

    fn looked_up(&self) -> Result<Option<GatewayPayment>, LookupFailed> {
        if self.lookup_fails.load(Ordering::SeqCst) {
            return Err(LookupFailed("connection refused".into()));
        }
        Ok(self.lookup.lock().unwrap().clone())
    }
}

fn scripted(outcome: &Mutex<Option<GatewayOutcome>>) -> GatewayOutcome {
    outcome
        .lock()
        .unwrap()
        .clone()
        .unwrap_or(GatewayOutcome::Unknown("unscripted".into()))
}

impl PaymentGateway for Scripted {
    async fn confirm(&self, request: &ConfirmRequest) -> GatewayOutcome {
        self.confirms.fetch_add(1, Ordering::SeqCst);
        self.keys
            .lock()
            .unwrap()
            .push(request.idempotency_key.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        scripted(&self.confirm)
    }
    async fn cancel(&self, request: &CancelRequest) -> GatewayOutcome {
        self.cancels.fetch_add(1, Ordering::SeqCst);
        self.cancel_keys
            .lock()
            .unwrap()
            .push(request.idempotency_key.clone());
        scripted(&self.cancel)
    }
    async fn lookup_by_order(&self, _: &OrderId) -> Result<Option<GatewayPayment>, LookupFailed> {
        self.looked_up()
    }
    async fn lookup(&self, _: &PaymentKey) -> Result<Option<GatewayPayment>, LookupFailed> {
        self.looked_up()
    }
}

pub(crate) fn topics() -> Topics {
    Topics {
        payment_created: "created".into(),
        payment_completed: "completed".into(),
        payment_failed: "failed".into(),
        payment_canceled: "canceled".into(),
        payment_cancel_failed: "cancel.failed".into(),
    }
}

pub(crate) fn won(amount: i64) -> Money {
    Money::new(Decimal::from(amount), Currency::Krw).unwrap()
}

/// Toss's view of a payment of `order` with `key`, approved for `amount`.
pub(crate) fn approved_at_gateway(key: &str, order: &str, amount: i64) -> GatewayPayment {
    GatewayPayment {
        payment_key: PaymentKey::parse(key).unwrap(),
        order_id: OrderId::parse(order).unwrap(),
        status: GatewayStatus::Done,
        total_amount: won(amount),
        balance_amount: won(amount),
        method: Some("카드".into()),
        approved_at: Some(Utc::now()),
        last_transaction_key: Some("txk-approve".into()),
        failure: None,
        cancels: Vec::new(),
    }
}

/// `at_gateway` after cancels of `amounts` (with those transaction keys).
pub(crate) fn canceled_at_gateway(
    mut at_gateway: GatewayPayment,
    cancels: &[(i64, &str)],
) -> GatewayPayment {
    for (amount, key) in cancels {
        at_gateway.cancels.push(GatewayCancel {
            amount: won(*amount),
            transaction_key: Some((*key).to_owned()),
        });
        at_gateway.balance_amount = at_gateway.balance_amount.checked_sub(won(*amount)).unwrap();
    }
    at_gateway.status = if at_gateway.balance_amount.is_zero() {
        GatewayStatus::Canceled
    } else {
        GatewayStatus::PartialCanceled
    };
    at_gateway
}

/// How far a test payment has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Ready,
    /// Confirmation started with `key`; no APPROVAL transaction recorded.
    InProgress,
    Done,
}

/// A payment of `amount` for `order`, brought to `stage` (confirmed with
/// `key`) as if it all happened `age` ago.
pub(crate) async fn payment_at(
    repository: &MemoryRepository,
    order: &str,
    key: &str,
    amount: i64,
    stage: Stage,
    age: chrono::Duration,
) -> Payment {
    let at: DateTime<Utc> = Utc::now() - age;
    let key = PaymentKey::parse(key).unwrap();
    let mut commands = vec![PaymentCommand::Create {
        payment_id: PaymentId::new(),
        order_id: OrderId::parse(order).unwrap(),
        user_id: UserId::parse("u-1").unwrap(),
        amount: won(amount),
        created_at: at,
    }];
    if stage != Stage::Ready {
        commands.push(PaymentCommand::StartConfirmation {
            payment_key: key.clone(),
            amount: won(amount),
            transaction_id: TransactionId::new(),
        });
    }
    if stage == Stage::Done {
        commands.push(PaymentCommand::Approve {
            payment_key: key,
            approved_amount: won(amount),
            method: Some("카드".into()),
            approved_at: at,
        });
    }
    let mut state: Option<Payment> = None;
    for command in &commands {
        let (next, events) = execute(state.as_ref(), command).unwrap();
        repository
            .commit(Commit {
                append: Some(Append {
                    expected_version: state.as_ref().map_or(0, Payment::version),
                    events,
                    state: next.clone(),
                    occurred_at: at,
                }),
                ..Commit::default()
            })
            .await
            .unwrap();
        state = Some(next);
    }
    state.unwrap()
}

/// An in-memory store holding one payment of 10,000 KRW for `order` at
/// `stage`, a minute old, and a gateway with nothing scripted yet.
pub(crate) async fn world(
    order: &str,
    key: &str,
    stage: Stage,
) -> (MemoryRepository, Scripted, Payment) {
    let repository = MemoryRepository::default();
    let payment = payment_at(
        &repository,
        order,
        key,
        10_000,
        stage,
        chrono::Duration::minutes(1),
    )
    .await;
    (repository, Scripted::default(), payment)
}

/// A cancel of `amount` (`None`: all that is left) asked over HTTP with
/// the idempotency key `key`.
pub(crate) fn cancel_request(payment: &Payment, amount: Option<i64>, key: &str) -> Cancel {
    Cancel {
        payment_id: payment.id(),
        amount: amount.map(Decimal::from),
        reason: "returned".into(),
        request_key: Some(key.into()),
        trigger: Trigger::Untracked,
        causation: Causation::default(),
        requester: Requester::Client,
    }
}

//! Use cases of the Toss widget: the success redirect (confirm) and the fail
//! redirect (abort).
//!
//! Confirm, the money path:
//! 1. the claimed amount must equal the stored order amount — the widget's
//!    amount is client-controlled, so a mismatch is refused and the PG is
//!    never called;
//! 2. IN_PROGRESS and an APPROVAL transaction (whose id is the PG's
//!    idempotency key) are COMMITTED before the PG is called — of many
//!    concurrent confirms exactly one wins that commit, the others answer
//!    "in progress";
//! 3. approved → DONE + completed event; declined → ABORTED + failed event;
//!    unknown → looked up at once; still unknown → "processing", left to the
//!    reconciler. Never guessed.
//!
//! Runs twice? A confirm after DONE returns the payment without calling the
//! PG. Dies half-way? The payment stays IN_PROGRESS with its transaction, and
//! the reconciler finishes it with the same idempotency key.

use chrono::Utc;
use payment_domain::{
    execute, Failure, Money, OrderId, Payment, PaymentCommand, PaymentError, PaymentKey,
    PaymentStatus, PaymentTransaction, TransactionKind,
};
use rust_decimal::Decimal;

use crate::gateway::{ConfirmRequest, GatewayOutcome, PaymentGateway};
use crate::integration::{self, Causation, Topics};
use crate::ports::{Append, Commit, PaymentRepository, StoreError};
use crate::settle::{settle_approval, Resolution, SettleError};

/// The widget's success redirect, as received.
#[derive(Debug, Clone)]
pub struct Confirm {
    pub payment_key: PaymentKey,
    pub order_id: OrderId,
    /// What the client claims; checked against the stored amount.
    pub amount: Decimal,
    pub causation: Causation,
}

/// How a confirm ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirmed {
    /// Approved (now, or before: a repeated confirm).
    Done(Payment),
    /// Declined by the PG.
    Aborted(Payment),
    /// The PG's answer is not known yet; the reconciler will settle it.
    Processing(Payment),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error("no payment for order {0}")]
    NotFound(OrderId),
    /// Tampering: the widget amount is not the order amount.
    #[error("amount {claimed} does not match the order amount {expected}")]
    AmountMismatch { expected: Money, claimed: Decimal },
    /// Another confirm of this payment is running.
    #[error("the payment is being confirmed")]
    InProgress(Box<Payment>),
    /// The payment cannot be confirmed in its state (or with that key).
    #[error("a payment that is {} cannot be confirmed", .0.status())]
    NotConfirmable(Box<Payment>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub struct ConfirmPayment<R, G> {
    repository: R,
    gateway: G,
    topics: Topics,
}

impl<R: PaymentRepository, G: PaymentGateway> ConfirmPayment<R, G> {
    pub const fn new(repository: R, gateway: G, topics: Topics) -> Self {
        Self {
            repository,
            gateway,
            topics,
        }
    }

    /// Confirms the payment of `request.order_id`.
    ///
    /// # Errors
    /// [`ConfirmError`].
    pub async fn handle(&self, request: Confirm) -> Result<Confirmed, ConfirmError> {
        for _ in 0..ATTEMPTS {
            let payment = self
                .repository
                .find_by_order(&request.order_id)
                .await?
                .ok_or_else(|| ConfirmError::NotFound(request.order_id.clone()))?;
            let claimed = Money::new(request.amount, payment.amount().currency())
                .ok()
                .filter(|claimed| *claimed == payment.amount())
                .ok_or(ConfirmError::AmountMismatch {
                    expected: payment.amount(),
                    claimed: request.amount,
                })?;
            let same_key = payment.payment_key() == Some(&request.payment_key);
            match payment.status() {
                PaymentStatus::Ready => {}
                PaymentStatus::Done | PaymentStatus::PartialCanceled | PaymentStatus::Canceled
                    if same_key =>
                {
                    return Ok(Confirmed::Done(payment));
                }
                PaymentStatus::InProgress if same_key => {
                    return Err(ConfirmError::InProgress(Box::new(payment)))
                }
                _ => return Err(ConfirmError::NotConfirmable(Box::new(payment))),
            }

            let now = Utc::now();
            let transaction =
                PaymentTransaction::request(payment.id(), TransactionKind::Approval, claimed, now);
            let (started, events) = execute(
                Some(&payment),
                &PaymentCommand::StartConfirmation {
                    payment_key: request.payment_key.clone(),
                    amount: claimed,
                    transaction_id: transaction.id(),
                },
            )
            .map_err(|_| ConfirmError::NotConfirmable(Box::new(payment.clone())))?;
            let commit = Commit {
                append: Some(Append {
                    expected_version: payment.version(),
                    events,
                    state: started.clone(),
                    occurred_at: now,
                }),
                transactions: vec![transaction.clone()],
                ..Commit::default()
            };
            match self.repository.commit(commit).await {
                Ok(()) => return Ok(self.call_gateway(started, &transaction, &request).await),
                // Another confirm got there first: look again.
                Err(StoreError::Conflict { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(
            StoreError::Unexpected(anyhow::anyhow!("order {} kept changing", request.order_id))
                .into(),
        )
    }

    async fn call_gateway(
        &self,
        started: Payment,
        transaction: &PaymentTransaction,
        request: &Confirm,
    ) -> Confirmed {
        let outcome = self
            .gateway
            .confirm(&ConfirmRequest {
                payment_key: request.payment_key.clone(),
                order_id: request.order_id.clone(),
                amount: transaction.amount(),
                idempotency_key: transaction.idempotency_key().to_owned(),
            })
            .await;
        let resolution = match outcome {
            GatewayOutcome::Succeeded(at_gateway) => Resolution::of(&at_gateway),
            GatewayOutcome::Declined(failure) => Some(Resolution::Declined(failure)),
            GatewayOutcome::Unknown(reason) => {
                tracing::warn!(payment_id = %started.id(), %reason, "confirm outcome unknown; looking it up");
                match self.gateway.lookup_by_order(&request.order_id).await {
                    Ok(Some(at_gateway)) if at_gateway.payment_key == request.payment_key => {
                        Resolution::of(&at_gateway)
                    }
                    Ok(_) => None,
                    Err(error) => {
                        tracing::warn!(payment_id = %started.id(), %error, "lookup failed; the reconciler will retry");
                        None
                    }
                }
            }
        };
        let Some(resolution) = resolution else {
            return Confirmed::Processing(started);
        };
        match settle_approval(
            &self.repository,
            &self.topics,
            started.id(),
            &resolution,
            &request.causation,
        )
        .await
        {
            Ok(settled) => match settled.status() {
                PaymentStatus::InProgress => Confirmed::Processing(settled),
                PaymentStatus::Aborted | PaymentStatus::Expired => Confirmed::Aborted(settled),
                _ => Confirmed::Done(settled),
            },
            Err(SettleError::Contradiction { reason, .. }) => {
                tracing::error!(payment_id = %started.id(), %reason, "the PG's answer contradicts the payment; left IN_PROGRESS for an operator");
                Confirmed::Processing(started)
            }
            Err(error) => {
                tracing::warn!(payment_id = %started.id(), %error, "outcome known but not recorded yet; the reconciler will record it");
                Confirmed::Processing(started)
            }
        }
    }
}

/// The widget's fail redirect: the customer gave up or the widget failed
/// before any confirm — a READY payment is aborted with the widget's reason.
#[derive(Debug, Clone)]
pub struct AbortFromWidget<R> {
    repository: R,
    topics: Topics,
}

#[derive(Debug, thiserror::Error)]
pub enum AbortError {
    #[error("no payment for order {0}")]
    NotFound(OrderId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<R: PaymentRepository> AbortFromWidget<R> {
    pub const fn new(repository: R, topics: Topics) -> Self {
        Self { repository, topics }
    }

    /// Aborts the order's payment if it is still READY; otherwise (already
    /// aborted, or confirmed meanwhile) leaves it as it is and returns it.
    ///
    /// # Errors
    /// [`AbortError`].
    pub async fn handle(
        &self,
        order_id: &OrderId,
        failure: Failure,
        causation: &Causation,
    ) -> Result<Payment, AbortError> {
        for _ in 0..ATTEMPTS {
            let payment = self
                .repository
                .find_by_order(order_id)
                .await?
                .ok_or_else(|| AbortError::NotFound(order_id.clone()))?;
            let (aborted, events) = match execute(
                Some(&payment),
                &PaymentCommand::Abort {
                    failure: failure.clone(),
                },
            ) {
                Ok(decided) if payment.status() == PaymentStatus::Ready => decided,
                Ok(_) | Err(PaymentError::InvalidTransition { .. }) => return Ok(payment),
                Err(other) => return Err(StoreError::Unexpected(anyhow::Error::new(other)).into()),
            };
            let now = Utc::now();
            let commit = Commit {
                append: Some(Append {
                    expected_version: payment.version(),
                    events,
                    state: aborted.clone(),
                    occurred_at: now,
                }),
                outbox: vec![integration::payment_failed(
                    &self.topics,
                    &aborted,
                    causation,
                    now,
                )],
                ..Commit::default()
            };
            match self.repository.commit(commit).await {
                Ok(()) => return Ok(aborted),
                Err(StoreError::Conflict { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Unexpected(anyhow::anyhow!("order {order_id} kept changing")).into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use payment_domain::{Currency, TransactionStatus, UserId};

    use super::*;
    use crate::gateway::{GatewayPayment, GatewayStatus, LookupFailed};
    use crate::memory::MemoryRepository;
    use crate::reconcile::{Reconciled, Reconciler, ReconcilerSettings};

    /// A gateway double answering what the test scripts, and counting calls.
    #[derive(Debug, Clone, Default)]
    struct Scripted {
        confirm: Arc<Mutex<Option<GatewayOutcome>>>,
        lookup: Arc<Mutex<Option<GatewayPayment>>>,
        confirms: Arc<AtomicUsize>,
        keys: Arc<Mutex<Vec<String>>>,
    }

    impl Scripted {
        fn answering(outcome: GatewayOutcome) -> Self {
            let gateway = Self::default();
            *gateway.confirm.lock().unwrap() = Some(outcome);
            gateway
        }
    }

    impl PaymentGateway for Scripted {
        async fn confirm(&self, request: &ConfirmRequest) -> GatewayOutcome {
            self.confirms.fetch_add(1, Ordering::SeqCst);
            self.keys
                .lock()
                .unwrap()
                .push(request.idempotency_key.clone());
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.confirm
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(GatewayOutcome::Unknown("unscripted".into()))
        }
        async fn cancel(&self, _: &crate::gateway::CancelRequest) -> GatewayOutcome {
            GatewayOutcome::Unknown("cancels are not scripted here".into())
        }
        async fn lookup_by_order(
            &self,
            _: &OrderId,
        ) -> Result<Option<GatewayPayment>, LookupFailed> {
            Ok(self.lookup.lock().unwrap().clone())
        }
        async fn lookup(&self, _: &PaymentKey) -> Result<Option<GatewayPayment>, LookupFailed> {
            Ok(self.lookup.lock().unwrap().clone())
        }
    }

    fn topics() -> Topics {
        Topics {
            payment_created: "created".into(),
            payment_completed: "completed".into(),
            payment_failed: "failed".into(),
            payment_canceled: "canceled".into(),
        }
    }

    fn won(amount: i64) -> Money {
        Money::new(Decimal::from(amount), Currency::Krw).unwrap()
    }

    fn key() -> PaymentKey {
        PaymentKey::parse("tgen_key_1").unwrap()
    }

    fn order() -> OrderId {
        OrderId::parse("order-confirm-1").unwrap()
    }

    fn approved() -> GatewayPayment {
        GatewayPayment {
            payment_key: key(),
            order_id: order(),
            status: GatewayStatus::Done,
            total_amount: won(15_000),
            balance_amount: won(15_000),
            method: Some("카드".into()),
            approved_at: Some(Utc::now()),
            last_transaction_key: Some("txk-approve".into()),
            failure: None,
            cancels: Vec::new(),
        }
    }

    async fn ready_payment(repository: &MemoryRepository) {
        let (payment, events) = execute(
            None,
            &PaymentCommand::Create {
                payment_id: payment_domain::PaymentId::new(),
                order_id: order(),
                user_id: UserId::parse("u-1").unwrap(),
                amount: won(15_000),
                created_at: Utc::now(),
            },
        )
        .unwrap();
        repository
            .commit(Commit {
                append: Some(Append {
                    expected_version: 0,
                    events,
                    state: payment,
                    occurred_at: Utc::now() - chrono::Duration::hours(1),
                }),
                ..Commit::default()
            })
            .await
            .unwrap();
    }

    fn confirm(amount: i64) -> Confirm {
        Confirm {
            payment_key: key(),
            order_id: order(),
            amount: Decimal::from(amount),
            causation: Causation::default(),
        }
    }

    async fn given(
        outcome: GatewayOutcome,
    ) -> (
        MemoryRepository,
        Scripted,
        ConfirmPayment<MemoryRepository, Scripted>,
    ) {
        let repository = MemoryRepository::default();
        ready_payment(&repository).await;
        let gateway = Scripted::answering(outcome);
        let use_case = ConfirmPayment::new(repository.clone(), gateway.clone(), topics());
        (repository, gateway, use_case)
    }

    #[tokio::test]
    async fn an_approval_makes_the_payment_done_and_announces_it() {
        let (repository, gateway, use_case) = given(GatewayOutcome::Succeeded(approved())).await;
        let Confirmed::Done(payment) = use_case.handle(confirm(15_000)).await.unwrap() else {
            panic!()
        };
        assert_eq!(payment.status(), PaymentStatus::Done);
        assert_eq!(gateway.confirms.load(Ordering::SeqCst), 1);
        let transactions = repository.all_transactions();
        assert_eq!(transactions.len(), 1);
        assert_eq!(transactions[0].status(), TransactionStatus::Succeeded);
        assert_eq!(
            gateway.keys.lock().unwrap()[0],
            transactions[0].idempotency_key()
        );
        let outbox = repository.outbox();
        assert_eq!(outbox.last().unwrap().event_type, "PaymentCompletedEvent");
        assert_eq!(
            outbox.last().unwrap().payload["data"]["paymentKey"],
            "tgen_key_1"
        );
    }

    #[tokio::test]
    async fn a_tampered_amount_never_reaches_the_gateway() {
        let (repository, gateway, use_case) = given(GatewayOutcome::Succeeded(approved())).await;
        let error = use_case.handle(confirm(100)).await.unwrap_err();
        assert!(
            matches!(error, ConfirmError::AmountMismatch { .. }),
            "{error:?}"
        );
        assert_eq!(gateway.confirms.load(Ordering::SeqCst), 0);
        assert_eq!(repository.payments()[0].status(), PaymentStatus::Ready);
        assert!(repository.all_transactions().is_empty());
    }

    #[tokio::test]
    async fn a_decline_aborts_with_the_pg_code() {
        let failure = Failure {
            code: "REJECT_CARD_PAYMENT".into(),
            message: "limit exceeded".into(),
        };
        let (repository, _, use_case) = given(GatewayOutcome::Declined(failure)).await;
        let Confirmed::Aborted(payment) = use_case.handle(confirm(15_000)).await.unwrap() else {
            panic!()
        };
        assert_eq!(payment.failure().unwrap().code, "REJECT_CARD_PAYMENT");
        assert_eq!(
            repository.all_transactions()[0].status(),
            TransactionStatus::Failed
        );
        let failed = repository.outbox().pop().unwrap();
        assert_eq!(failed.event_type, "PaymentFailedEvent");
        assert_eq!(failed.payload["data"]["code"], "REJECT_CARD_PAYMENT");
    }

    #[tokio::test]
    async fn an_unknown_outcome_is_looked_up_at_once() {
        let (_, gateway, use_case) = given(GatewayOutcome::Unknown("timeout".into())).await;
        *gateway.lookup.lock().unwrap() = Some(approved());
        let outcome = use_case.handle(confirm(15_000)).await.unwrap();
        assert!(matches!(outcome, Confirmed::Done(_)), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_still_unknown_outcome_is_processing_and_never_guessed() {
        let (repository, _, use_case) = given(GatewayOutcome::Unknown("timeout".into())).await;
        let Confirmed::Processing(payment) = use_case.handle(confirm(15_000)).await.unwrap() else {
            panic!()
        };
        assert_eq!(payment.status(), PaymentStatus::InProgress);
        assert_eq!(
            repository.all_transactions()[0].status(),
            TransactionStatus::Unknown
        );
        assert!(repository.outbox().is_empty());
    }

    #[tokio::test]
    async fn a_confirm_after_done_returns_the_payment_without_calling_the_pg() {
        let (_, gateway, use_case) = given(GatewayOutcome::Succeeded(approved())).await;
        use_case.handle(confirm(15_000)).await.unwrap();
        let again = use_case.handle(confirm(15_000)).await.unwrap();
        assert!(matches!(again, Confirmed::Done(_)));
        assert_eq!(gateway.confirms.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn fifty_concurrent_confirms_call_the_pg_once() {
        let (repository, gateway, use_case) = given(GatewayOutcome::Succeeded(approved())).await;
        let use_case = Arc::new(use_case);
        let calls = (0..50).map(|_| {
            let use_case = Arc::clone(&use_case);
            tokio::spawn(async move { use_case.handle(confirm(15_000)).await })
        });
        for result in futures::future::join_all(calls).await {
            match result.unwrap() {
                Ok(Confirmed::Done(_)) | Err(ConfirmError::InProgress(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(gateway.confirms.load(Ordering::SeqCst), 1);
        assert_eq!(repository.all_transactions().len(), 1);
    }

    #[tokio::test]
    async fn the_reconciler_retries_with_the_same_idempotency_key() {
        let (repository, gateway, use_case) =
            given(GatewayOutcome::Unknown("timeout".into())).await;
        use_case.handle(confirm(15_000)).await.unwrap();
        *gateway.confirm.lock().unwrap() = Some(GatewayOutcome::Succeeded(approved()));
        let reconciler = Reconciler::new(
            repository.clone(),
            gateway.clone(),
            topics(),
            ReconcilerSettings::default(),
        );
        let payment_id = repository.payments()[0].id();
        assert_eq!(
            reconciler.reconcile(payment_id).await.unwrap(),
            Reconciled::Settled(PaymentStatus::Done)
        );
        let keys = gateway.keys.lock().unwrap().clone();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], keys[1], "a retry must reuse the idempotency key");
        assert_eq!(
            reconciler.reconcile(payment_id).await.unwrap(),
            Reconciled::NothingToDo
        );
    }

    #[tokio::test]
    async fn past_the_confirm_window_an_unapproved_payment_is_aborted_not_left_hanging() {
        let (repository, gateway, use_case) =
            given(GatewayOutcome::Unknown("timeout".into())).await;
        use_case.handle(confirm(15_000)).await.unwrap();
        let closed = ReconcilerSettings {
            confirm_window: Duration::ZERO,
            ..ReconcilerSettings::default()
        };
        let reconciler = Reconciler::new(repository.clone(), gateway.clone(), topics(), closed);
        let payment_id = repository.payments()[0].id();
        assert_eq!(
            reconciler.reconcile(payment_id).await.unwrap(),
            Reconciled::Settled(PaymentStatus::Aborted)
        );
        assert_eq!(
            gateway.confirms.load(Ordering::SeqCst),
            1,
            "no confirm after the window"
        );
        let payment = repository.load(payment_id).await.unwrap().unwrap();
        assert_eq!(payment.failure().unwrap().code, "CONFIRM_WINDOW_EXPIRED");
    }
}

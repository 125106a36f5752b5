//! Use cases of the Toss widget: the success redirect (confirm) and the fail
//! redirect (a failed attempt, recorded).
//!
//! Confirm, the money path:
//! 1. the claimed amount must equal the stored order amount — the widget's
//!    amount is client-controlled, so a mismatch is refused and the PG is
//!    never called;
//! 2. IN_PROGRESS and an APPROVAL transaction (whose id is the PG's
//!    idempotency key) are COMMITTED before the PG is called — of many
//!    concurrent confirms exactly one wins that commit, the others answer
//!    "in progress";
//! 3. approved → DONE + completed event (then any refund asked meanwhile is
//!    carried out); declined → ABORTED + failed event; unknown → looked up at
//!    once; still unknown → "processing", left to the reconciler. Never
//!    guessed.
//! 4. nobody can end a customer's payment with a key that is not theirs: a
//!    refusal about the key or session itself is applied only when a lookup
//!    shows the key is this order's; otherwise the payment goes back to
//!    READY and the confirm is refused. Our own credential errors are never
//!    a decline either: back to READY, "unavailable".
//!
//! Runs twice? A confirm after DONE returns the payment without calling the
//! PG. Dies half-way? The payment stays IN_PROGRESS with its transaction, and
//! the reconciler finishes it with the same idempotency key.

use payment_domain::{
    Failure, Money, OrderId, Payment, PaymentCommand, PaymentError, PaymentKey, PaymentStatus,
    PaymentTransaction, TransactionKind, UserId,
};
use rust_decimal::Decimal;

use crate::error::{Classify, Contended};
use crate::gateway::{ConfirmRequest, GatewayOutcome, PaymentGateway};
use crate::integration::{Causation, Topics};
use crate::ports::{PaymentRef, PaymentRepository, Snapshot, StoreError};
use crate::runner::{run, run_from, Change, Decision, Ran, Trigger};
use crate::settle::{settle_approval_on, then_waiting_cancels, Resolution, SettleError};

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
    /// The PG refused the key (or its session) and holds no payment with it
    /// for this order: the payment is READY again, nothing was published.
    #[error("the payment key is not one the PG holds for this order ({})", .failure.code)]
    KeyNotVerified {
        payment: Box<Payment>,
        failure: Failure,
    },
    /// The PG did not process the confirm for a reason of ours (credentials,
    /// configuration), or a refusal could not be checked: the payment is
    /// READY again; the customer may retry.
    #[error("the payment gateway did not process the confirm: {reason}")]
    GatewayUnavailable {
        payment: Box<Payment>,
        reason: String,
    },
    #[error(transparent)]
    Contended(#[from] Contended),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for ConfirmError {
    fn is_permanent(&self) -> bool {
        match self {
            Self::Contended(error) => error.is_permanent(),
            Self::Store(error) => error.is_permanent(),
            // Asking again later may find the other confirm finished, or
            // the gateway working again.
            Self::InProgress(_) | Self::GatewayUnavailable { .. } => false,
            Self::NotFound(_)
            | Self::AmountMismatch { .. }
            | Self::NotConfirmable(_)
            | Self::KeyNotVerified { .. } => true,
        }
    }
}

/// What the gateway's answer to a confirm settles.
enum Learned {
    /// Nothing yet: the reconciler will find out.
    Nothing,
    Settles(Resolution),
    /// The PG did not process the attempt: back to READY, and refuse.
    Reopens(Failure, Reopened),
}

/// Why a confirm sent the payment back to READY.
enum Reopened {
    KeyNotVerified,
    Unavailable(String),
}

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
        self.handle_for(request, None).await
    }

    /// Confirms the payment of `request.order_id` for `owner` (`None`: any
    /// payment — an admin, or the unauthenticated widget redirect). Another
    /// user's payment answers exactly as a missing one, before anything
    /// else is checked, so its existence does not leak.
    ///
    /// # Errors
    /// [`ConfirmError`].
    pub async fn handle_for(
        &self,
        request: Confirm,
        owner: Option<&UserId>,
    ) -> Result<Confirmed, ConfirmError> {
        let which = PaymentRef::Order(request.order_id.clone());
        // The snapshot the start leaves is what the settle step decides on:
        // no read of what this commit just wrote (a conflict still reads).
        let (ran, started_snapshot) = run_from(
            &self.repository,
            &which,
            &Trigger::Untracked,
            None,
            true,
            |loaded, now| -> Result<_, ConfirmError> {
                let payment = &loaded
                    .ok_or_else(|| ConfirmError::NotFound(request.order_id.clone()))?
                    .payment;
                if owner.is_some_and(|user| user != payment.user_id()) {
                    return Err(ConfirmError::NotFound(request.order_id.clone()));
                }
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
                    PaymentStatus::Done
                    | PaymentStatus::PartialCanceled
                    | PaymentStatus::Canceled
                        if same_key =>
                    {
                        return Ok(Decision::Answer(payment.clone()));
                    }
                    PaymentStatus::InProgress if same_key => {
                        return Err(ConfirmError::InProgress(Box::new(payment.clone())))
                    }
                    _ => return Err(ConfirmError::NotConfirmable(Box::new(payment.clone()))),
                }
                let transaction = PaymentTransaction::request(
                    payment.id(),
                    TransactionKind::Approval,
                    claimed,
                    now,
                );
                let change = Change::decide(
                    Some(payment),
                    &PaymentCommand::StartConfirmation {
                        payment_key: request.payment_key.clone(),
                        amount: claimed,
                        transaction_id: transaction.id(),
                    },
                )
                .map_err(|_| ConfirmError::NotConfirmable(Box::new(payment.clone())))?;
                Ok(Decision::Record(
                    change.record(transaction.clone()),
                    transaction,
                ))
            },
        )
        .await?;
        match ran {
            Ran::Answered(done) => Ok(Confirmed::Done(done)),
            Ran::Recorded(started, transaction) => {
                self.call_gateway(started, started_snapshot, &transaction, &request)
                    .await
            }
        }
    }

    async fn call_gateway(
        &self,
        started: Payment,
        started_snapshot: Option<Snapshot>,
        transaction: &PaymentTransaction,
        request: &Confirm,
    ) -> Result<Confirmed, ConfirmError> {
        let outcome = self
            .gateway
            .confirm(&ConfirmRequest {
                payment_key: request.payment_key.clone(),
                order_id: request.order_id.clone(),
                amount: transaction.amount(),
                idempotency_key: transaction.idempotency_key().to_owned(),
            })
            .await;
        let learned = match outcome {
            GatewayOutcome::Succeeded(at_gateway) => {
                Resolution::of(&at_gateway).map_or(Learned::Nothing, Learned::Settles)
            }
            GatewayOutcome::Declined(failure) => Learned::Settles(Resolution::Declined(failure)),
            GatewayOutcome::KeyRefused(failure) => {
                self.verify_refusal(&started, request, failure).await
            }
            GatewayOutcome::Misconfigured(failure) => {
                tracing::warn!(payment_id = %started.id(), code = %failure.code, "the PG refused our credentials or configuration; the payment is READY again");
                let reason = format!("{}: {}", failure.code, failure.message);
                Learned::Reopens(failure, Reopened::Unavailable(reason))
            }
            GatewayOutcome::Unknown(reason) => {
                tracing::warn!(payment_id = %started.id(), %reason, "confirm outcome unknown; looking it up");
                match self.gateway.lookup_by_order(&request.order_id).await {
                    Ok(Some(at_gateway)) if at_gateway.payment_key == request.payment_key => {
                        Resolution::of(&at_gateway).map_or(Learned::Nothing, Learned::Settles)
                    }
                    Ok(_) => Learned::Nothing,
                    Err(error) => {
                        tracing::warn!(payment_id = %started.id(), %error, "lookup failed; the reconciler will retry");
                        Learned::Nothing
                    }
                }
            }
        };
        let (resolution, reopened) = match learned {
            Learned::Nothing => return Ok(Confirmed::Processing(started)),
            Learned::Settles(resolution) => (resolution, None),
            Learned::Reopens(failure, why) => {
                (Resolution::Reverted(failure.clone()), Some((failure, why)))
            }
        };
        let settled = match settle_approval_on(
            &self.repository,
            &self.topics,
            started.id(),
            &resolution,
            &request.causation,
            started_snapshot,
        )
        .await
        {
            Ok(settled) => settled,
            Err(SettleError::Contradiction { reason, .. }) => {
                tracing::error!(payment_id = %started.id(), %reason, "the PG's answer contradicts the payment; left IN_PROGRESS for an operator");
                return Ok(Confirmed::Processing(started));
            }
            Err(error) => {
                tracing::warn!(payment_id = %started.id(), %error, "outcome known but not recorded yet; the reconciler will record it");
                return Ok(Confirmed::Processing(started));
            }
        };
        match (settled.status(), reopened) {
            (PaymentStatus::Ready, Some((failure, why))) => {
                let payment = Box::new(settled);
                Err(match why {
                    Reopened::KeyNotVerified => ConfirmError::KeyNotVerified { payment, failure },
                    Reopened::Unavailable(reason) => {
                        ConfirmError::GatewayUnavailable { payment, reason }
                    }
                })
            }
            (PaymentStatus::Ready | PaymentStatus::InProgress, _) => {
                Ok(Confirmed::Processing(settled))
            }
            (PaymentStatus::Aborted | PaymentStatus::Expired, _) => Ok(Confirmed::Aborted(settled)),
            _ => Ok(Confirmed::Done(
                then_waiting_cancels(
                    &self.repository,
                    &self.gateway,
                    &self.topics,
                    settled,
                    &request.causation,
                )
                .await,
            )),
        }
    }

    /// A refusal about the key or session is the order's only if the PG
    /// holds this key for this order: then what it shows about the payment
    /// decides (its approval, its end, or else the refusal). A key it does
    /// not hold for this order — a bogus key, another order's — ends nothing.
    async fn verify_refusal(
        &self,
        started: &Payment,
        request: &Confirm,
        failure: Failure,
    ) -> Learned {
        match self.gateway.lookup(&request.payment_key).await {
            Ok(Some(at_gateway))
                if at_gateway.order_id == request.order_id
                    && at_gateway.payment_key == request.payment_key =>
            {
                Learned::Settles(
                    Resolution::of(&at_gateway).unwrap_or(Resolution::Declined(failure)),
                )
            }
            Ok(_) => {
                tracing::warn!(payment_id = %started.id(), code = %failure.code, "the PG refused a payment key it does not hold for this order; the payment is READY again");
                Learned::Reopens(failure, Reopened::KeyNotVerified)
            }
            Err(error) => {
                tracing::warn!(payment_id = %started.id(), code = %failure.code, %error, "a refusal of the payment key could not be checked; the payment is READY again");
                Learned::Reopens(failure, Reopened::Unavailable(error.to_string()))
            }
        }
    }
}

/// The widget's fail redirect: the customer gave up or the widget failed
/// before any confirm. The redirect is an unauthenticated browser request,
/// so it ends nothing: the failure is recorded on a READY payment (its
/// audit trail, and the reason its expiry will give) and the customer may
/// try again until the payment expires.
#[derive(Debug, Clone)]
pub struct RecordFailedAttempt<R> {
    repository: R,
}

#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("no payment for order {0}")]
    NotFound(OrderId),
    /// The domain refused to record the failure on a READY payment: a
    /// decision its own rules cannot replay (a bug).
    #[error(transparent)]
    Refused(PaymentError),
    #[error(transparent)]
    Contended(#[from] Contended),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for AttemptError {
    fn is_permanent(&self) -> bool {
        match self {
            Self::NotFound(_) | Self::Refused(_) => true,
            Self::Contended(error) => error.is_permanent(),
            Self::Store(error) => error.is_permanent(),
        }
    }
}

impl<R: PaymentRepository> RecordFailedAttempt<R> {
    pub const fn new(repository: R) -> Self {
        Self { repository }
    }

    /// Records `failure` on the order's payment if it is READY; a payment in
    /// any other state (being confirmed, paid, ended) is left as it is.
    /// Either way the payment is returned.
    ///
    /// # Errors
    /// [`AttemptError`].
    pub async fn handle(
        &self,
        order_id: &OrderId,
        failure: Failure,
    ) -> Result<Payment, AttemptError> {
        let which = PaymentRef::Order(order_id.clone());
        let ran = run(
            &self.repository,
            &which,
            &Trigger::Untracked,
            |loaded, _| -> Result<_, AttemptError> {
                let payment = &loaded
                    .ok_or_else(|| AttemptError::NotFound(order_id.clone()))?
                    .payment;
                if payment.status() != PaymentStatus::Ready {
                    return Ok(Decision::Answer(payment.clone()));
                }
                let change = Change::decide(
                    Some(payment),
                    &PaymentCommand::RecordAttemptFailure {
                        failure: failure.clone(),
                    },
                )
                .map_err(AttemptError::Refused)?;
                Ok(Decision::Record(change, ()))
            },
        )
        .await?;
        Ok(match ran {
            Ran::Answered(payment) | Ran::Recorded(payment, ()) => payment,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use payment_domain::TransactionStatus;

    use super::*;
    use crate::expire::ExpirePayments;
    use crate::gateway::{GatewayPayment, GatewayStatus};
    use crate::memory::MemoryRepository;
    use crate::ports::PaymentQueries as _;
    use crate::reconcile::{Reconciled, Reconciler, ReconcilerSettings};
    use crate::testing::{approved_at_gateway, payment_at, topics, Scripted, Stage};

    fn key() -> PaymentKey {
        PaymentKey::parse("tgen_key_1").unwrap()
    }

    fn order() -> OrderId {
        OrderId::parse("order-confirm-1").unwrap()
    }

    fn approved() -> GatewayPayment {
        approved_at_gateway("tgen_key_1", "order-confirm-1", 15_000)
    }

    async fn ready_payment(repository: &MemoryRepository) {
        payment_at(
            repository,
            "order-confirm-1",
            "tgen_key_1",
            15_000,
            Stage::Ready,
            chrono::Duration::hours(1),
        )
        .await;
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

    fn refusal(code: &str) -> Failure {
        Failure {
            code: code.into(),
            message: format!("{code} message"),
        }
    }

    async fn events(repository: &MemoryRepository) -> Vec<&'static str> {
        let which = PaymentRef::Id(repository.payments()[0].id());
        repository
            .load(&which)
            .await
            .unwrap()
            .unwrap()
            .history
            .iter()
            .map(|e| e.event.event_type())
            .collect()
    }

    #[tokio::test]
    async fn a_key_the_pg_does_not_hold_for_the_order_is_refused_and_the_payment_stays_payable() {
        let (repository, gateway, use_case) =
            given(GatewayOutcome::KeyRefused(refusal("NOT_FOUND_PAYMENT"))).await;
        // The PG holds no payment with this key (the lookup finds none).
        let error = use_case.handle(confirm(15_000)).await.unwrap_err();
        let ConfirmError::KeyNotVerified { payment, failure } = &error else {
            panic!("{error:?}")
        };
        assert!(error.is_permanent());
        assert_eq!(payment.status(), PaymentStatus::Ready);
        assert_eq!(payment.payment_key(), None);
        assert_eq!(failure.code, "NOT_FOUND_PAYMENT");
        assert!(repository.outbox().is_empty(), "nothing published");
        assert_eq!(
            repository.all_transactions()[0].status(),
            TransactionStatus::Failed
        );
        assert_eq!(
            events(&repository).await.last(),
            Some(&"ConfirmationReverted")
        );

        // The customer's real confirm goes through.
        *gateway.confirm.lock().unwrap() = Some(GatewayOutcome::Succeeded(approved()));
        let outcome = use_case.handle(confirm(15_000)).await.unwrap();
        assert!(matches!(outcome, Confirmed::Done(_)), "{outcome:?}");
        let keys = gateway.keys.lock().unwrap().clone();
        assert_ne!(keys[0], keys[1], "a new attempt, a new idempotency key");
    }

    #[tokio::test]
    async fn a_key_refusal_is_applied_when_the_pg_shows_the_key_is_the_orders() {
        let (repository, gateway, use_case) = given(GatewayOutcome::KeyRefused(refusal(
            "NOT_FOUND_PAYMENT_SESSION",
        )))
        .await;
        let mut at_gateway = approved();
        at_gateway.status = GatewayStatus::InProgress;
        gateway.shows(at_gateway);
        let Confirmed::Aborted(payment) = use_case.handle(confirm(15_000)).await.unwrap() else {
            panic!()
        };
        assert_eq!(payment.failure().unwrap().code, "NOT_FOUND_PAYMENT_SESSION");
        let failed = repository.outbox().pop().unwrap();
        assert_eq!(failed.event_type, "PaymentFailedEvent");
    }

    #[tokio::test]
    async fn a_key_refusal_for_another_orders_key_ends_nothing() {
        let (repository, gateway, use_case) = given(GatewayOutcome::KeyRefused(refusal(
            "NOT_FOUND_PAYMENT_SESSION",
        )))
        .await;
        gateway.shows(approved_at_gateway(
            "tgen_key_1",
            "order-someone-else",
            15_000,
        ));
        let error = use_case.handle(confirm(15_000)).await.unwrap_err();
        assert!(
            matches!(error, ConfirmError::KeyNotVerified { .. }),
            "{error:?}"
        );
        assert_eq!(repository.payments()[0].status(), PaymentStatus::Ready);
        assert!(repository.outbox().is_empty());
    }

    #[tokio::test]
    async fn a_key_refusal_that_cannot_be_checked_reopens_the_payment_and_is_unavailable() {
        let (repository, gateway, use_case) =
            given(GatewayOutcome::KeyRefused(refusal("NOT_FOUND_PAYMENT"))).await;
        gateway.lookup_fails.store(true, Ordering::SeqCst);
        let error = use_case.handle(confirm(15_000)).await.unwrap_err();
        assert!(
            matches!(error, ConfirmError::GatewayUnavailable { .. }),
            "{error:?}"
        );
        assert!(!error.is_permanent());
        assert_eq!(repository.payments()[0].status(), PaymentStatus::Ready);
        assert!(repository.outbox().is_empty());
    }

    #[tokio::test]
    async fn our_credential_error_is_never_a_decline() {
        let (repository, gateway, use_case) =
            given(GatewayOutcome::Misconfigured(refusal("UNAUTHORIZED_KEY"))).await;
        let error = use_case.handle(confirm(15_000)).await.unwrap_err();
        let ConfirmError::GatewayUnavailable { payment, .. } = &error else {
            panic!("{error:?}")
        };
        assert!(!error.is_permanent(), "503: retry once our key is fixed");
        assert_eq!(payment.status(), PaymentStatus::Ready);
        assert!(repository.outbox().is_empty());

        *gateway.confirm.lock().unwrap() = Some(GatewayOutcome::Succeeded(approved()));
        let outcome = use_case.handle(confirm(15_000)).await.unwrap();
        assert!(matches!(outcome, Confirmed::Done(_)), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_failed_widget_attempt_is_recorded_and_the_payment_stays_payable() {
        let (repository, _, use_case) = given(GatewayOutcome::Succeeded(approved())).await;
        let attempts = RecordFailedAttempt::new(repository.clone());
        let recorded = attempts
            .handle(&order(), refusal("PAY_PROCESS_CANCELED"))
            .await
            .unwrap();
        assert_eq!(recorded.status(), PaymentStatus::Ready);
        assert_eq!(recorded.failure().unwrap().code, "PAY_PROCESS_CANCELED");
        assert_eq!(events(&repository).await.last(), Some(&"AttemptFailed"));
        assert!(
            repository.outbox().is_empty(),
            "nothing ends, nothing published"
        );

        let outcome = use_case.handle(confirm(15_000)).await.unwrap();
        assert!(matches!(outcome, Confirmed::Done(_)), "{outcome:?}");
        let versions = repository.payments()[0].version();
        let unchanged = attempts
            .handle(&order(), refusal("PAY_PROCESS_ABORTED"))
            .await
            .unwrap();
        assert_eq!(unchanged.status(), PaymentStatus::Done);
        assert_eq!(
            unchanged.version(),
            versions,
            "a paid payment is left alone"
        );
    }

    #[tokio::test]
    async fn another_users_payment_is_confirmed_as_if_it_did_not_exist() {
        let (repository, gateway, use_case) = given(GatewayOutcome::Succeeded(approved())).await;
        let stranger = UserId::parse("u-2").unwrap();
        let error = use_case
            .handle_for(confirm(100), Some(&stranger))
            .await
            .unwrap_err();
        assert!(matches!(error, ConfirmError::NotFound(_)), "{error:?}");
        assert_eq!(gateway.confirms.load(Ordering::SeqCst), 0);
        assert_eq!(repository.payments()[0].status(), PaymentStatus::Ready);
        let owner = UserId::parse("u-1").unwrap();
        let outcome = use_case
            .handle_for(confirm(15_000), Some(&owner))
            .await
            .unwrap();
        assert!(matches!(outcome, Confirmed::Done(_)), "{outcome:?}");
    }

    #[tokio::test]
    async fn the_expiry_of_a_payment_whose_attempt_failed_gives_that_failure() {
        let (repository, _, _) = given(GatewayOutcome::Succeeded(approved())).await;
        RecordFailedAttempt::new(repository.clone())
            .handle(&order(), refusal("PAY_PROCESS_CANCELED"))
            .await
            .unwrap();
        let expiry = ExpirePayments::new(repository.clone(), topics(), Duration::ZERO, 10);
        assert_eq!(expiry.run_once().await.unwrap(), 1);
        let failed = repository.outbox().pop().unwrap();
        assert_eq!(failed.event_type, "PaymentFailedEvent");
        assert_eq!(failed.payload["data"]["status"], "EXPIRED");
        assert_eq!(failed.payload["data"]["code"], "PAY_PROCESS_CANCELED");
        assert_eq!(
            failed.payload["data"]["message"],
            "PAY_PROCESS_CANCELED message"
        );
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

    /// The memory store, counting reads; after its first commit (a
    /// confirm's start), `first_commit_then` may write on the payment as
    /// someone else would, between the confirm's two commits.
    #[derive(Clone)]
    struct Counting {
        inner: MemoryRepository,
        loads: Arc<std::sync::atomic::AtomicUsize>,
        commits: Arc<std::sync::atomic::AtomicUsize>,
        settle_first: bool,
    }

    impl Counting {
        fn new(inner: MemoryRepository, settle_first: bool) -> Self {
            Self {
                inner,
                loads: Arc::default(),
                commits: Arc::default(),
                settle_first,
            }
        }
    }

    impl PaymentRepository for Counting {
        async fn load(
            &self,
            which: &PaymentRef,
        ) -> Result<Option<crate::ports::Snapshot>, StoreError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            self.inner.load(which).await
        }
        async fn commit(&self, commit: crate::ports::Commit) -> Result<(), StoreError> {
            let payment_id = commit.append.as_ref().map(|a| a.state.id());
            self.inner.commit(commit).await?;
            let first = self.commits.fetch_add(1, Ordering::SeqCst) == 0;
            if let (true, true, Some(payment_id)) = (first, self.settle_first, payment_id) {
                // The reconciler (or the webhook) settles it first.
                crate::settle::settle_approval(
                    &self.inner,
                    &topics(),
                    payment_id,
                    &Resolution::Approved(approved()),
                    &Causation::default(),
                )
                .await
                .unwrap();
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_confirm_reads_the_payment_once_and_settles_on_what_its_start_wrote() {
        let repository = MemoryRepository::default();
        ready_payment(&repository).await;
        let counting = Counting::new(repository.clone(), false);
        let gateway = Scripted::answering(GatewayOutcome::Succeeded(approved()));
        let use_case = ConfirmPayment::new(counting.clone(), gateway, topics());
        let Confirmed::Done(payment) = use_case.handle(confirm(15_000)).await.unwrap() else {
            panic!()
        };
        assert_eq!(counting.loads.load(Ordering::SeqCst), 1, "one read");
        assert_eq!(counting.commits.load(Ordering::SeqCst), 2, "two commits");
        // What was decided on the carried snapshot is what a fresh read
        // shows.
        let stored = repository
            .load(&PaymentRef::Id(payment.id()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.payment, payment);
        assert_eq!(stored.transactions.len(), 1);
        assert_eq!(
            stored.transactions[0].status(),
            TransactionStatus::Succeeded
        );
        assert_eq!(
            repository.outbox().last().unwrap().event_type,
            "PaymentCompletedEvent"
        );
    }

    #[tokio::test]
    async fn a_payment_settled_by_someone_else_between_the_two_commits_is_read_again() {
        let repository = MemoryRepository::default();
        ready_payment(&repository).await;
        let counting = Counting::new(repository.clone(), true);
        let gateway = Scripted::answering(GatewayOutcome::Succeeded(approved()));
        let use_case = ConfirmPayment::new(counting.clone(), gateway, topics());
        let Confirmed::Done(payment) = use_case.handle(confirm(15_000)).await.unwrap() else {
            panic!()
        };
        assert_eq!(payment.status(), PaymentStatus::Done);
        assert_eq!(
            counting.loads.load(Ordering::SeqCst),
            2,
            "the stale settle conflicted and read the payment again"
        );
        assert_eq!(
            counting.commits.load(Ordering::SeqCst),
            1,
            "nothing written over the other settle"
        );
        let completed = repository
            .outbox()
            .iter()
            .filter(|m| m.event_type == "PaymentCompletedEvent")
            .count();
        assert_eq!(completed, 1, "completed once");
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
        let payment = repository.payment(payment_id).await.unwrap().unwrap();
        assert_eq!(payment.failure().unwrap().code, "CONFIRM_WINDOW_EXPIRED");
    }
}

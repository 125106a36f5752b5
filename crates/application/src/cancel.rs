//! Use case: give money back, in part or in full.
//!
//! 1. The amount is RESERVED (`CancelRequested`) and a CANCEL transaction —
//!    whose id is the PG's idempotency key — is committed before the PG is
//!    called. A cancel above what is left (balance less other reservations)
//!    is refused here, and the PG never hears of it; of many concurrent
//!    cancels only as many as the balance allows get a reservation.
//! 2. PG said yes → `PaymentCanceled` + `PaymentCanceledEvent`; no → the
//!    reservation is released; unknown → asked again with the SAME key (the
//!    PG replays its first answer), then left to the reconciler. A refund
//!    is never made twice and never guessed.
//!
//! A request that carries the client's idempotency key gets a transaction
//! id derived from it: repeating the request (a retry after a crash, a
//! redelivered message) finds the same transaction and resumes or answers
//! it, instead of cancelling again.

use payment_domain::{
    Failure, Money, Payment, PaymentCommand, PaymentError, PaymentId, PaymentStatus,
    PaymentTransaction, TransactionId, TransactionKind, TransactionStatus,
};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::error::{Classify, Contended};
use crate::gateway::{CancelRequest, GatewayOutcome, GatewayPayment, PaymentGateway};
use crate::integration::{Causation, Topics};
use crate::ports::{PaymentRef, PaymentRepository, StoreError};
use crate::runner::{run, Change, Decision, Ran, Trigger};
use crate::settle::{settle_cancel, CancelResolution, SettleError};

/// A cancel as asked.
#[derive(Debug, Clone)]
pub struct Cancel {
    pub payment_id: PaymentId,
    /// `None`: everything still cancelable.
    pub amount: Option<Decimal>,
    pub reason: String,
    /// The client's idempotency key (or the triggering message's id).
    pub request_key: Option<String>,
    /// What asked for the cancel; a message's inbox record is written with
    /// the reservation.
    pub trigger: Trigger,
    pub causation: Causation,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Canceled {
    /// The PG gave the money back.
    Done(Payment),
    /// The PG's answer is not known yet; the reconciler will settle it.
    Pending(Payment),
    /// This very request was made before and had refunded: nothing new.
    Repeated(Payment),
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("payment {0} does not exist")]
    NotFound(PaymentId),
    #[error("invalid cancel amount: {0}")]
    InvalidAmount(String),
    /// Refused by the rules (state, amount above what is left, reason);
    /// the PG was not called.
    #[error("{reason}")]
    Refused {
        payment: Box<Payment>,
        reason: PaymentError,
    },
    /// The PG refused the cancel.
    #[error("the payment gateway refused the cancel: {} {}", .failure.code, .failure.message)]
    Declined {
        payment: Box<Payment>,
        failure: Failure,
    },
    /// The PG's answer contradicts the reservation: not recorded, left
    /// pending for an operator.
    #[error("the gateway's answer does not fit payment {payment_id}: {reason}")]
    Contradiction {
        payment_id: PaymentId,
        reason: PaymentError,
    },
    #[error(transparent)]
    Contended(#[from] Contended),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for CancelError {
    fn is_permanent(&self) -> bool {
        match self {
            Self::NotFound(_)
            | Self::InvalidAmount(_)
            | Self::Refused { .. }
            | Self::Declined { .. }
            | Self::Contradiction { .. } => true,
            Self::Contended(error) => error.is_permanent(),
            Self::Store(error) => error.is_permanent(),
        }
    }
}

impl From<SettleError> for CancelError {
    fn from(error: SettleError) -> Self {
        match error {
            SettleError::NotFound(payment_id) => Self::NotFound(payment_id),
            SettleError::Contradiction { payment_id, reason } => {
                Self::Contradiction { payment_id, reason }
            }
            SettleError::Contended(contended) => Self::Contended(contended),
            SettleError::Store(store) => Self::Store(store),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CancelPayment<R, G> {
    repository: R,
    gateway: G,
    topics: Topics,
}

impl<R: PaymentRepository, G: PaymentGateway> CancelPayment<R, G> {
    pub const fn new(repository: R, gateway: G, topics: Topics) -> Self {
        Self {
            repository,
            gateway,
            topics,
        }
    }

    /// Cancels (part of) a payment.
    ///
    /// # Errors
    /// [`CancelError`]; [`StoreError::AlreadyProcessed`] when the triggering
    /// message was handled before (nothing new).
    pub async fn handle(&self, request: Cancel) -> Result<Canceled, CancelError> {
        let transaction_id =
            request
                .request_key
                .as_deref()
                .map_or_else(TransactionId::new, |key| {
                    TransactionId::from_uuid(Uuid::new_v5(
                        request.payment_id.as_uuid(),
                        key.as_bytes(),
                    ))
                });
        let which = PaymentRef::Id(request.payment_id);
        let ran = run(
            &self.repository,
            &which,
            &request.trigger,
            |loaded, now| -> Result<_, CancelError> {
                let loaded = loaded.ok_or(CancelError::NotFound(request.payment_id))?;
                let payment = &loaded.payment;
                if let Some(earlier) = loaded
                    .transactions
                    .iter()
                    .find(|t| t.id() == transaction_id)
                {
                    return Ok(Decision::Answer((payment.clone(), earlier.clone())));
                }
                let amount = request
                    .amount
                    .map(|amount| Money::new(amount, payment.amount().currency()))
                    .transpose()
                    .map_err(|e| CancelError::InvalidAmount(e.to_string()))?;
                let refuse = |reason| CancelError::Refused {
                    payment: Box::new(payment.clone()),
                    reason,
                };
                // The domain may reserve a refund while the approval is unknown;
                // this use case asks the PG at once, so it cancels only what the
                // PG approved.
                if payment.status() == PaymentStatus::InProgress {
                    return Err(refuse(PaymentError::InvalidTransition {
                        from: PaymentStatus::InProgress,
                        action: "cancel",
                    }));
                }
                let command = PaymentCommand::RequestCancel {
                    transaction_id,
                    amount,
                    reason: request.reason.clone(),
                };
                let change = Change::decide(Some(payment), &command).map_err(refuse)?;
                let reserved = change
                    .state()
                    .pending_cancels()
                    .iter()
                    .find(|p| p.transaction_id == transaction_id)
                    .map(|p| p.amount)
                    .ok_or_else(|| refuse(PaymentError::UnknownCancel(transaction_id)))?;
                let transaction = PaymentTransaction::request_as(
                    transaction_id,
                    payment.id(),
                    TransactionKind::Cancel,
                    reserved,
                    now,
                );
                Ok(Decision::Record(
                    change.record(transaction.clone()),
                    transaction,
                ))
            },
        )
        .await?;
        match ran {
            Ran::Answered((payment, earlier)) => {
                self.resume(payment, earlier, &request.causation).await
            }
            Ran::Recorded(requested, transaction) => {
                self.ask_gateway(requested, &transaction, &request.causation)
                    .await
            }
        }
    }

    /// Answers a repeated request from its transaction.
    async fn resume(
        &self,
        payment: Payment,
        transaction: PaymentTransaction,
        causation: &Causation,
    ) -> Result<Canceled, CancelError> {
        match transaction.status() {
            TransactionStatus::Unknown => self.ask_gateway(payment, &transaction, causation).await,
            TransactionStatus::Succeeded => Ok(Canceled::Repeated(payment)),
            TransactionStatus::Failed => Err(CancelError::Declined {
                payment: Box::new(payment),
                failure: Failure {
                    code: transaction
                        .failure_code()
                        .unwrap_or("CANCEL_FAILED")
                        .to_owned(),
                    message: "the payment gateway refused this cancel".into(),
                },
            }),
        }
    }

    async fn ask_gateway(
        &self,
        payment: Payment,
        transaction: &PaymentTransaction,
        causation: &Causation,
    ) -> Result<Canceled, CancelError> {
        match ask_for_cancel(&self.gateway, &payment, transaction).await {
            None => Ok(Canceled::Pending(payment)),
            Some(resolution) => {
                let settled = settle_cancel(
                    &self.repository,
                    &self.topics,
                    payment.id(),
                    transaction.id(),
                    &resolution,
                    causation,
                )
                .await?;
                match resolution {
                    CancelResolution::Refunded { .. } => Ok(Canceled::Done(settled)),
                    CancelResolution::Refused(failure) => Err(CancelError::Declined {
                        payment: Box::new(settled),
                        failure,
                    }),
                }
            }
        }
    }
}

/// Asks the PG to cancel the reserved amount of `transaction`; an unknown
/// answer is asked once more with the same idempotency key. `None`: still
/// unknown.
pub async fn ask_for_cancel<G: PaymentGateway>(
    gateway: &G,
    payment: &Payment,
    transaction: &PaymentTransaction,
) -> Option<CancelResolution> {
    let pending = payment
        .pending_cancels()
        .iter()
        .find(|p| p.transaction_id == transaction.id())?;
    let request = CancelRequest {
        payment_key: payment.payment_key()?.clone(),
        amount: pending.amount,
        reason: pending.reason.clone(),
        idempotency_key: transaction.idempotency_key().to_owned(),
    };
    for _ in 0..2 {
        match gateway.cancel(&request).await {
            GatewayOutcome::Succeeded(at_gateway) => {
                return Some(CancelResolution::Refunded {
                    transaction_key: transaction_key_of(&at_gateway, pending.amount),
                });
            }
            GatewayOutcome::Declined(failure) => return Some(CancelResolution::Refused(failure)),
            GatewayOutcome::Unknown(reason) => {
                tracing::warn!(payment_id = %payment.id(), transaction_id = %transaction.id(), %reason, "cancel outcome unknown");
            }
        }
    }
    None
}

/// The PG's key of the cancel just made: its newest cancel of that amount.
fn transaction_key_of(at_gateway: &GatewayPayment, amount: Money) -> Option<String> {
    at_gateway
        .cancels
        .iter()
        .rev()
        .find(|c| c.amount == amount)
        .and_then(|c| c.transaction_key.clone())
        .or_else(|| at_gateway.last_transaction_key.clone())
}

#[cfg(test)]
mod tests {
    use payment_domain::PaymentStatus;

    use super::*;
    use crate::memory::MemoryRepository;
    use crate::ports::{Commit, InboxEntry, PaymentQueries as _};
    use crate::testing::{
        approved_at_gateway, cancel_request, canceled_at_gateway, topics, won, world, Scripted,
        Stage,
    };

    const ORDER: &str = "order-cancel-1";
    const KEY: &str = "tgen_cancel_1";

    async fn given(
        stage: Stage,
    ) -> (
        MemoryRepository,
        Scripted,
        CancelPayment<MemoryRepository, Scripted>,
        Payment,
    ) {
        let (repository, gateway, payment) = world(ORDER, KEY, stage).await;
        let use_case = CancelPayment::new(repository.clone(), gateway.clone(), topics());
        (repository, gateway, use_case, payment)
    }

    fn refunded(cancels: &[(i64, &str)]) -> GatewayOutcome {
        GatewayOutcome::Succeeded(canceled_at_gateway(
            approved_at_gateway(KEY, ORDER, 10_000),
            cancels,
        ))
    }

    #[tokio::test]
    async fn a_refund_is_reserved_then_recorded_and_announced_once() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        gateway.cancels_with(refunded(&[(4_000, "txk-c1")]));
        let Canceled::Done(canceled) = use_case
            .handle(cancel_request(&payment, Some(4_000), "k1"))
            .await
            .unwrap()
        else {
            panic!("refunded")
        };
        assert_eq!(canceled.status(), PaymentStatus::PartialCanceled);
        assert_eq!(canceled.balance(), won(6_000));
        assert!(canceled.pending_cancels().is_empty());
        let transactions = repository.all_transactions();
        assert_eq!(transactions.len(), 1);
        assert_eq!(transactions[0].kind(), TransactionKind::Cancel);
        assert_eq!(transactions[0].status(), TransactionStatus::Succeeded);
        assert_eq!(transactions[0].transaction_key(), Some("txk-c1"));
        assert_eq!(
            gateway.cancel_keys.lock().unwrap().as_slice(),
            [transactions[0].idempotency_key()]
        );
        let outbox = repository.outbox();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].event_type, "PaymentCanceledEvent");
        assert_eq!(outbox[0].payload["data"]["canceledAmount"], 4_000);
        assert_eq!(outbox[0].payload["data"]["transactionKey"], "txk-c1");
    }

    #[tokio::test]
    async fn a_cancel_above_what_is_left_never_reaches_the_pg() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        let error = use_case
            .handle(cancel_request(&payment, Some(10_001), "k1"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                CancelError::Refused {
                    reason: PaymentError::NotCancelableAmount { .. },
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.is_permanent());
        assert_eq!(gateway.cancels(), 0);
        assert!(repository.all_transactions().is_empty());
    }

    #[tokio::test]
    async fn a_payment_whose_approval_is_unknown_is_not_canceled() {
        let (_, gateway, use_case, payment) = given(Stage::InProgress).await;
        let error = use_case
            .handle(cancel_request(&payment, None, "k1"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                CancelError::Refused {
                    reason: PaymentError::InvalidTransition {
                        from: PaymentStatus::InProgress,
                        ..
                    },
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(gateway.cancels(), 0);
    }

    #[tokio::test]
    async fn a_declined_cancel_releases_its_reservation() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        gateway.cancels_with(GatewayOutcome::Declined(Failure {
            code: "NOT_CANCELABLE_PAYMENT".into(),
            message: "too late".into(),
        }));
        let error = use_case
            .handle(cancel_request(&payment, Some(3_000), "k1"))
            .await
            .unwrap_err();
        let CancelError::Declined { payment, failure } = error else {
            panic!("{error:?}")
        };
        assert_eq!(failure.code, "NOT_CANCELABLE_PAYMENT");
        assert_eq!(payment.balance(), won(10_000));
        assert_eq!(payment.cancelable(), won(10_000), "reservation released");
        let transactions = repository.all_transactions();
        assert_eq!(transactions[0].status(), TransactionStatus::Failed);
        assert!(repository.outbox().is_empty());
    }

    #[tokio::test]
    async fn an_unknown_answer_is_asked_again_with_the_same_key_then_left_pending() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        let Canceled::Pending(pending) = use_case
            .handle(cancel_request(&payment, Some(2_000), "k1"))
            .await
            .unwrap()
        else {
            panic!("pending")
        };
        assert_eq!(pending.cancelable(), won(8_000), "still reserved");
        assert_eq!(pending.balance(), won(10_000));
        let keys = gateway.cancel_keys.lock().unwrap().clone();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], keys[1]);
        assert_eq!(
            repository.all_transactions()[0].status(),
            TransactionStatus::Unknown
        );
    }

    #[tokio::test]
    async fn the_same_request_again_answers_from_its_transaction() {
        let (_, gateway, use_case, payment) = given(Stage::Done).await;
        gateway.cancels_with(refunded(&[(1_000, "txk-c1")]));
        use_case
            .handle(cancel_request(&payment, Some(1_000), "k1"))
            .await
            .unwrap();
        let again = use_case
            .handle(cancel_request(&payment, Some(1_000), "k1"))
            .await
            .unwrap();
        let Canceled::Repeated(repeated) = again else {
            panic!("{again:?}")
        };
        assert_eq!(repeated.balance(), won(9_000));
        assert_eq!(gateway.cancels(), 1, "refunded once");
    }

    #[tokio::test]
    async fn a_message_is_recorded_in_the_inbox_with_the_reservation() {
        let (repository, _, use_case, payment) = given(Stage::Done).await;
        let entry = InboxEntry {
            consumer: "order.refund.requested".into(),
            message_id: "refund-1".into(),
        };
        let request = Cancel {
            trigger: Trigger::Message(entry.clone()),
            ..cancel_request(&payment, Some(1_000), "refund-1")
        };
        // The PG does not answer: only the reservation's commit happened.
        let outcome = use_case.handle(request).await.unwrap();
        assert!(matches!(outcome, Canceled::Pending(_)), "{outcome:?}");
        assert!(repository.processed(&entry));
    }

    #[tokio::test]
    async fn a_message_already_in_the_inbox_reserves_nothing_and_calls_no_one() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        let entry = InboxEntry {
            consumer: "order.refund.requested".into(),
            message_id: "refund-1".into(),
        };
        // Handled by another delivery meanwhile.
        repository
            .commit(Commit {
                inbox: Some(entry.clone()),
                ..Commit::default()
            })
            .await
            .unwrap();
        let request = Cancel {
            trigger: Trigger::Message(entry),
            ..cancel_request(&payment, Some(1_000), "refund-1")
        };
        let error = use_case.handle(request).await.unwrap_err();
        assert!(
            matches!(error, CancelError::Store(StoreError::AlreadyProcessed(_))),
            "{error:?}"
        );
        assert_eq!(gateway.cancels(), 0);
        let unchanged = repository.payment(payment.id()).await.unwrap().unwrap();
        assert_eq!(unchanged.cancelable(), won(10_000));
    }
}

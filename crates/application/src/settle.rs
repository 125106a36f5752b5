//! Recording what the gateway said about a pending approval or a pending
//! cancel — shared by the confirm and cancel flows, the reconciler and the
//! webhook, so they can race without harm: whoever commits first settles
//! the payment, the others find it settled and stop.

use payment_domain::{
    Failure, Payment, PaymentCommand, PaymentError, PaymentId, PaymentStatus, TransactionId,
    TransactionKind, TransactionStatus,
};

use crate::error::{Classify, Contended};
use crate::gateway::{GatewayPayment, GatewayStatus};
use crate::integration::{self, Causation, Topics};
use crate::ports::{PaymentRef, PaymentRepository, StoreError};
use crate::runner::{run, Change, Decision, Ran, Trigger};

/// A definitive answer about an approval.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    Approved(GatewayPayment),
    Declined(Failure),
    /// The PG never processed the attempt (our credentials, or a key it
    /// does not hold for this order): back to READY, the customer may retry.
    Reverted(Failure),
}

impl Resolution {
    /// What a looked-up gateway payment says about its approval, if anything
    /// definitive. A payment the gateway holds as READY / IN_PROGRESS is not
    /// decided yet: `None`.
    #[must_use]
    pub fn of(payment: &GatewayPayment) -> Option<Self> {
        match payment.status {
            // Approved at some point (a later cancel does not undo that).
            GatewayStatus::Done | GatewayStatus::PartialCanceled | GatewayStatus::Canceled => {
                Some(Self::Approved(payment.clone()))
            }
            GatewayStatus::Aborted | GatewayStatus::Expired => Some(Self::Declined(
                payment.failure.clone().unwrap_or_else(|| Failure {
                    code: format!("PG_{:?}", payment.status).to_uppercase(),
                    message: "the payment gateway ended the payment without approval".into(),
                }),
            )),
            GatewayStatus::Ready | GatewayStatus::InProgress | GatewayStatus::WaitingForDeposit => {
                None
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("payment {0} does not exist")]
    NotFound(PaymentId),
    /// The gateway's answer contradicts our payment (another key or amount):
    /// never recorded, left for an operator.
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

impl Classify for SettleError {
    fn is_permanent(&self) -> bool {
        match self {
            Self::NotFound(_) | Self::Contradiction { .. } => true,
            Self::Contended(error) => error.is_permanent(),
            Self::Store(error) => error.is_permanent(),
        }
    }
}

/// Settles a payment's pending approval with `resolution`: DONE +
/// `PaymentCompletedEvent`, ABORTED + `PaymentFailedEvent`, or back to
/// READY with nothing published (with a refund waiting, the domain aborts
/// instead: `PaymentFailedEvent`), with the APPROVAL transaction settled in
/// the same commit. A payment that is no longer IN_PROGRESS is returned as
/// it is (someone settled it first).
///
/// # Errors
/// [`SettleError`].
pub async fn settle_approval<R: PaymentRepository>(
    repository: &R,
    topics: &Topics,
    payment_id: PaymentId,
    resolution: &Resolution,
    causation: &Causation,
) -> Result<Payment, SettleError> {
    let which = PaymentRef::Id(payment_id);
    let ran = run(
        repository,
        &which,
        &Trigger::Untracked,
        |loaded, now| -> Result<_, SettleError> {
            let loaded = loaded.ok_or(SettleError::NotFound(payment_id))?;
            let payment = &loaded.payment;
            if payment.status() != PaymentStatus::InProgress {
                return Ok(Decision::Answer(payment.clone()));
            }
            let mut pending = loaded
                .transactions
                .iter()
                .rev()
                .find(|t| {
                    t.kind() == TransactionKind::Approval
                        && t.status() == TransactionStatus::Unknown
                })
                .cloned();
            let command = match resolution {
                Resolution::Approved(at_gateway) => {
                    if let Some(transaction) = pending.as_mut() {
                        let _ = transaction.succeed(at_gateway.last_transaction_key.clone(), now);
                    }
                    PaymentCommand::Approve {
                        payment_key: at_gateway.payment_key.clone(),
                        approved_amount: at_gateway.total_amount,
                        method: at_gateway.method.clone(),
                        approved_at: at_gateway.approved_at.unwrap_or(now),
                    }
                }
                Resolution::Declined(failure) => {
                    if let Some(transaction) = pending.as_mut() {
                        let _ = transaction.fail(failure.code.clone(), now);
                    }
                    PaymentCommand::Abort {
                        failure: failure.clone(),
                    }
                }
                Resolution::Reverted(failure) => {
                    if let Some(transaction) = pending.as_mut() {
                        let _ = transaction.fail(failure.code.clone(), now);
                    }
                    PaymentCommand::RevertConfirmation {
                        failure: failure.clone(),
                    }
                }
            };
            let mut change = Change::decide(Some(payment), &command)
                .map_err(|reason| SettleError::Contradiction { payment_id, reason })?;
            let announcement = match change.state().status() {
                PaymentStatus::Done => Some(integration::payment_completed(
                    topics,
                    change.state(),
                    causation,
                    now,
                )),
                PaymentStatus::Aborted => Some(integration::payment_failed(
                    topics,
                    change.state(),
                    causation,
                    now,
                )),
                // Reverted: the payment is open again, nothing to tell.
                _ => None,
            };
            if let Some(transaction) = pending {
                change = change.record(transaction);
            }
            if let Some(announcement) = announcement {
                change = change.announce(announcement);
            }
            Ok(Decision::Record(change, ()))
        },
    )
    .await?;
    Ok(match ran {
        Ran::Answered(payment) | Ran::Recorded(payment, ()) => payment,
    })
}

/// What the PG said about a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelResolution {
    Refunded { transaction_key: Option<String> },
    Refused(Failure),
}

/// Records the PG's answer to a requested cancel: the refund (balance down,
/// `PaymentCanceledEvent`) or the release of the reservation, with the
/// CANCEL transaction settled in the same commit. Idempotent: an answer
/// already recorded is not recorded again.
///
/// # Errors
/// [`SettleError`].
pub async fn settle_cancel<R: PaymentRepository>(
    repository: &R,
    topics: &Topics,
    payment_id: PaymentId,
    transaction_id: TransactionId,
    resolution: &CancelResolution,
    causation: &Causation,
) -> Result<Payment, SettleError> {
    let which = PaymentRef::Id(payment_id);
    let ran = run(
        repository,
        &which,
        &Trigger::Untracked,
        |loaded, now| -> Result<_, SettleError> {
            let loaded = loaded.ok_or(SettleError::NotFound(payment_id))?;
            let payment = &loaded.payment;
            let Some(pending) = payment
                .pending_cancels()
                .iter()
                .find(|p| p.transaction_id == transaction_id)
            else {
                return Ok(Decision::Answer(payment.clone())); // answered already
            };
            let mut transaction = loaded
                .transactions
                .iter()
                .find(|t| t.id() == transaction_id)
                .cloned();
            let command = match resolution {
                CancelResolution::Refunded { transaction_key } => {
                    if let Some(t) = transaction.as_mut() {
                        let _ = t.succeed(transaction_key.clone(), now);
                    }
                    PaymentCommand::ConfirmCancel {
                        transaction_id,
                        transaction_key: transaction_key.clone(),
                    }
                }
                CancelResolution::Refused(failure) => {
                    if let Some(t) = transaction.as_mut() {
                        let _ = t.fail(failure.code.clone(), now);
                    }
                    PaymentCommand::RejectCancel {
                        transaction_id,
                        failure: failure.clone(),
                    }
                }
            };
            let mut change = Change::decide(Some(payment), &command)
                .map_err(|reason| SettleError::Contradiction { payment_id, reason })?;
            if let CancelResolution::Refunded { transaction_key } = resolution {
                let canceled = integration::payment_canceled(
                    topics,
                    change.state(),
                    pending.amount,
                    transaction_key.as_deref(),
                    &pending.reason,
                    causation,
                    now,
                );
                change = change.announce(canceled);
            }
            if let Some(transaction) = transaction {
                change = change.record(transaction);
            }
            Ok(Decision::Record(change, ()))
        },
    )
    .await?;
    Ok(match ran {
        Ran::Answered(payment) | Ran::Recorded(payment, ()) => payment,
    })
}

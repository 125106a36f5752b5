//! Recording what the gateway said about a pending approval — shared by the
//! confirm flow, the reconciler and the webhook, so the three can race
//! without harm: whoever commits first settles the payment, the others find
//! it settled and stop.

use chrono::Utc;
use payment_domain::{
    execute, Failure, Payment, PaymentCommand, PaymentError, PaymentId, PaymentStatus,
    TransactionKind, TransactionStatus,
};

use crate::gateway::{GatewayPayment, GatewayStatus};
use crate::integration::{self, Causation, Topics};
use crate::ports::{Append, Commit, PaymentRepository, StoreError};

/// A definitive answer about an approval.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    Approved(GatewayPayment),
    Declined(Failure),
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
    Store(#[from] StoreError),
}

const ATTEMPTS: usize = 5;

/// Settles a payment's pending approval with `resolution`: DONE +
/// `PaymentCompletedEvent`, or ABORTED + `PaymentFailedEvent`, with the
/// APPROVAL transaction settled in the same commit. A payment that is no
/// longer IN_PROGRESS is returned as it is (someone settled it first).
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
    for _ in 0..ATTEMPTS {
        let payment = repository
            .load(payment_id)
            .await?
            .ok_or(SettleError::NotFound(payment_id))?;
        if payment.status() != PaymentStatus::InProgress {
            return Ok(payment);
        }
        let now = Utc::now();
        let mut pending = repository
            .transactions(payment_id)
            .await?
            .into_iter()
            .rev()
            .find(|t| {
                t.kind() == TransactionKind::Approval && t.status() == TransactionStatus::Unknown
            });
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
        };
        let (next, events) = execute(Some(&payment), &command)
            .map_err(|reason| SettleError::Contradiction { payment_id, reason })?;
        let announcement = match next.status() {
            PaymentStatus::Done => integration::payment_completed(topics, &next, causation, now),
            _ => integration::payment_failed(topics, &next, causation, now),
        };
        let commit = Commit {
            append: Some(Append {
                expected_version: payment.version(),
                events,
                state: next.clone(),
                occurred_at: now,
            }),
            transactions: pending.into_iter().collect(),
            outbox: vec![announcement],
            inbox: None,
        };
        match repository.commit(commit).await {
            Ok(()) => return Ok(next),
            Err(StoreError::Conflict { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(StoreError::Unexpected(anyhow::anyhow!(
        "payment {payment_id} kept changing while being settled"
    ))
    .into())
}

//! Recording what the gateway said about a pending approval or a pending
//! cancel — shared by the confirm and cancel flows, the reconciler and the
//! webhook, so they can race without harm: whoever commits first settles
//! the payment, the others find it settled and stop.

use chrono::{DateTime, Utc};
use payment_domain::{
    Failure, Payment, PaymentCommand, PaymentError, PaymentId, PaymentStatus, TransactionId,
    TransactionKind, TransactionStatus,
};

use crate::cancel::carry_out_waiting_cancels;
use crate::cancel::release_unapproved;
use crate::error::{Classify, Contended};
use crate::gateway::{GatewayPayment, GatewayStatus, PaymentGateway};
use crate::integration::{self, Causation, Topics};
use crate::ports::{PaymentRef, PaymentRepository, Snapshot, StoreError};
use crate::runner::{run, run_from, Change, Decision, Ran, Trigger};

/// Carries out the refunds asked while `settled`'s approval was unknown
/// (the cancel use case's [`carry_out_waiting_cancels`]), if it has any:
/// called after an approval is settled. What is not carried out now stays
/// reserved for the reconciler. Answers the payment as it is afterwards.
pub(crate) async fn then_waiting_cancels<R: PaymentRepository, G: PaymentGateway>(
    repository: &R,
    gateway: &G,
    topics: &Topics,
    settled: Payment,
    causation: &Causation,
) -> Payment {
    if settled.pending_cancels().is_empty() {
        return settled;
    }
    match carry_out_waiting_cancels(repository, gateway, topics, settled.id(), causation).await {
        Ok(payment) => payment,
        Err(error) => {
            tracing::warn!(payment_id = %settled.id(), %error, "refunds waiting for the approval left to the reconciler");
            settled
        }
    }
}

/// What a cancel made at the PG without our request is recorded with
/// (Toss's dashboard, or cancels a lookup shows on an approval we learn late).
pub(crate) const OUTSIDE_CANCEL_REASON: &str = "canceled at the payment gateway";

/// A definitive answer about an approval.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Approved, as the gateway shows the payment now (with any cancels
    /// made since).
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

/// Settles a payment's pending approval with `resolution`, the APPROVAL
/// transaction settled in the same commit:
/// * approved → DONE + `PaymentCompletedEvent`; when the gateway shows
///   cancels already (a late lookup of a `PARTIAL_CANCELED` / `CANCELED`
///   payment), each is recorded too, in the same commit, with its
///   `PaymentCanceledEvent` — and a payment all of whose money went back
///   gets no `PaymentCompletedEvent` (nothing is left for the order to be
///   fulfilled with; its cancel events say the money came and went);
/// * declined → ABORTED + `PaymentFailedEvent`;
/// * reverted → READY, nothing published (with a refund waiting, the domain
///   aborts instead: `PaymentFailedEvent`).
///
/// A payment that is no longer IN_PROGRESS is returned as it is (someone
/// settled it first).
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
    settle_approval_on(repository, topics, payment_id, resolution, causation, None).await
}

/// [`settle_approval`], deciding first on `known` — the snapshot the
/// caller's own commit left (a confirm's start) — instead of reading the
/// payment again. The version guard stays: if anyone changed the payment
/// since, the commit conflicts and the payment is read and decided again.
///
/// # Errors
/// [`SettleError`].
pub(crate) async fn settle_approval_on<R: PaymentRepository>(
    repository: &R,
    topics: &Topics,
    payment_id: PaymentId,
    resolution: &Resolution,
    causation: &Causation,
    known: Option<Snapshot>,
) -> Result<Payment, SettleError> {
    let which = PaymentRef::Id(payment_id);
    let (ran, _) = run_from(
        repository,
        &which,
        &Trigger::Untracked,
        known,
        false,
        |loaded, now| -> Result<_, SettleError> {
            let loaded = loaded.ok_or(SettleError::NotFound(payment_id))?;
            let payment = &loaded.payment;
            if payment.status() != PaymentStatus::InProgress {
                return Ok(Decision::Answer(payment.clone()));
            }
            let contradiction = |reason| SettleError::Contradiction { payment_id, reason };
            let mut pending = loaded
                .transactions
                .iter()
                .rev()
                .find(|t| {
                    t.kind() == TransactionKind::Approval
                        && t.status() == TransactionStatus::Unknown
                })
                .cloned();
            let mut change = match resolution {
                Resolution::Approved(at_gateway) => {
                    if let Some(transaction) = pending.as_mut() {
                        let _ = transaction.succeed(at_gateway.last_transaction_key.clone(), now);
                    }
                    approved(topics, payment, at_gateway, causation, now).map_err(contradiction)?
                }
                Resolution::Declined(failure) | Resolution::Reverted(failure) => {
                    if let Some(transaction) = pending.as_mut() {
                        let _ = transaction.fail(failure.code.clone(), now);
                    }
                    let command = if matches!(resolution, Resolution::Declined(_)) {
                        PaymentCommand::Abort {
                            failure: failure.clone(),
                        }
                    } else {
                        PaymentCommand::RevertConfirmation {
                            failure: failure.clone(),
                        }
                    };
                    let change = Change::decide(Some(payment), &command).map_err(contradiction)?;
                    if change.state().status() == PaymentStatus::Aborted {
                        let failed =
                            integration::payment_failed(topics, change.state(), causation, now);
                        change.announce(failed)
                    } else {
                        change
                    }
                }
            };
            if let Some(transaction) = pending {
                change = change.record(transaction);
            }
            // Refunds that waited for this approval, released by an abort.
            let change = release_unapproved(change, loaded, topics, causation, now);
            Ok(Decision::Record(change, ()))
        },
    )
    .await?;
    Ok(match ran {
        Ran::Answered(payment) | Ran::Recorded(payment, ()) => payment,
    })
}

/// The approval of `payment` as `at_gateway` shows it, then every cancel
/// the gateway already made, each announced; `PaymentCompletedEvent` first
/// unless nothing is left of the money.
fn approved(
    topics: &Topics,
    payment: &Payment,
    at_gateway: &GatewayPayment,
    causation: &Causation,
    now: DateTime<Utc>,
) -> Result<Change, PaymentError> {
    let mut change = Change::decide(
        Some(payment),
        &PaymentCommand::Approve {
            payment_key: at_gateway.payment_key.clone(),
            approved_amount: at_gateway.total_amount,
            method: at_gateway.method.clone(),
            approved_at: at_gateway.approved_at.unwrap_or(now),
        },
    )?;
    // Completed before its cancels, as of the approval: the order service
    // reads them in this order (one key, one partition).
    let mut announcements = vec![integration::payment_completed(
        topics,
        change.state(),
        causation,
        now,
    )];
    for cancel in &at_gateway.cancels {
        change = change.then(&PaymentCommand::Cancel {
            amount: Some(cancel.amount),
            reason: OUTSIDE_CANCEL_REASON.into(),
            transaction_key: cancel.transaction_key.clone(),
        })?;
        announcements.push(integration::payment_canceled(
            topics,
            change.state(),
            cancel.amount,
            cancel.transaction_key.as_deref(),
            OUTSIDE_CANCEL_REASON,
            causation,
            now,
        ));
    }
    if change.state().status() == PaymentStatus::Canceled {
        // All the money went back before we learned it came: nothing for
        // the order to be fulfilled with.
        announcements.remove(0);
    }
    Ok(announcements
        .into_iter()
        .fold(change, |change, message| change.announce(message)))
}

/// What the PG said about a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelResolution {
    Refunded { transaction_key: Option<String> },
    Refused(Failure),
}

/// Records the PG's answer to a requested cancel: the refund (balance down,
/// `PaymentCanceledEvent`) or the release of the reservation
/// (`PaymentCancelFailedEvent`, so the order service learns it), with the
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
            let announcement = match resolution {
                CancelResolution::Refunded { transaction_key } => integration::payment_canceled(
                    topics,
                    change.state(),
                    pending.amount,
                    transaction_key.as_deref(),
                    &pending.reason,
                    causation,
                    now,
                ),
                CancelResolution::Refused(failure) => integration::payment_cancel_failed(
                    topics,
                    change.state(),
                    pending.amount,
                    transaction_id,
                    failure,
                    causation,
                    now,
                ),
            };
            change = change.announce(announcement);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PaymentQueries as _;
    use crate::testing::{approved_at_gateway, canceled_at_gateway, topics, won, world, Stage};

    const ORDER: &str = "order-settle-1";
    const KEY: &str = "tgen_settle_1";

    async fn settled_by_lookup(
        cancels: &[(i64, &str)],
    ) -> (Payment, Vec<crate::ports::OutboxMessage>) {
        let (repository, _, payment) = world(ORDER, KEY, Stage::InProgress).await;
        let at_gateway = canceled_at_gateway(approved_at_gateway(KEY, ORDER, 10_000), cancels);
        settle_approval(
            &repository,
            &topics(),
            payment.id(),
            &Resolution::Approved(at_gateway),
            &Causation::default(),
        )
        .await
        .unwrap();
        let recorded = repository.payment(payment.id()).await.unwrap().unwrap();
        (recorded, repository.outbox())
    }

    #[tokio::test]
    async fn an_approval_learned_after_a_full_cancel_records_the_cancels_and_completes_nothing() {
        let (payment, outbox) = settled_by_lookup(&[(4_000, "txk-1"), (6_000, "txk-2")]).await;
        assert_eq!(payment.status(), PaymentStatus::Canceled);
        assert!(payment.balance().is_zero());
        let types: Vec<&str> = outbox.iter().map(|m| m.event_type.as_str()).collect();
        assert_eq!(types, ["PaymentCanceledEvent", "PaymentCanceledEvent"]);
        assert_eq!(outbox[0].payload["data"]["transactionKey"], "txk-1");
        assert_eq!(outbox[1].payload["data"]["isFullyCanceled"], true);
        assert_eq!(outbox[1].payload["data"]["totalCanceledAmount"], 10_000);
    }

    #[tokio::test]
    async fn an_approval_learned_after_a_partial_cancel_completes_then_records_the_cancel() {
        let (payment, outbox) = settled_by_lookup(&[(2_500, "txk-1")]).await;
        assert_eq!(payment.status(), PaymentStatus::PartialCanceled);
        assert_eq!(payment.balance(), won(7_500));
        let types: Vec<&str> = outbox.iter().map(|m| m.event_type.as_str()).collect();
        assert_eq!(types, ["PaymentCompletedEvent", "PaymentCanceledEvent"]);
        assert_eq!(outbox[0].payload["data"]["paidAmount"], 10_000);
        assert_eq!(outbox[1].payload["data"]["canceledAmount"], 2_500);
        assert_eq!(outbox[1].payload["data"]["remainingAmount"], 7_500);
    }
}

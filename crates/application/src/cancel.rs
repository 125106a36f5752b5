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

use chrono::Utc;
use payment_domain::{
    execute, Failure, Money, Payment, PaymentCommand, PaymentError, PaymentId, PaymentTransaction,
    TransactionId, TransactionKind, TransactionStatus,
};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::gateway::{CancelRequest, GatewayOutcome, GatewayPayment, PaymentGateway};
use crate::integration::{self, Causation, Topics};
use crate::ports::{Append, Commit, InboxEntry, PaymentRepository, StoreError};
use crate::settle::SettleError;

/// A cancel as asked.
#[derive(Debug, Clone)]
pub struct Cancel {
    pub payment_id: PaymentId,
    /// `None`: everything still cancelable.
    pub amount: Option<Decimal>,
    pub reason: String,
    /// The client's idempotency key (or the triggering message's id).
    pub request_key: Option<String>,
    /// The triggering message, recorded with the reservation.
    pub inbox: Option<InboxEntry>,
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Optimistic-concurrency retries: every retry decides again on fresh
/// state, and each round of a race lets one writer through, so this bounds
/// how many concurrent cancels of one payment are served without a 503.
const ATTEMPTS: usize = 32;

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
    /// [`CancelError`].
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
        for _ in 0..ATTEMPTS {
            let payment = self
                .repository
                .load(request.payment_id)
                .await?
                .ok_or(CancelError::NotFound(request.payment_id))?;
            let earlier = self
                .repository
                .transactions(payment.id())
                .await?
                .into_iter()
                .find(|t| t.id() == transaction_id);
            if let Some(earlier) = earlier {
                return self.resume(payment, earlier, &request.causation).await;
            }
            let amount = request
                .amount
                .map(|amount| Money::new(amount, payment.amount().currency()))
                .transpose()
                .map_err(|e| CancelError::InvalidAmount(e.to_string()))?;
            let command = PaymentCommand::RequestCancel {
                transaction_id,
                amount,
                reason: request.reason.clone(),
            };
            let (requested, events) =
                execute(Some(&payment), &command).map_err(|reason| CancelError::Refused {
                    payment: Box::new(payment.clone()),
                    reason,
                })?;
            let reserved = requested
                .pending_cancels()
                .iter()
                .find(|p| p.transaction_id == transaction_id)
                .map(|p| p.amount)
                .ok_or_else(|| StoreError::Unexpected(anyhow::anyhow!("reservation missing")))?;
            let now = Utc::now();
            let transaction = PaymentTransaction::request_as(
                transaction_id,
                payment.id(),
                TransactionKind::Cancel,
                reserved,
                now,
            );
            let commit = Commit {
                append: Some(Append {
                    expected_version: payment.version(),
                    events,
                    state: requested.clone(),
                    occurred_at: now,
                }),
                transactions: vec![transaction.clone()],
                ..Commit::default()
            };
            match self.repository.commit(commit).await {
                Ok(()) => {
                    return self
                        .ask_gateway(requested, &transaction, &request.causation)
                        .await
                }
                Err(StoreError::Conflict { .. }) => {} // someone else changed it: decide again
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Unexpected(anyhow::anyhow!(
            "payment {} kept changing",
            request.payment_id
        ))
        .into())
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
                .await
                .map_err(|error| match error {
                    SettleError::Store(store) => CancelError::Store(store),
                    other => CancelError::Store(StoreError::Unexpected(anyhow::Error::new(other))),
                })?;
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

/// What the PG said about a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelResolution {
    Refunded { transaction_key: Option<String> },
    Refused(Failure),
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
    for _ in 0..ATTEMPTS {
        let payment = repository
            .load(payment_id)
            .await?
            .ok_or(SettleError::NotFound(payment_id))?;
        let Some(pending) = payment
            .pending_cancels()
            .iter()
            .find(|p| p.transaction_id == transaction_id)
            .cloned()
        else {
            return Ok(payment); // answered already
        };
        let now = Utc::now();
        let mut transaction = repository
            .transactions(payment_id)
            .await?
            .into_iter()
            .find(|t| t.id() == transaction_id);
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
        let (next, events) = execute(Some(&payment), &command)
            .map_err(|reason| SettleError::Contradiction { payment_id, reason })?;
        let outbox = match resolution {
            CancelResolution::Refunded { transaction_key } => vec![integration::payment_canceled(
                topics,
                &next,
                pending.amount,
                transaction_key.as_deref(),
                &pending.reason,
                causation,
                now,
            )],
            CancelResolution::Refused(_) => Vec::new(),
        };
        let commit = Commit {
            append: Some(Append {
                expected_version: payment.version(),
                events,
                state: next.clone(),
                occurred_at: now,
            }),
            transactions: transaction.into_iter().collect(),
            outbox,
            inbox: None,
        };
        match repository.commit(commit).await {
            Ok(()) => return Ok(next),
            Err(StoreError::Conflict { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(StoreError::Unexpected(anyhow::anyhow!(
        "payment {payment_id} kept changing while a cancel was settled"
    ))
    .into())
}

//! Use case: give money back, in part or in full.
//!
//! 1. The amount is RESERVED (`CancelRequested`) and a CANCEL transaction —
//!    whose id is the PG's idempotency key — is committed before the PG is
//!    called. A cancel above what is left (balance less other reservations)
//!    is refused here, and the PG never hears of it; of many concurrent
//!    cancels only as many as the balance allows get a reservation.
//! 2. PG said yes → `PaymentCanceled` + `PaymentCanceledEvent`; no → the
//!    reservation is released and `PaymentCancelFailedEvent` published;
//!    unknown → asked again with the SAME key, then
//!    the payment is read at the PG (the PG replays its first answer for a
//!    key, an error too, so only its view of the payment tells whether the
//!    refund was made); still unknown → left to the reconciler
//!    ([`resolve_cancel`]), which re-sends only while the PG still holds the
//!    key, settles from the PG's view, and escalates what it cannot settle
//!    in time. A refund is never made twice and never guessed.
//! 3. Who asks decides what a payment not approved yet becomes
//!    ([`Requester`]): a client is refused; the order service's refund ends
//!    a READY payment without the PG, and waits for an IN_PROGRESS one's
//!    approval ([`carry_out_waiting_cancels`]; released with
//!    `PAYMENT_NOT_APPROVED` if the payment is aborted). No cancel is ever
//!    sent for a payment that is not DONE / PARTIAL_CANCELED.
//!
//! A request that carries the client's idempotency key gets a transaction
//! id derived from it: repeating the request (a retry after a crash, a
//! redelivered message) finds the same transaction and resumes or answers
//! it, instead of cancelling again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use payment_domain::{
    Failure, Money, Payment, PaymentCommand, PaymentError, PaymentEvent, PaymentId, PaymentStatus,
    PaymentTransaction, PendingCancel, TransactionId, TransactionKind, TransactionStatus,
    NOT_APPROVED, ORDER_CANCELED,
};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::error::{Classify, Contended};
use crate::gateway::{CancelRequest, GatewayOutcome, GatewayPayment, PaymentGateway};
use crate::integration::{self, Causation, Topics};
use crate::ports::{PaymentRef, PaymentRepository, Snapshot, StoreError};
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
    /// Who asks: it decides what becomes of a payment not approved yet.
    pub requester: Requester,
}

/// Who asks for a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// A client of the API: only an approved payment can be canceled (a
    /// READY or IN_PROGRESS one is refused, the PG never called).
    Client,
    /// The order service, refunding its order: the order is withdrawn, so
    /// a READY payment is ended (`ORDER_CANCELED`, `PaymentFailedEvent`)
    /// without calling the PG, and the refund of an IN_PROGRESS payment is
    /// reserved and carried out once the approval is settled
    /// ([`carry_out_waiting_cancels`]); if it never comes, the reservation
    /// is released with `PAYMENT_NOT_APPROVED` and `PaymentCancelFailedEvent`.
    OrderService,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Canceled {
    /// The PG gave the money back.
    Done(Payment),
    /// The PG's answer is not known yet; the reconciler will settle it.
    Pending(Payment),
    /// This very request was made before and had refunded: nothing new.
    Repeated(Payment),
    /// Reserved, waiting for the payment's approval (its outcome unknown):
    /// refunded once the PG approved, released if it never does.
    Waiting(Payment),
    /// The payment was not paid yet: it is ended (ABORTED, `ORDER_CANCELED`)
    /// and nothing is refunded — or it had been ended so already.
    Ended(Payment),
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

/// What a repeated or needless request is answered from.
#[derive(Debug)]
enum Answer {
    /// This request's own transaction, from before, and how it may be sent
    /// now if its outcome is unknown.
    Earlier(Payment, PaymentTransaction, Sends),
    Ended(Payment),
}

/// What a recorded request goes on with.
#[derive(Debug)]
enum Next {
    /// Ask the PG for the reserved refund.
    Ask(PaymentTransaction),
    /// Reserved until the approval is settled.
    Wait,
    /// The payment was ended; nothing to ask.
    Ended,
}

#[derive(Debug, Clone)]
pub struct CancelPayment<R, G> {
    repository: R,
    gateway: G,
    topics: Topics,
    /// When a repeated request may send its unknown cancel again: the
    /// reconciler's rule ([`resolve_cancel`]).
    settings: CancelSettings,
}

impl<R: PaymentRepository, G: PaymentGateway> CancelPayment<R, G> {
    /// With the default [`CancelSettings`] (Toss's 15-day key window).
    pub fn new(repository: R, gateway: G, topics: Topics) -> Self {
        Self {
            repository,
            gateway,
            topics,
            settings: CancelSettings::default(),
        }
    }

    /// Re-sends unknown cancels only as `settings` allow; give it the
    /// reconciler's.
    #[must_use]
    pub const fn with_settings(mut self, settings: CancelSettings) -> Self {
        self.settings = settings;
        self
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
                    let (sends, _) = self.settings.sends_again(loaded, earlier, now);
                    return Ok(Decision::Answer(Answer::Earlier(
                        payment.clone(),
                        earlier.clone(),
                        sends,
                    )));
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
                match (payment.status(), request.requester) {
                    // A client cancels only what the PG approved.
                    (PaymentStatus::InProgress, Requester::Client) => {
                        return Err(refuse(PaymentError::InvalidTransition {
                            from: PaymentStatus::InProgress,
                            action: "cancel",
                        }));
                    }
                    (PaymentStatus::Ready, Requester::OrderService) => {
                        let withdrawn = PaymentCommand::Abort {
                            failure: Failure {
                                code: ORDER_CANCELED.into(),
                                message: "the order was withdrawn before it was paid".into(),
                            },
                        };
                        let change = Change::decide(Some(payment), &withdrawn).map_err(refuse)?;
                        let failed = integration::payment_failed(
                            &self.topics,
                            change.state(),
                            &request.causation,
                            now,
                        );
                        return Ok(Decision::Record(change.announce(failed), Next::Ended));
                    }
                    // Ended so before (a redelivery, or a second refund of the
                    // withdrawn order): nothing to refund, the message is seen.
                    (PaymentStatus::Aborted, Requester::OrderService)
                        if payment.failure().is_some_and(|f| f.code == ORDER_CANCELED) =>
                    {
                        return Ok(Decision::Acknowledge(Answer::Ended(payment.clone())));
                    }
                    _ => {}
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
                let next = if approved(payment) {
                    Next::Ask(transaction.clone())
                } else {
                    Next::Wait
                };
                Ok(Decision::Record(change.record(transaction), next))
            },
        )
        .await?;
        match ran {
            Ran::Answered(Answer::Earlier(payment, earlier, sends)) => {
                self.resume(payment, earlier, sends, &request.causation)
                    .await
            }
            Ran::Answered(Answer::Ended(payment)) | Ran::Recorded(payment, Next::Ended) => {
                Ok(Canceled::Ended(payment))
            }
            Ran::Recorded(requested, Next::Ask(transaction)) => {
                self.ask_gateway(requested, &transaction, Sends::First, &request.causation)
                    .await
            }
            Ran::Recorded(reserved, Next::Wait) => Ok(Canceled::Waiting(reserved)),
        }
    }

    /// Answers a repeated request from its transaction: one whose outcome
    /// is unknown was sent before, so it is sent again only as the
    /// reconciler would (`sends`: never once Toss's key may have expired),
    /// and otherwise only looked up.
    async fn resume(
        &self,
        payment: Payment,
        transaction: PaymentTransaction,
        sends: Sends,
        causation: &Causation,
    ) -> Result<Canceled, CancelError> {
        match transaction.status() {
            TransactionStatus::Unknown if payment.status() == PaymentStatus::InProgress => {
                Ok(Canceled::Waiting(payment))
            }
            TransactionStatus::Unknown => {
                self.ask_gateway(payment, &transaction, sends, causation)
                    .await
            }
            TransactionStatus::Succeeded => Ok(Canceled::Repeated(payment)),
            TransactionStatus::Failed => Err(CancelError::Declined {
                payment: Box::new(payment),
                failure: refusal_of(&transaction),
            }),
        }
    }

    async fn ask_gateway(
        &self,
        payment: Payment,
        transaction: &PaymentTransaction,
        sends: Sends,
        causation: &Causation,
    ) -> Result<Canceled, CancelError> {
        // Escalated: an operator's, never sent again.
        let Some(pending) = pending_of(&payment, transaction.id()).filter(|p| !p.escalated) else {
            return Ok(Canceled::Pending(payment));
        };
        let learned = learn(
            &self.repository,
            &self.gateway,
            &payment,
            &pending,
            transaction,
            sends,
        )
        .await?;
        let Learned::Settled(resolution) = learned else {
            return Ok(Canceled::Pending(payment));
        };
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

/// How the cancels whose outcome is unknown are settled in the background
/// (by the reconciler, through [`resolve_cancel`]). The clock of a cancel
/// starts when it could first be sent: its reservation, or the approval it
/// waited for if that came later.
#[derive(Debug, Clone, Copy)]
pub struct CancelSettings {
    /// How long the PG keeps an idempotency key and replays its first answer
    /// (Toss: 15 days). A cancel re-sent after its key expired would be a
    /// second refund.
    pub idempotency_window: Duration,
    /// Re-sending stops at least this long before the window could have
    /// passed (clock skew, a first send later than the reservation).
    pub safety_margin: Duration,
    /// A cancel is re-sent with its key only this long (and never past
    /// `idempotency_window - safety_margin`); after that, the PG is only
    /// looked at.
    pub resend_for: Duration,
    /// Past this, a reservation the PG shows nothing of is released (no
    /// request of ours has been in flight since `resend_for`, so the PG can
    /// no longer make the refund), and one the PG's view cannot settle is
    /// escalated to an operator. Longer than `resend_for`.
    pub settle_within: Duration,
}

impl Default for CancelSettings {
    fn default() -> Self {
        Self {
            idempotency_window: Duration::from_secs(15 * 24 * 3_600),
            safety_margin: Duration::from_secs(24 * 3_600),
            resend_for: Duration::from_secs(10 * 60),
            settle_within: Duration::from_secs(3_600),
        }
    }
}

impl CancelSettings {
    /// Until what age a cancel may be re-sent with its key.
    fn resend_until(&self) -> Duration {
        self.resend_for
            .min(self.idempotency_window.saturating_sub(self.safety_margin))
    }

    /// How a cancel sent before with an unknown outcome may be sent at
    /// `now` — once more with its key while it is young enough and not
    /// escalated, else never (only looked up) — and its age: the one rule
    /// of every path that meets such a cancel again (the reconciler, a
    /// repeated request, an operator).
    fn sends_again(
        &self,
        snapshot: &Snapshot,
        transaction: &PaymentTransaction,
        now: DateTime<Utc>,
    ) -> (Sends, Duration) {
        let age = (now - sendable_since(snapshot, transaction))
            .to_std()
            .unwrap_or_default();
        let escalated =
            pending_of(&snapshot.payment, transaction.id()).is_some_and(|p| p.escalated);
        let sends = if approved(&snapshot.payment) && !escalated && age < self.resend_until() {
            Sends::Again
        } else {
            Sends::Never
        };
        (sends, age)
    }
}

/// What [`resolve_cancel`] did with one cancel.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelResolved {
    /// Settled from the PG's answer or view: refunded, or released.
    Settled(Payment),
    /// Could not be settled in time: handed to an operator (reservation kept).
    Escalated(Payment),
    /// Still unknown; looked at again later.
    StillUnknown,
    /// The payment's approval is not known yet: nothing is sent before it is.
    WaitingForApproval,
    /// Settled already, or escalated before: nothing to do.
    NothingToDo,
}

/// Failure code of a reservation released because the PG shows no refund
/// and can no longer make one.
pub const REFUND_NOT_MADE: &str = "REFUND_NOT_MADE";

/// Who looks at an unknown cancel, which decides what an escalated one gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// The background reconciler: an escalated cancel is an operator's, and
    /// left alone.
    Reconciler,
    /// An operator (`payment-service reconcile ID`), after checking Toss:
    /// an escalated cancel too, only looked up at the PG, never sent.
    Operator,
}

/// Settles one cancel whose outcome is unknown (its transaction UNKNOWN) by
/// asking the PG: re-sent with its own idempotency key while that is safe
/// ([`CancelSettings`]), then the payment is read at the PG and the
/// reservation settled from what it shows — a cancel of the reserved amount
/// we have not recorded is the refund; no refund at all, with the PG's
/// refusal or once the PG can no longer make it, releases the reservation.
/// What cannot be settled within `settle_within` is escalated
/// (`CancelEscalated`, `payment_cancel_escalations_total`, an error log),
/// never retried blindly. A payment not approved (yet) is never sent a cancel.
/// An escalated cancel is looked at again only by an operator ([`Look`]):
/// settled from what the PG shows, never sent again.
///
/// # Errors
/// [`SettleError`] when the store fails or the PG's answer contradicts the
/// payment.
pub async fn resolve_cancel<R: PaymentRepository, G: PaymentGateway>(
    repository: &R,
    gateway: &G,
    topics: &Topics,
    settings: &CancelSettings,
    transaction: &PaymentTransaction,
    causation: &Causation,
    look: Look,
) -> Result<CancelResolved, SettleError> {
    let payment_id = transaction.payment_id();
    let snapshot = repository
        .load(&PaymentRef::Id(payment_id))
        .await?
        .ok_or(SettleError::NotFound(payment_id))?;
    let payment = &snapshot.payment;
    let Some(pending) = pending_of(payment, transaction.id()) else {
        return Ok(CancelResolved::NothingToDo);
    };
    if pending.escalated && look == Look::Reconciler {
        return Ok(CancelResolved::NothingToDo);
    }
    if payment.status() == PaymentStatus::InProgress {
        return Ok(CancelResolved::WaitingForApproval);
    }
    let (sends, age) = settings.sends_again(&snapshot, transaction, Utc::now());
    let learned = learn(repository, gateway, payment, &pending, transaction, sends).await?;
    let resolution = match learned {
        Learned::Settled(resolution) => resolution,
        Learned::NothingTaken if age >= settings.settle_within => {
            CancelResolution::Refused(Failure {
                code: REFUND_NOT_MADE.into(),
                message:
                    "the payment gateway shows no refund for this cancel and can no longer make one"
                        .into(),
            })
        }
        Learned::NothingTaken | Learned::Unclear
            if pending.escalated || age < settings.settle_within =>
        {
            return Ok(CancelResolved::StillUnknown);
        }
        Learned::NothingTaken | Learned::Unclear => {
            return escalate(repository, transaction, age).await;
        }
    };
    let settled = settle_cancel(
        repository,
        topics,
        payment_id,
        transaction.id(),
        &resolution,
        causation,
    )
    .await?;
    Ok(CancelResolved::Settled(settled))
}

/// Carries out the refunds that waited for the approval of `payment_id`
/// (reserved while it was IN_PROGRESS, [`Requester::OrderService`]) once it
/// is approved: each is sent with its own key and settled, as a cancel asked
/// now would be. Call it after settling an approval; for a payment that is
/// not approved it does nothing (an abort released them already, with
/// `PAYMENT_NOT_APPROVED`). What is not settled now stays reserved and
/// UNKNOWN for the reconciler ([`resolve_cancel`]).
///
/// # Errors
/// [`SettleError`] when the store fails or an answer contradicts the
/// payment; the cancels not carried out stay reserved for the reconciler.
pub async fn carry_out_waiting_cancels<R: PaymentRepository, G: PaymentGateway>(
    repository: &R,
    gateway: &G,
    topics: &Topics,
    payment_id: PaymentId,
    causation: &Causation,
) -> Result<Payment, SettleError> {
    let snapshot = repository
        .load(&PaymentRef::Id(payment_id))
        .await?
        .ok_or(SettleError::NotFound(payment_id))?;
    let mut payment = snapshot.payment.clone();
    if !approved(&payment) {
        return Ok(payment);
    }
    for pending in waited(&snapshot) {
        let Some(transaction) = snapshot
            .transactions
            .iter()
            .find(|t| t.id() == pending.transaction_id && t.status() == TransactionStatus::Unknown)
        else {
            continue;
        };
        let learned = learn(
            repository,
            gateway,
            &payment,
            &pending,
            transaction,
            Sends::First,
        )
        .await?;
        if let Learned::Settled(resolution) = learned {
            payment = settle_cancel(
                repository,
                topics,
                payment_id,
                transaction.id(),
                &resolution,
                causation,
            )
            .await?;
        }
    }
    Ok(payment)
}

/// The cancels still reserved (not escalated) that were requested before
/// the payment's approval was recorded: they waited for it.
fn waited(snapshot: &Snapshot) -> Vec<PendingCancel> {
    let Some(approval) = snapshot
        .history
        .iter()
        .find(|e| matches!(e.event, PaymentEvent::PaymentApproved { .. }))
        .map(|e| e.version)
    else {
        return Vec::new();
    };
    let before_approval: Vec<TransactionId> = snapshot
        .history
        .iter()
        .filter(|e| e.version < approval)
        .filter_map(|e| match e.event {
            PaymentEvent::CancelRequested { transaction_id, .. } => Some(transaction_id),
            _ => None,
        })
        .collect();
    snapshot
        .payment
        .pending_cancels()
        .iter()
        .filter(|p| !p.escalated && before_approval.contains(&p.transaction_id))
        .cloned()
        .collect()
}

/// Completes a change that ends a payment unapproved (an abort, or a
/// reverted confirmation with refunds waiting): the domain released the
/// refunds that waited for the approval; each one's CANCEL transaction is
/// settled FAILED with `PAYMENT_NOT_APPROVED` and a `PaymentCancelFailedEvent`
/// tells the order service that nothing was taken, in the same commit. Any
/// other change is returned as it is.
pub(crate) fn release_unapproved(
    mut change: Change,
    before: &Snapshot,
    topics: &Topics,
    causation: &Causation,
    now: DateTime<Utc>,
) -> Change {
    let after = change.state().clone();
    if after.status() != PaymentStatus::Aborted {
        return change;
    }
    let failure = Failure {
        code: NOT_APPROVED.into(),
        message: "the payment was never approved: nothing was taken".into(),
    };
    for pending in before.payment.pending_cancels() {
        if pending_of(&after, pending.transaction_id).is_some() {
            continue;
        }
        if let Some(mut transaction) = before
            .transactions
            .iter()
            .find(|t| t.id() == pending.transaction_id)
            .cloned()
        {
            if transaction.fail(failure.code.clone(), now).is_ok() {
                change = change.record(transaction);
            }
        }
        let failed = integration::payment_cancel_failed(
            topics,
            &after,
            pending.amount,
            pending.transaction_id,
            &failure,
            causation,
            now,
        );
        change = change.announce(failed);
    }
    change
}

/// Hands a cancel to an operator: its reservation stays, visible as escalated.
async fn escalate<R: PaymentRepository>(
    repository: &R,
    transaction: &PaymentTransaction,
    age: Duration,
) -> Result<CancelResolved, SettleError> {
    let payment_id = transaction.payment_id();
    let transaction_id = transaction.id();
    let reason = format!(
        "the payment gateway's answer could not be learned within {}s",
        age.as_secs()
    );
    let ran = run(
        repository,
        &PaymentRef::Id(payment_id),
        &Trigger::Untracked,
        |loaded, _| -> Result<_, SettleError> {
            let payment = &loaded.ok_or(SettleError::NotFound(payment_id))?.payment;
            if pending_of(payment, transaction_id).is_none_or(|p| p.escalated) {
                return Ok(Decision::Answer(()));
            }
            let command = PaymentCommand::EscalateCancel {
                transaction_id,
                reason: reason.clone(),
            };
            let change = Change::decide(Some(payment), &command)
                .map_err(|reason| SettleError::Contradiction { payment_id, reason })?;
            Ok(Decision::Record(change, ()))
        },
    )
    .await?;
    Ok(match ran {
        Ran::Answered(()) => CancelResolved::NothingToDo,
        Ran::Recorded(payment, ()) => {
            metrics::counter!("payment_cancel_escalations_total").increment(1);
            tracing::error!(%payment_id, %transaction_id, %reason, "cancel escalated to an operator");
            CancelResolved::Escalated(payment)
        }
    })
}

/// The pending cancel of `transaction_id`, if still reserved.
fn pending_of(payment: &Payment, transaction_id: TransactionId) -> Option<PendingCancel> {
    payment
        .pending_cancels()
        .iter()
        .find(|p| p.transaction_id == transaction_id)
        .cloned()
}

const fn approved(payment: &Payment) -> bool {
    matches!(
        payment.status(),
        PaymentStatus::Done | PaymentStatus::PartialCanceled
    )
}

/// When a cancel could first be sent: its reservation, or the approval it
/// waited for if that was recorded later.
fn sendable_since(snapshot: &Snapshot, transaction: &PaymentTransaction) -> DateTime<Utc> {
    snapshot
        .history
        .iter()
        .filter(|e| matches!(e.event, PaymentEvent::PaymentApproved { .. }))
        .map(|e| e.occurred_at)
        .fold(transaction.requested_at(), DateTime::max)
}

/// How a cancel is sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sends {
    /// Its key is new: sent, and once more with the key if the answer is
    /// unknown. A refusal of the first send is definitive.
    First,
    /// Sent before with an unknown outcome: sent once more with its key.
    Again,
    /// Not sent (not approved, or its key may have expired): only looked at.
    Never,
}

/// What the PG's answers and its view of the payment say about a cancel.
#[derive(Debug)]
enum Learned {
    Settled(CancelResolution),
    /// The PG holds no refund we have not recorded, and did not refuse.
    NothingTaken,
    /// Nothing definitive (no answer, no lookup, or a view that does not fit).
    Unclear,
}

/// Sends the reserved cancel as `sends` says, then — unless the PG answered
/// for sure — reads the payment at the PG.
async fn learn<R: PaymentRepository, G: PaymentGateway>(
    repository: &R,
    gateway: &G,
    payment: &Payment,
    pending: &PendingCancel,
    transaction: &PaymentTransaction,
    sends: Sends,
) -> Result<Learned, StoreError> {
    let Some(payment_key) = payment.payment_key() else {
        return Ok(Learned::Unclear);
    };
    let request = CancelRequest {
        payment_key: payment_key.clone(),
        amount: pending.amount,
        reason: pending.reason.clone(),
        idempotency_key: transaction.idempotency_key().to_owned(),
    };
    let attempts = match sends {
        // Only an approved payment's money can be given back.
        _ if !approved(payment) => 0,
        Sends::First => 2,
        Sends::Again => 1,
        Sends::Never => 0,
    };
    let mut declined = None;
    for attempt in 0..attempts {
        match gateway.cancel(&request).await {
            GatewayOutcome::Succeeded(at_gateway) => {
                return Ok(Learned::Settled(CancelResolution::Refunded {
                    transaction_key: transaction_key_of(&at_gateway, pending.amount),
                }));
            }
            // The PG has no payment for the key: nothing was refunded.
            GatewayOutcome::Declined(failure) | GatewayOutcome::KeyRefused(failure)
                if sends == Sends::First && attempt == 0 =>
            {
                return Ok(Learned::Settled(CancelResolution::Refused(failure)));
            }
            GatewayOutcome::Declined(failure) | GatewayOutcome::KeyRefused(failure) => {
                declined = Some(failure);
                break;
            }
            // Ours (credentials, configuration): the PG did nothing, and no
            // refund was refused. Kept reserved for a re-send once fixed;
            // a second try now would be refused the same.
            GatewayOutcome::Misconfigured(failure) => {
                tracing::error!(payment_id = %payment.id(), transaction_id = %transaction.id(), code = %failure.code, "cancel not sent: the payment gateway refused our credentials or configuration");
                break;
            }
            GatewayOutcome::Unknown(reason) => {
                tracing::warn!(payment_id = %payment.id(), transaction_id = %transaction.id(), %reason, "cancel outcome unknown");
            }
        }
    }
    let at_gateway = match gateway.lookup(payment_key).await {
        Ok(Some(at_gateway)) => at_gateway,
        Ok(None) => {
            tracing::warn!(payment_id = %payment.id(), "the payment gateway does not know an approved payment");
            return Ok(Learned::Unclear);
        }
        Err(error) => {
            tracing::warn!(payment_id = %payment.id(), %error, "cancel lookup failed");
            return Ok(Learned::Unclear);
        }
    };
    // Read after the lookup: every refund recorded by then is known.
    let Some(snapshot) = repository.load(&PaymentRef::Id(payment.id())).await? else {
        return Ok(Learned::Unclear);
    };
    if let Some(settled) = settled_meanwhile(&snapshot, transaction.id()) {
        return Ok(Learned::Settled(settled));
    }
    Ok(match (shown(&at_gateway, &snapshot, pending), declined) {
        (Shown::Refunded(transaction_key), _) => {
            Learned::Settled(CancelResolution::Refunded { transaction_key })
        }
        (Shown::NothingTaken, Some(failure)) => {
            Learned::Settled(CancelResolution::Refused(failure))
        }
        (Shown::NothingTaken, None) => Learned::NothingTaken,
        (Shown::Unclear, _) => Learned::Unclear,
    })
}

/// How someone else (the reconciler, a concurrent repeat) settled the cancel
/// while we asked: recording it again answers from that.
fn settled_meanwhile(
    snapshot: &Snapshot,
    transaction_id: TransactionId,
) -> Option<CancelResolution> {
    if pending_of(&snapshot.payment, transaction_id).is_some() {
        return None;
    }
    let transaction = snapshot
        .transactions
        .iter()
        .find(|t| t.id() == transaction_id)?;
    match transaction.status() {
        TransactionStatus::Succeeded => Some(CancelResolution::Refunded {
            transaction_key: transaction.transaction_key().map(str::to_owned),
        }),
        TransactionStatus::Failed => Some(CancelResolution::Refused(refusal_of(transaction))),
        TransactionStatus::Unknown => None,
    }
}

/// The refusal a FAILED cancel transaction recorded.
fn refusal_of(transaction: &PaymentTransaction) -> Failure {
    Failure {
        code: transaction
            .failure_code()
            .unwrap_or("CANCEL_FAILED")
            .to_owned(),
        message: "the payment gateway refused this cancel".into(),
    }
}

/// What the PG's view of a payment shows about one reserved cancel.
#[derive(Debug, PartialEq, Eq)]
enum Shown {
    /// A cancel of the reserved amount that we have not recorded, within
    /// what the PG took beyond our balance: this refund, with its key.
    Refunded(Option<String>),
    /// The PG's balance is ours: it took nothing we have not recorded.
    NothingTaken,
    /// Anything else (another amount taken, more left at the PG than here).
    Unclear,
}

fn shown(at_gateway: &GatewayPayment, snapshot: &Snapshot, pending: &PendingCancel) -> Shown {
    let Ok(taken) = snapshot
        .payment
        .balance()
        .checked_sub(at_gateway.balance_amount)
    else {
        return Shown::Unclear;
    };
    if taken.is_zero() {
        return Shown::NothingTaken;
    }
    if !taken
        .checked_cmp(&pending.amount)
        .is_ok_and(std::cmp::Ordering::is_ge)
    {
        return Shown::Unclear;
    }
    let recorded: Vec<&str> = snapshot
        .history
        .iter()
        .filter_map(|e| match &e.event {
            PaymentEvent::PaymentCanceled {
                transaction_key: Some(key),
                ..
            } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    at_gateway
        .cancels
        .iter()
        .rev()
        .filter(|c| c.amount == pending.amount)
        .find(|c| {
            c.transaction_key
                .as_deref()
                .is_some_and(|key| !recorded.contains(&key))
        })
        .map_or(Shown::Unclear, |c| {
            Shown::Refunded(c.transaction_key.clone())
        })
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
        let outbox = repository.outbox();
        assert_eq!(outbox.len(), 1, "no PaymentCanceledEvent");
        assert_eq!(outbox[0].event_type, "PaymentCancelFailedEvent");
        let data = &outbox[0].payload["data"];
        assert_eq!(data["code"], "NOT_CANCELABLE_PAYMENT");
        assert_eq!(data["requestedAmount"], 3_000);
        assert_eq!(data["requestId"], transactions[0].id().to_string());
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

    fn shows_refund(gateway: &Scripted, cancels: &[(i64, &str)]) {
        gateway.shows(canceled_at_gateway(
            approved_at_gateway(KEY, ORDER, 10_000),
            cancels,
        ));
    }

    /// A cancel of `amount` the PG left unknown (nothing scripted: every
    /// send and lookup tells nothing), reserved and UNKNOWN.
    async fn unknown_cancel(
        repository: &MemoryRepository,
        use_case: &CancelPayment<MemoryRepository, Scripted>,
        payment: &Payment,
        amount: i64,
    ) -> PaymentTransaction {
        let outcome = use_case
            .handle(cancel_request(payment, Some(amount), "k-unknown"))
            .await
            .unwrap();
        assert!(matches!(outcome, Canceled::Pending(_)), "{outcome:?}");
        repository
            .all_transactions()
            .into_iter()
            .find(|t| t.kind() == TransactionKind::Cancel)
            .unwrap()
    }

    async fn resolve(
        repository: &MemoryRepository,
        gateway: &Scripted,
        settings: CancelSettings,
        transaction: &PaymentTransaction,
    ) -> CancelResolved {
        resolve_as(Look::Reconciler, repository, gateway, settings, transaction).await
    }

    async fn resolve_as(
        look: Look,
        repository: &MemoryRepository,
        gateway: &Scripted,
        settings: CancelSettings,
        transaction: &PaymentTransaction,
    ) -> CancelResolved {
        resolve_cancel(
            repository,
            gateway,
            &topics(),
            &settings,
            transaction,
            &Causation::default(),
            look,
        )
        .await
        .unwrap()
    }

    /// Re-sends and the bounded time both over: only what the PG shows counts.
    fn overdue() -> CancelSettings {
        CancelSettings {
            resend_for: Duration::ZERO,
            settle_within: Duration::ZERO,
            ..CancelSettings::default()
        }
    }

    #[tokio::test]
    async fn a_refund_made_but_answered_with_an_error_is_learned_from_the_pg() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        // Toss refunded, answered 400 PROVIDER_ERROR and replays it for the key.
        gateway.cancels_with(GatewayOutcome::Unknown("400 PROVIDER_ERROR".into()));
        shows_refund(&gateway, &[(2_000, "txk-made")]);
        let outcome = use_case
            .handle(cancel_request(&payment, Some(2_000), "k1"))
            .await
            .unwrap();
        let Canceled::Done(canceled) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(canceled.balance(), won(8_000));
        assert!(canceled.pending_cancels().is_empty());
        assert_eq!(gateway.cancels(), 2, "sent, then once more with the key");
        let transaction = &repository.all_transactions()[0];
        assert_eq!(transaction.status(), TransactionStatus::Succeeded);
        assert_eq!(transaction.transaction_key(), Some("txk-made"));
        let outbox = repository.outbox();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].event_type, "PaymentCanceledEvent");
        assert_eq!(outbox[0].payload["data"]["transactionKey"], "txk-made");
    }

    #[tokio::test]
    async fn an_unknown_cancel_is_settled_from_what_the_pg_shows_after_one_resend() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        let transaction = unknown_cancel(&repository, &use_case, &payment, 2_000).await;
        shows_refund(&gateway, &[(2_000, "txk-late")]);
        let resolved = resolve(
            &repository,
            &gateway,
            CancelSettings::default(),
            &transaction,
        )
        .await;
        let CancelResolved::Settled(settled) = resolved else {
            panic!("{resolved:?}")
        };
        assert_eq!(settled.balance(), won(8_000));
        let keys = gateway.cancel_keys.lock().unwrap().clone();
        assert_eq!(keys.len(), 3, "one re-send");
        assert!(keys.iter().all(|k| *k == keys[0]), "one key: {keys:?}");
        assert_eq!(
            resolve(
                &repository,
                &gateway,
                CancelSettings::default(),
                &transaction
            )
            .await,
            CancelResolved::NothingToDo
        );
        assert_eq!(repository.outbox().len(), 1, "announced once");
    }

    #[tokio::test]
    async fn a_refund_already_recorded_is_never_taken_for_another() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        gateway.cancels_with(refunded(&[(2_000, "txk-first")]));
        use_case
            .handle(cancel_request(&payment, Some(2_000), "k-first"))
            .await
            .unwrap();
        gateway.cancels_with(GatewayOutcome::Unknown("timeout".into()));
        let outcome = use_case
            .handle(cancel_request(&payment, Some(2_000), "k-second"))
            .await
            .unwrap();
        assert!(matches!(outcome, Canceled::Pending(_)), "{outcome:?}");
        let second = repository
            .all_transactions()
            .into_iter()
            .find(|t| t.status() == TransactionStatus::Unknown)
            .unwrap();
        // Toss shows only the first refund, which we recorded.
        shows_refund(&gateway, &[(2_000, "txk-first")]);
        assert_eq!(
            resolve(&repository, &gateway, CancelSettings::default(), &second).await,
            CancelResolved::StillUnknown
        );
        let still = repository.payment(payment.id()).await.unwrap().unwrap();
        assert_eq!(still.balance(), won(8_000));
        assert_eq!(still.cancelable(), won(6_000), "still reserved");
    }

    #[tokio::test]
    async fn a_cancel_the_pg_shows_nothing_of_is_released_once_it_can_no_longer_be_made() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        gateway.shows(approved_at_gateway(KEY, ORDER, 10_000));
        let transaction = unknown_cancel(&repository, &use_case, &payment, 3_000).await;
        assert_eq!(
            resolve(
                &repository,
                &gateway,
                CancelSettings::default(),
                &transaction
            )
            .await,
            CancelResolved::StillUnknown,
            "a request of ours may still be in flight"
        );
        let sent = gateway.cancels();
        let resolved = resolve(&repository, &gateway, overdue(), &transaction).await;
        let CancelResolved::Settled(released) = resolved else {
            panic!("{resolved:?}")
        };
        assert_eq!(gateway.cancels(), sent, "not re-sent after resend_for");
        assert_eq!(released.cancelable(), won(10_000), "reservation released");
        assert_eq!(released.balance(), won(10_000));
        let settled = &repository.all_transactions()[0];
        assert_eq!(settled.status(), TransactionStatus::Failed);
        assert_eq!(settled.failure_code(), Some(REFUND_NOT_MADE));
    }

    #[tokio::test]
    async fn a_cancel_is_never_re_sent_once_its_key_may_have_expired() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        let transaction = unknown_cancel(&repository, &use_case, &payment, 1_000).await;
        let sent = gateway.cancels();
        let expired = CancelSettings {
            idempotency_window: Duration::from_secs(3_600),
            safety_margin: Duration::from_secs(3_600),
            resend_for: Duration::from_secs(86_400),
            ..CancelSettings::default()
        };
        shows_refund(&gateway, &[(1_000, "txk-seen")]);
        let resolved = resolve(&repository, &gateway, expired, &transaction).await;
        assert!(
            matches!(resolved, CancelResolved::Settled(_)),
            "{resolved:?}"
        );
        assert_eq!(gateway.cancels(), sent, "looked up, never re-sent");
    }

    /// A cancel of 4,000 whose outcome the PG could not tell in time (its
    /// lookups fail), looked at by the reconciler once it is overdue.
    async fn escalated_cancel() -> (
        MemoryRepository,
        Scripted,
        PaymentTransaction,
        CancelResolved,
    ) {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        gateway
            .lookup_fails
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let transaction = unknown_cancel(&repository, &use_case, &payment, 4_000).await;
        let resolved = resolve(&repository, &gateway, overdue(), &transaction).await;
        (repository, gateway, transaction, resolved)
    }

    #[tokio::test]
    async fn a_cancel_that_cannot_be_settled_in_time_is_escalated_and_never_retried() {
        let (repository, gateway, transaction, resolved) = escalated_cancel().await;
        let CancelResolved::Escalated(escalated) = resolved else {
            panic!("{resolved:?}")
        };
        assert!(escalated.pending_cancels()[0].escalated);
        assert_eq!(
            escalated.cancelable(),
            won(6_000),
            "the reservation is kept"
        );
        let sent = gateway.cancels();
        gateway
            .lookup_fails
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            resolve(
                &repository,
                &gateway,
                CancelSettings::default(),
                &transaction
            )
            .await,
            CancelResolved::NothingToDo
        );
        assert_eq!(gateway.cancels(), sent, "an operator's now: never re-sent");
        assert_eq!(
            repository.all_transactions()[0].status(),
            TransactionStatus::Unknown
        );
    }

    #[tokio::test]
    async fn an_operator_settles_an_escalated_cancel_from_what_the_pg_shows_never_sending_it() {
        let (repository, gateway, transaction, resolved) = escalated_cancel().await;
        assert!(
            matches!(resolved, CancelResolved::Escalated(_)),
            "{resolved:?}"
        );
        let sent = gateway.cancels();

        // Toss still cannot be read: it stays escalated, nothing sent.
        let operator = |settings| {
            resolve_as(
                Look::Operator,
                &repository,
                &gateway,
                settings,
                &transaction,
            )
        };
        assert_eq!(
            operator(CancelSettings::default()).await,
            CancelResolved::StillUnknown
        );
        // Toss shows the refund: settled from it, still never sent.
        gateway
            .lookup_fails
            .store(false, std::sync::atomic::Ordering::SeqCst);
        shows_refund(&gateway, &[(4_000, "txk-operator")]);
        let CancelResolved::Settled(settled) = operator(CancelSettings::default()).await else {
            panic!("not settled")
        };
        assert!(settled.pending_cancels().is_empty());
        assert_eq!(settled.cancelable(), won(6_000));
        assert_eq!(gateway.cancels(), sent, "looked up, never sent");
    }

    /// A payment approved 20 days ago whose cancel of 2,000 was asked 16
    /// days ago and never answered: Toss's 15-day key may be gone.
    async fn old_unknown_cancel() -> (
        MemoryRepository,
        Scripted,
        CancelPayment<MemoryRepository, Scripted>,
        Payment,
    ) {
        let repository = MemoryRepository::default();
        let payment = crate::testing::payment_at(
            &repository,
            ORDER,
            KEY,
            10_000,
            Stage::Done,
            chrono::Duration::days(20),
        )
        .await;
        let gateway = Scripted::default();
        let use_case = CancelPayment::new(repository.clone(), gateway.clone(), topics());
        unknown_cancel(&repository, &use_case, &payment, 2_000).await;
        repository.backdate_transactions(chrono::Duration::days(16));
        (repository, gateway, use_case, payment)
    }

    #[tokio::test]
    async fn the_same_request_for_an_old_unknown_cancel_only_looks_at_the_pg() {
        let (repository, gateway, use_case, payment) = old_unknown_cancel().await;
        let sent = gateway.cancels();
        shows_refund(&gateway, &[(2_000, "txk-old")]);
        let again = use_case
            .handle(cancel_request(&payment, Some(2_000), "k-unknown"))
            .await
            .unwrap();
        assert_eq!(
            gateway.cancels(),
            sent,
            "never re-sent past the key's window"
        );
        let Canceled::Done(settled) = again else {
            panic!("{again:?}")
        };
        assert_eq!(settled.balance(), won(8_000), "settled from the lookup");
        assert_eq!(
            repository.all_transactions()[0].transaction_key(),
            Some("txk-old")
        );
    }

    #[tokio::test]
    async fn the_same_request_for_an_old_unknown_cancel_toss_shows_nothing_of_stays_pending() {
        let (repository, gateway, use_case, payment) = old_unknown_cancel().await;
        let sent = gateway.cancels();
        gateway.shows(approved_at_gateway(KEY, ORDER, 10_000));
        let again = use_case
            .handle(cancel_request(&payment, Some(2_000), "k-unknown"))
            .await
            .unwrap();
        assert_eq!(
            gateway.cancels(),
            sent,
            "never re-sent past the key's window"
        );
        assert!(matches!(again, Canceled::Pending(_)), "{again:?}");
        assert_eq!(
            repository.all_transactions()[0].status(),
            TransactionStatus::Unknown,
            "left to the reconciler's resolution"
        );
    }

    #[tokio::test]
    async fn the_same_request_for_a_recent_unknown_cancel_is_re_sent_once_with_its_key() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        unknown_cancel(&repository, &use_case, &payment, 2_000).await;
        let sent = gateway.cancels();
        let again = use_case
            .handle(cancel_request(&payment, Some(2_000), "k-unknown"))
            .await
            .unwrap();
        assert!(matches!(again, Canceled::Pending(_)), "{again:?}");
        assert_eq!(gateway.cancels(), sent + 1, "as the reconciler would");
        let keys = gateway.cancel_keys.lock().unwrap().clone();
        assert!(keys.iter().all(|k| *k == keys[0]), "one key: {keys:?}");
    }

    async fn carry_out(
        repository: &MemoryRepository,
        gateway: &Scripted,
        payment: &Payment,
    ) -> Payment {
        carry_out_waiting_cancels(
            repository,
            gateway,
            &topics(),
            payment.id(),
            &Causation::default(),
        )
        .await
        .unwrap()
    }

    /// A refund the order service asks by message `message_id`.
    fn refund_message(payment: &Payment, amount: Option<i64>, message_id: &str) -> Cancel {
        Cancel {
            trigger: Trigger::Message(InboxEntry {
                consumer: "order.refund.requested".into(),
                message_id: message_id.into(),
            }),
            requester: Requester::OrderService,
            ..cancel_request(payment, amount, message_id)
        }
    }

    #[tokio::test]
    async fn a_refund_asked_during_an_unknown_approval_waits_then_is_carried_out_once() {
        let (repository, gateway, use_case, payment) = given(Stage::InProgress).await;
        let outcome = use_case
            .handle(refund_message(&payment, None, "refund-1"))
            .await
            .unwrap();
        let Canceled::Waiting(waiting) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(waiting.cancelable(), won(0), "the whole amount reserved");
        assert_eq!(gateway.cancels(), 0, "nothing sent before the approval");
        assert!(repository.processed(&InboxEntry {
            consumer: "order.refund.requested".into(),
            message_id: "refund-1".into(),
        }));
        let transaction = repository.all_transactions()[0].clone();
        assert_eq!(
            resolve(&repository, &gateway, overdue(), &transaction).await,
            CancelResolved::WaitingForApproval,
            "the reconciler never sends it either"
        );
        assert_eq!(gateway.cancels(), 0);

        crate::settle::settle_approval(
            &repository,
            &topics(),
            payment.id(),
            &crate::settle::Resolution::Approved(approved_at_gateway(KEY, ORDER, 10_000)),
            &Causation::default(),
        )
        .await
        .unwrap();
        gateway.cancels_with(refunded(&[(10_000, "txk-after")]));
        let carried = carry_out(&repository, &gateway, &payment).await;
        assert_eq!(carried.status(), PaymentStatus::Canceled);
        assert_eq!(gateway.cancels(), 1);
        let again = carry_out(&repository, &gateway, &payment).await;
        assert_eq!(again.status(), PaymentStatus::Canceled);
        assert_eq!(gateway.cancels(), 1, "refunded once");
        let types: Vec<String> = repository
            .outbox()
            .into_iter()
            .map(|m| m.event_type)
            .collect();
        assert_eq!(types, ["PaymentCompletedEvent", "PaymentCanceledEvent"]);
    }

    #[tokio::test]
    async fn a_cancel_asked_after_the_approval_is_not_carried_out_as_waiting() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        unknown_cancel(&repository, &use_case, &payment, 1_000).await;
        let sent = gateway.cancels();
        carry_out(&repository, &gateway, &payment).await;
        assert_eq!(
            gateway.cancels(),
            sent,
            "the reconciler's, not a waiting one"
        );
    }

    #[tokio::test]
    async fn a_waiting_refund_is_released_when_the_approval_never_comes() {
        let (repository, gateway, use_case, payment) = given(Stage::InProgress).await;
        use_case
            .handle(refund_message(&payment, Some(4_000), "refund-2"))
            .await
            .unwrap();
        let aborted = crate::settle::settle_approval(
            &repository,
            &topics(),
            payment.id(),
            &crate::settle::Resolution::Declined(Failure {
                code: "REJECT_CARD_PAYMENT".into(),
                message: "declined".into(),
            }),
            &Causation::default(),
        )
        .await
        .unwrap();
        assert_eq!(aborted.status(), PaymentStatus::Aborted);
        assert!(aborted.pending_cancels().is_empty());
        let cancel = &repository.all_transactions()[0];
        assert_eq!(cancel.status(), TransactionStatus::Failed);
        assert_eq!(cancel.failure_code(), Some(NOT_APPROVED));
        let outbox = repository.outbox();
        let types: Vec<&str> = outbox.iter().map(|m| m.event_type.as_str()).collect();
        assert_eq!(types, ["PaymentFailedEvent", "PaymentCancelFailedEvent"]);
        let data = &outbox[1].payload["data"];
        assert_eq!(data["code"], NOT_APPROVED);
        assert_eq!(data["requestedAmount"], 4_000);
        assert_eq!(data["requestId"], cancel.id().to_string());
        assert_eq!(gateway.cancels(), 0);
    }

    #[tokio::test]
    async fn a_refund_of_a_ready_payment_ends_it_without_the_pg() {
        let (repository, gateway, use_case, payment) = given(Stage::Ready).await;
        let outcome = use_case
            .handle(refund_message(&payment, None, "refund-3"))
            .await
            .unwrap();
        let Canceled::Ended(ended) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(ended.status(), PaymentStatus::Aborted);
        assert_eq!(ended.failure().unwrap().code, ORDER_CANCELED);
        assert_eq!(gateway.cancels(), 0);
        assert!(
            repository.all_transactions().is_empty(),
            "no PG interaction"
        );
        let outbox = repository.outbox();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].event_type, "PaymentFailedEvent");
        assert_eq!(outbox[0].payload["data"]["code"], ORDER_CANCELED);

        let redelivered = use_case
            .handle(refund_message(&payment, None, "refund-3"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                redelivered,
                CancelError::Store(StoreError::AlreadyProcessed(_))
            ),
            "{redelivered:?}"
        );
        let another = use_case
            .handle(refund_message(&payment, Some(1_000), "refund-4"))
            .await
            .unwrap();
        assert!(matches!(another, Canceled::Ended(_)), "{another:?}");
        assert!(repository.processed(&InboxEntry {
            consumer: "order.refund.requested".into(),
            message_id: "refund-4".into(),
        }));
        assert_eq!(repository.outbox().len(), 1, "ended once");
    }

    #[tokio::test]
    async fn a_client_cannot_end_a_ready_payment_by_canceling_it() {
        let (repository, gateway, use_case, payment) = given(Stage::Ready).await;
        let error = use_case
            .handle(cancel_request(&payment, None, "k1"))
            .await
            .unwrap_err();
        assert!(matches!(error, CancelError::Refused { .. }), "{error:?}");
        assert_eq!(gateway.cancels(), 0);
        let unchanged = repository.payment(payment.id()).await.unwrap().unwrap();
        assert_eq!(unchanged.status(), PaymentStatus::Ready);
    }

    #[tokio::test]
    async fn a_cancel_refused_for_our_credentials_stays_reserved_and_is_no_refusal() {
        let (repository, gateway, use_case, payment) = given(Stage::Done).await;
        gateway.cancels_with(GatewayOutcome::Misconfigured(Failure {
            code: "UNAUTHORIZED_KEY".into(),
            message: "bad secret key".into(),
        }));
        gateway
            .lookup_fails
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let outcome = use_case
            .handle(cancel_request(&payment, Some(2_000), "k1"))
            .await
            .unwrap();
        let Canceled::Pending(pending) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(pending.cancelable(), won(8_000), "still reserved");
        assert_eq!(gateway.cancels(), 1, "not sent twice into the same refusal");
        assert_eq!(
            repository.all_transactions()[0].status(),
            TransactionStatus::Unknown
        );
        assert!(
            repository.outbox().is_empty(),
            "no PaymentCancelFailedEvent"
        );
    }
}

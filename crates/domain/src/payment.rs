//! The `Payment` aggregate, event-sourced.
//!
//! A payment's state is the fold of its events: [`apply`] evolves a state by
//! one event and never judges it (events are facts that already happened);
//! [`decide`] judges a command against the current state and answers with the
//! events that record it, or with the reason it is refused. Every transition
//! of the life cycle below is decided here, and only here:
//!
//! ```text
//!        ┌── READY (the PG never processed the attempt: our credentials)
//!        ▼     ▲
//! READY ──▶ IN_PROGRESS ──▶ DONE ──▶ PARTIAL_CANCELED ──▶ CANCELED
//!   │            │            └──────────────────────────▶ CANCELED
//!   ├──▶ ABORTED ◀┘ (the PG declined, definitively, a key it confirms is this
//!   │               order's; or the order was withdrawn: ORDER_CANCELED)
//!   └──▶ EXPIRED    (never confirmed in time)
//! ```
//!
//! A widget fail redirect ends nothing: it records the attempt's failure
//! (`AttemptFailed`) and the customer may try again until expiry. A refund
//! asked while the approval is unknown is reserved like any cancel
//! (`CancelRequested` on IN_PROGRESS) and carried out once the PG approves;
//! if the payment ends without approval, the reservation is released with
//! [`NOT_APPROVED`]: nothing was taken. A reservation the PG's answer cannot
//! settle in time is escalated (`CancelEscalated`) for an operator, never
//! released blindly.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{OrderId, PaymentId, PaymentKey, TransactionId, UserId};
use crate::money::{Money, MoneyError};

/// Where a payment is in its life (Toss's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Ready,
    InProgress,
    Done,
    PartialCanceled,
    Canceled,
    Aborted,
    Expired,
}

impl PaymentStatus {
    pub const ALL: [Self; 7] = [
        Self::Ready,
        Self::InProgress,
        Self::Done,
        Self::PartialCanceled,
        Self::Canceled,
        Self::Aborted,
        Self::Expired,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "READY",
            Self::InProgress => "IN_PROGRESS",
            Self::Done => "DONE",
            Self::PartialCanceled => "PARTIAL_CANCELED",
            Self::Canceled => "CANCELED",
            Self::Aborted => "ABORTED",
            Self::Expired => "EXPIRED",
        }
    }

    /// No command can move a payment out of a terminal status.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Canceled | Self::Aborted | Self::Expired)
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The failure code of a cancel released because the payment was never
/// approved: nothing was taken, so nothing is given back.
pub const NOT_APPROVED: &str = "PAYMENT_NOT_APPROVED";

/// The failure code of a payment ended because its order was withdrawn
/// (a refund requested before the customer paid).
pub const ORDER_CANCELED: &str = "ORDER_CANCELED";

/// Why a payment did not go through, in the PG's words (or ours).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

/// Everything that can happen to a payment. Each variant carries all the data
/// its [`apply`] needs, so replaying a stream is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "data")]
pub enum PaymentEvent {
    PaymentCreated {
        payment_id: PaymentId,
        order_id: OrderId,
        user_id: UserId,
        amount: Money,
        created_at: DateTime<Utc>,
    },
    ConfirmationStarted {
        payment_key: PaymentKey,
        transaction_id: TransactionId,
    },
    PaymentApproved {
        payment_key: PaymentKey,
        method: Option<String>,
        approved_at: DateTime<Utc>,
    },
    PaymentAborted {
        failure: Failure,
    },
    /// The PG never processed the confirmation (our own credential or
    /// configuration error, or a key the PG does not hold for this order):
    /// back to READY, the customer may try again.
    ConfirmationReverted {
        failure: Failure,
    },
    /// A checkout attempt failed before any confirm (the widget's fail
    /// redirect): recorded, the payment stays open.
    AttemptFailed {
        failure: Failure,
    },
    /// Money went back to the customer: after our own request
    /// (`transaction_id`), or by a cancel made elsewhere (Toss's dashboard).
    PaymentCanceled {
        amount: Money,
        reason: String,
        transaction_key: Option<String>,
        #[serde(default)]
        transaction_id: Option<TransactionId>,
    },
    /// We asked the PG to cancel `amount`: reserved until the PG answers.
    CancelRequested {
        transaction_id: TransactionId,
        amount: Money,
        reason: String,
    },
    /// The PG refused the cancel: the reservation is released.
    CancelRejected {
        transaction_id: TransactionId,
        failure: Failure,
    },
    /// The PG's answer about a cancel could not be learned in time: the
    /// reservation stays (the money may be gone) and an operator decides.
    CancelEscalated {
        transaction_id: TransactionId,
        reason: String,
    },
    PaymentExpired {
        expired_at: DateTime<Utc>,
    },
}

impl PaymentEvent {
    /// The stable name stored in `payment_events.event_type`.
    #[must_use]
    pub const fn event_type(&self) -> &'static str {
        match self {
            Self::PaymentCreated { .. } => "PaymentCreated",
            Self::ConfirmationStarted { .. } => "ConfirmationStarted",
            Self::PaymentApproved { .. } => "PaymentApproved",
            Self::PaymentAborted { .. } => "PaymentAborted",
            Self::ConfirmationReverted { .. } => "ConfirmationReverted",
            Self::AttemptFailed { .. } => "AttemptFailed",
            Self::PaymentCanceled { .. } => "PaymentCanceled",
            Self::CancelRequested { .. } => "CancelRequested",
            Self::CancelRejected { .. } => "CancelRejected",
            Self::CancelEscalated { .. } => "CancelEscalated",
            Self::PaymentExpired { .. } => "PaymentExpired",
        }
    }
}

/// What someone asks of a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCommand {
    /// An order was placed: a payment waits for the customer (READY).
    Create {
        payment_id: PaymentId,
        order_id: OrderId,
        user_id: UserId,
        amount: Money,
        created_at: DateTime<Utc>,
    },
    /// The widget succeeded and we are about to ask the PG to confirm.
    /// `amount` is what the client claims; it must equal the order amount.
    StartConfirmation {
        payment_key: PaymentKey,
        amount: Money,
        transaction_id: TransactionId,
    },
    /// The PG approved the payment (now or learned later by lookup).
    Approve {
        payment_key: PaymentKey,
        approved_amount: Money,
        method: Option<String>,
        approved_at: DateTime<Utc>,
    },
    /// The PG declined definitively, or the order was withdrawn before
    /// payment. Pending cancels are released ([`NOT_APPROVED`]).
    Abort { failure: Failure },
    /// The PG never processed the confirmation: back to READY. With a refund
    /// waiting, the order is gone: the payment is aborted
    /// ([`ORDER_CANCELED`]) instead.
    RevertConfirmation { failure: Failure },
    /// A checkout attempt failed in the widget: recorded, nothing ends.
    RecordAttemptFailure { failure: Failure },
    /// Nobody confirmed the payment in time.
    Expire { expired_at: DateTime<Utc> },
    /// Record a cancel that already happened at the PG without our request
    /// (e.g. in Toss's dashboard); `amount: None` is the whole balance.
    Cancel {
        amount: Option<Money>,
        reason: String,
        transaction_key: Option<String>,
    },
    /// Reserve `amount` (`None`: all that is still cancelable) before asking
    /// the PG to give it back; a reservation can never exceed what is left.
    RequestCancel {
        transaction_id: TransactionId,
        amount: Option<Money>,
        reason: String,
    },
    /// The PG gave the reserved money back.
    ConfirmCancel {
        transaction_id: TransactionId,
        transaction_key: Option<String>,
    },
    /// The PG refused the cancel; release the reservation.
    RejectCancel {
        transaction_id: TransactionId,
        failure: Failure,
    },
    /// The PG's answer about a cancel could not be had in time: keep the
    /// reservation, hand it to an operator.
    EscalateCancel {
        transaction_id: TransactionId,
        reason: String,
    },
}

impl PaymentCommand {
    /// A verb for error messages.
    #[must_use]
    pub const fn action(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::StartConfirmation { .. } => "start confirming",
            Self::Approve { .. } => "approve",
            Self::Abort { .. } => "abort",
            Self::RevertConfirmation { .. } => "revert a confirmation of",
            Self::RecordAttemptFailure { .. } => "record a failed attempt on",
            Self::Expire { .. } => "expire",
            Self::Cancel { .. } | Self::RequestCancel { .. } => "cancel",
            Self::ConfirmCancel { .. } => "confirm a cancel of",
            Self::RejectCancel { .. } => "reject a cancel of",
            Self::EscalateCancel { .. } => "escalate a cancel of",
        }
    }
}

/// Why a command was refused. Nothing was recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("the payment already exists")]
    AlreadyExists,
    #[error("the payment does not exist")]
    NotFound,
    #[error("cannot {action} a payment that is {from}")]
    InvalidTransition {
        from: PaymentStatus,
        action: &'static str,
    },
    #[error("amount {actual} does not match the payment amount {expected}")]
    AmountMismatch { expected: Money, actual: Money },
    #[error("payment key does not match the one being confirmed")]
    PaymentKeyMismatch,
    #[error("a payment amount must be greater than zero")]
    ZeroAmount,
    #[error("cancel amount {requested} exceeds the cancelable balance {balance}")]
    NotCancelableAmount { requested: Money, balance: Money },
    #[error("cancel reason must be 1-200 characters")]
    InvalidCancelReason,
    #[error("no pending cancel {0}")]
    UnknownCancel(TransactionId),
    #[error("cancel {0} was already requested")]
    CancelAlreadyRequested(TransactionId),
    #[error("cancel {0} was already escalated")]
    CancelAlreadyEscalated(TransactionId),
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// `decide` produced events its own `apply` rejects: a bug, never input.
    #[error("inconsistent decision: {0}")]
    Inconsistent(#[from] ReplayError),
}

/// An event stream that no sequence of decisions could have produced
/// (corrupt storage or a bug); replay stops rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event #{version} ({event_type}) cannot follow the stream so far: {reason}")]
pub struct ReplayError {
    pub version: u64,
    pub event_type: &'static str,
    pub reason: String,
}

/// The current state of one payment: the fold of its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    id: PaymentId,
    order_id: OrderId,
    user_id: UserId,
    amount: Money,
    balance: Money,
    status: PaymentStatus,
    payment_key: Option<PaymentKey>,
    method: Option<String>,
    approved_at: Option<DateTime<Utc>>,
    failure: Option<Failure>,
    created_at: DateTime<Utc>,
    version: u64,
    /// Cancels requested from the PG and not answered yet.
    pending_cancels: Vec<PendingCancel>,
}

/// A cancel asked of the PG, its amount reserved until the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCancel {
    pub transaction_id: TransactionId,
    pub amount: Money,
    pub reason: String,
    /// Handed to an operator: the PG's answer could not be learned in time.
    pub escalated: bool,
}

impl Payment {
    #[must_use]
    pub const fn id(&self) -> PaymentId {
        self.id
    }
    #[must_use]
    pub const fn order_id(&self) -> &OrderId {
        &self.order_id
    }
    #[must_use]
    pub const fn user_id(&self) -> &UserId {
        &self.user_id
    }
    #[must_use]
    pub const fn amount(&self) -> Money {
        self.amount
    }
    /// What is still cancelable: `amount − Σ cancels`.
    #[must_use]
    pub const fn balance(&self) -> Money {
        self.balance
    }
    #[must_use]
    pub const fn status(&self) -> PaymentStatus {
        self.status
    }
    #[must_use]
    pub const fn payment_key(&self) -> Option<&PaymentKey> {
        self.payment_key.as_ref()
    }
    #[must_use]
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }
    #[must_use]
    pub const fn approved_at(&self) -> Option<DateTime<Utc>> {
        self.approved_at
    }
    #[must_use]
    pub const fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }
    #[must_use]
    pub const fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// What a new cancel request may still take: the balance less the
    /// cancels already requested and not answered.
    #[must_use]
    pub fn cancelable(&self) -> Money {
        self.pending_cancels
            .iter()
            .try_fold(self.balance, |left, pending| {
                left.checked_sub(pending.amount)
            })
            .unwrap_or_else(|_| Money::zero(self.balance.currency()))
    }

    #[must_use]
    pub fn pending_cancels(&self) -> &[PendingCancel] {
        &self.pending_cancels
    }

    /// How many events the state folds: the version the next event follows.
    #[must_use]
    pub const fn version(&self) -> u64 {
        self.version
    }

    /// Rebuilds a payment from its whole stream.
    ///
    /// # Errors
    /// [`ReplayError`] when the stream is empty or inconsistent.
    pub fn replay<'a>(
        events: impl IntoIterator<Item = &'a PaymentEvent>,
    ) -> Result<Self, ReplayError> {
        events
            .into_iter()
            .try_fold(None, |state, event| apply(state, event).map(Some))?
            .ok_or_else(|| ReplayError {
                version: 0,
                event_type: "none",
                reason: "an empty stream is not a payment".into(),
            })
    }
}

/// Judges `command` against `state` (`None`: the payment does not exist yet).
///
/// # Errors
/// [`PaymentError`] saying why the command is refused; nothing changes.
pub fn decide(
    state: Option<&Payment>,
    command: &PaymentCommand,
) -> Result<Vec<PaymentEvent>, PaymentError> {
    let Some(payment) = state else {
        return match command {
            PaymentCommand::Create {
                payment_id,
                order_id,
                user_id,
                amount,
                created_at,
            } => {
                if amount.is_zero() {
                    return Err(PaymentError::ZeroAmount);
                }
                Ok(vec![PaymentEvent::PaymentCreated {
                    payment_id: *payment_id,
                    order_id: order_id.clone(),
                    user_id: user_id.clone(),
                    amount: *amount,
                    created_at: *created_at,
                }])
            }
            _ => Err(PaymentError::NotFound),
        };
    };
    let refuse = || PaymentError::InvalidTransition {
        from: payment.status,
        action: command.action(),
    };
    match (payment.status, command) {
        (_, PaymentCommand::Create { .. }) => Err(PaymentError::AlreadyExists),
        (
            PaymentStatus::Ready,
            PaymentCommand::StartConfirmation {
                payment_key,
                amount,
                transaction_id,
            },
        ) => {
            ensure_same_amount(payment.amount, *amount)?;
            Ok(vec![PaymentEvent::ConfirmationStarted {
                payment_key: payment_key.clone(),
                transaction_id: *transaction_id,
            }])
        }
        (
            PaymentStatus::InProgress,
            PaymentCommand::Approve {
                payment_key,
                approved_amount,
                method,
                approved_at,
            },
        ) => {
            if payment.payment_key.as_ref() != Some(payment_key) {
                return Err(PaymentError::PaymentKeyMismatch);
            }
            ensure_same_amount(payment.amount, *approved_amount)?;
            Ok(vec![PaymentEvent::PaymentApproved {
                payment_key: payment_key.clone(),
                method: method.clone(),
                approved_at: *approved_at,
            }])
        }
        (PaymentStatus::Ready | PaymentStatus::InProgress, PaymentCommand::Abort { failure }) => {
            Ok(payment.aborted(failure.clone()))
        }
        (PaymentStatus::InProgress, PaymentCommand::RevertConfirmation { failure }) => {
            if payment.pending_cancels.is_empty() {
                Ok(vec![PaymentEvent::ConfirmationReverted {
                    failure: failure.clone(),
                }])
            } else {
                Ok(payment.aborted(Failure {
                    code: ORDER_CANCELED.into(),
                    message: "a refund was requested before the payment was approved".into(),
                }))
            }
        }
        (PaymentStatus::Ready, PaymentCommand::RecordAttemptFailure { failure }) => {
            Ok(vec![PaymentEvent::AttemptFailed {
                failure: failure.clone(),
            }])
        }
        (PaymentStatus::Ready, PaymentCommand::Expire { expired_at }) => {
            Ok(vec![PaymentEvent::PaymentExpired {
                expired_at: *expired_at,
            }])
        }
        (
            PaymentStatus::Done | PaymentStatus::PartialCanceled,
            PaymentCommand::Cancel {
                amount,
                reason,
                transaction_key,
            },
        ) => {
            // A fact from the PG: bounded by the balance, not by our reservations.
            let amount = cancel_amount(*amount, payment.balance, reason)?;
            Ok(vec![PaymentEvent::PaymentCanceled {
                amount,
                reason: reason.clone(),
                transaction_key: transaction_key.clone(),
                transaction_id: None,
            }])
        }
        (
            PaymentStatus::InProgress | PaymentStatus::Done | PaymentStatus::PartialCanceled,
            PaymentCommand::RequestCancel {
                transaction_id,
                amount,
                reason,
            },
        ) => {
            if payment.pending(*transaction_id).is_some() {
                return Err(PaymentError::CancelAlreadyRequested(*transaction_id));
            }
            let amount = cancel_amount(*amount, payment.cancelable(), reason)?;
            Ok(vec![PaymentEvent::CancelRequested {
                transaction_id: *transaction_id,
                amount,
                reason: reason.clone(),
            }])
        }
        (
            _,
            PaymentCommand::ConfirmCancel {
                transaction_id,
                transaction_key,
            },
        ) => {
            let pending = payment
                .pending(*transaction_id)
                .ok_or(PaymentError::UnknownCancel(*transaction_id))?;
            Ok(vec![PaymentEvent::PaymentCanceled {
                amount: pending.amount,
                reason: pending.reason.clone(),
                transaction_key: transaction_key.clone(),
                transaction_id: Some(*transaction_id),
            }])
        }
        (
            _,
            PaymentCommand::RejectCancel {
                transaction_id,
                failure,
            },
        ) => {
            payment
                .pending(*transaction_id)
                .ok_or(PaymentError::UnknownCancel(*transaction_id))?;
            Ok(vec![PaymentEvent::CancelRejected {
                transaction_id: *transaction_id,
                failure: failure.clone(),
            }])
        }
        (
            _,
            PaymentCommand::EscalateCancel {
                transaction_id,
                reason,
            },
        ) => {
            let pending = payment
                .pending(*transaction_id)
                .ok_or(PaymentError::UnknownCancel(*transaction_id))?;
            if pending.escalated {
                return Err(PaymentError::CancelAlreadyEscalated(*transaction_id));
            }
            Ok(vec![PaymentEvent::CancelEscalated {
                transaction_id: *transaction_id,
                reason: reason.clone(),
            }])
        }
        _ => Err(refuse()),
    }
}

/// Checks a cancel: a valid reason, more than zero, at most `limit`
/// (`None` takes all of `limit`).
fn cancel_amount(amount: Option<Money>, limit: Money, reason: &str) -> Result<Money, PaymentError> {
    if reason.trim().is_empty() || reason.chars().count() > 200 {
        return Err(PaymentError::InvalidCancelReason);
    }
    let requested = amount.unwrap_or(limit);
    if requested.is_zero() {
        return Err(PaymentError::ZeroAmount);
    }
    if requested.checked_cmp(&limit)?.is_gt() {
        return Err(PaymentError::NotCancelableAmount {
            requested,
            balance: limit,
        });
    }
    Ok(requested)
}

impl Payment {
    fn pending(&self, transaction_id: TransactionId) -> Option<&PendingCancel> {
        self.pending_cancels
            .iter()
            .find(|p| p.transaction_id == transaction_id)
    }

    /// The events of ending the payment unpaid: the abort, then the release
    /// of every cancel waiting for an approval that will never come.
    fn aborted(&self, failure: Failure) -> Vec<PaymentEvent> {
        std::iter::once(PaymentEvent::PaymentAborted { failure })
            .chain(
                self.pending_cancels
                    .iter()
                    .map(|pending| PaymentEvent::CancelRejected {
                        transaction_id: pending.transaction_id,
                        failure: Failure {
                            code: NOT_APPROVED.into(),
                            message: "the payment was never approved: nothing was taken".into(),
                        },
                    }),
            )
            .collect()
    }
}

fn ensure_same_amount(expected: Money, actual: Money) -> Result<(), PaymentError> {
    if expected == actual {
        Ok(())
    } else {
        Err(PaymentError::AmountMismatch { expected, actual })
    }
}

/// Evolves `state` by one event. Events are facts: this does not re-judge
/// them, it only refuses a stream that cannot be consistent.
///
/// # Errors
/// [`ReplayError`] for a stream no sequence of decisions could produce.
pub fn apply(state: Option<Payment>, event: &PaymentEvent) -> Result<Payment, ReplayError> {
    let version = state.as_ref().map_or(0, |p| p.version) + 1;
    let broken = |reason: &str| ReplayError {
        version,
        event_type: event.event_type(),
        reason: reason.to_owned(),
    };
    let Some(mut payment) = state else {
        let PaymentEvent::PaymentCreated {
            payment_id,
            order_id,
            user_id,
            amount,
            created_at,
        } = event
        else {
            return Err(broken("the first event must be PaymentCreated"));
        };
        return Ok(Payment {
            id: *payment_id,
            order_id: order_id.clone(),
            user_id: user_id.clone(),
            amount: *amount,
            balance: *amount,
            status: PaymentStatus::Ready,
            payment_key: None,
            method: None,
            approved_at: None,
            failure: None,
            created_at: *created_at,
            version,
            pending_cancels: Vec::new(),
        });
    };
    match event {
        PaymentEvent::PaymentCreated { .. } => {
            return Err(broken("PaymentCreated may only start a stream"));
        }
        PaymentEvent::ConfirmationStarted { payment_key, .. } => {
            payment.status = PaymentStatus::InProgress;
            payment.payment_key = Some(payment_key.clone());
        }
        PaymentEvent::PaymentApproved {
            payment_key,
            method,
            approved_at,
        } => {
            payment.status = PaymentStatus::Done;
            payment.failure = None;
            payment.payment_key = Some(payment_key.clone());
            payment.method.clone_from(method);
            payment.approved_at = Some(*approved_at);
        }
        PaymentEvent::PaymentAborted { failure } => {
            payment.status = PaymentStatus::Aborted;
            payment.failure = Some(failure.clone());
        }
        PaymentEvent::ConfirmationReverted { failure } => {
            payment.status = PaymentStatus::Ready;
            payment.payment_key = None;
            payment.failure = Some(failure.clone());
        }
        PaymentEvent::AttemptFailed { failure } => payment.failure = Some(failure.clone()),
        PaymentEvent::CancelRequested {
            transaction_id,
            amount,
            reason,
        } => payment.pending_cancels.push(PendingCancel {
            transaction_id: *transaction_id,
            amount: *amount,
            reason: reason.clone(),
            escalated: false,
        }),
        PaymentEvent::CancelEscalated { transaction_id, .. } => {
            let pending = payment
                .pending_cancels
                .iter_mut()
                .find(|p| p.transaction_id == *transaction_id)
                .ok_or_else(|| broken("no such pending cancel"))?;
            pending.escalated = true;
        }
        PaymentEvent::CancelRejected { transaction_id, .. } => {
            payment
                .pending_cancels
                .retain(|p| p.transaction_id != *transaction_id);
        }
        PaymentEvent::PaymentCanceled {
            amount,
            transaction_id,
            ..
        } => {
            if let Some(id) = transaction_id {
                payment.pending_cancels.retain(|p| p.transaction_id != *id);
            }
            payment.balance = payment
                .balance
                .checked_sub(*amount)
                .map_err(|e| broken(&e.to_string()))?;
            payment.status = if payment.balance.is_zero() {
                PaymentStatus::Canceled
            } else {
                PaymentStatus::PartialCanceled
            };
        }
        PaymentEvent::PaymentExpired { .. } => payment.status = PaymentStatus::Expired,
    }
    payment.version = version;
    Ok(payment)
}

/// Decides `command` and folds the resulting events into a new state: what a
/// use case needs to persist (`events`) and answer with (`state`).
///
/// # Errors
/// [`PaymentError`] when the command is refused.
pub fn execute(
    state: Option<&Payment>,
    command: &PaymentCommand,
) -> Result<(Payment, Vec<PaymentEvent>), PaymentError> {
    let events = decide(state, command)?;
    let mut next = state.cloned();
    for event in &events {
        next = Some(apply(next, event)?);
    }
    let next = next.ok_or(PaymentError::NotFound)?;
    Ok((next, events))
}

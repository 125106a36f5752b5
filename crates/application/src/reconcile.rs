//! Resolving approvals whose outcome we do not know, by asking the PG — in
//! the background (the reconciler) and when the PG tells us something
//! changed (the webhook, whose unsigned body is never trusted: the payment
//! is re-fetched first).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use payment_domain::{
    execute, PaymentCommand, PaymentId, PaymentKey, PaymentStatus, TransactionKind,
    TransactionStatus,
};

use crate::cancel::{ask_for_cancel, settle_cancel};
use crate::gateway::{ConfirmRequest, GatewayOutcome, PaymentGateway};
use crate::integration::{self, Causation, Topics};
use crate::ports::{Append, Commit, PaymentRepository, StoreError};
use crate::settle::{settle_approval, Resolution, SettleError};

/// What one attempt at a payment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// Settled now, to this status.
    Settled(PaymentStatus),
    /// Nothing to do: not IN_PROGRESS (anymore).
    NothingToDo,
    /// Still unknown; tried again later.
    StillUnknown,
}

#[derive(Debug, Clone, Copy)]
pub struct ReconcilerSettings {
    /// Only payments IN_PROGRESS for at least this long are examined (a
    /// confirm in flight is left alone).
    pub min_age: Duration,
    /// Toss accepts a confirm within this window after the customer's
    /// authentication; past it, only lookups are made.
    pub confirm_window: Duration,
    /// First delay between attempts at one payment; doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Payments examined per round.
    pub batch: u32,
}

impl Default for ReconcilerSettings {
    fn default() -> Self {
        Self {
            min_age: Duration::from_secs(30),
            confirm_window: Duration::from_secs(10 * 60),
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5 * 60),
            batch: 100,
        }
    }
}

#[derive(Debug)]
pub struct Reconciler<R, G> {
    repository: R,
    gateway: G,
    topics: Topics,
    settings: ReconcilerSettings,
    /// Per payment: attempts so far and when the next one is due.
    backoff: Mutex<HashMap<PaymentId, (u32, Instant)>>,
}

impl<R: PaymentRepository, G: PaymentGateway> Reconciler<R, G> {
    pub fn new(repository: R, gateway: G, topics: Topics, settings: ReconcilerSettings) -> Self {
        Self {
            repository,
            gateway,
            topics,
            settings,
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// One round over the stale IN_PROGRESS payments whose backoff is due;
    /// answers how many were settled.
    ///
    /// # Errors
    /// When the store cannot list the payments.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let min_age = chrono::Duration::from_std(self.settings.min_age).unwrap_or_default();
        let stale = self
            .repository
            .stale(
                PaymentStatus::InProgress,
                Utc::now() - min_age,
                self.settings.batch,
            )
            .await?;
        let mut settled = 0;
        for payment_id in stale {
            if !self.due(payment_id) {
                continue;
            }
            match self.reconcile(payment_id).await {
                Ok(Reconciled::Settled(status)) => {
                    tracing::info!(%payment_id, %status, "reconciled");
                    settled += 1;
                    self.forget(payment_id);
                }
                Ok(Reconciled::NothingToDo) => self.forget(payment_id),
                Ok(Reconciled::StillUnknown) => self.back_off(payment_id),
                Err(error) => {
                    tracing::warn!(%payment_id, %error, "reconciliation failed; will retry");
                    self.back_off(payment_id);
                }
            }
        }
        settled += self.run_cancels_once().await?;
        Ok(settled)
    }

    /// Cancels whose answer is unknown: asked again with their own
    /// idempotency key (the PG replays its first answer, never refunds twice).
    async fn run_cancels_once(&self) -> Result<usize, StoreError> {
        let min_age = chrono::Duration::from_std(self.settings.min_age).unwrap_or_default();
        let unsettled = self
            .repository
            .unsettled(
                TransactionKind::Cancel,
                Utc::now() - min_age,
                self.settings.batch,
            )
            .await?;
        let mut settled = 0;
        for transaction in unsettled {
            let payment_id = transaction.payment_id();
            if !self.due(payment_id) {
                continue;
            }
            let Some(payment) = self.repository.load(payment_id).await? else {
                continue;
            };
            let causation = Causation {
                causation_id: Some(format!("reconciler:{}", transaction.id())),
                ..Causation::default()
            };
            let Some(resolution) = ask_for_cancel(&self.gateway, &payment, &transaction).await
            else {
                self.back_off(payment_id);
                continue;
            };
            match settle_cancel(
                &self.repository,
                &self.topics,
                payment_id,
                transaction.id(),
                &resolution,
                &causation,
            )
            .await
            {
                Ok(_) => {
                    tracing::info!(%payment_id, transaction_id = %transaction.id(), ?resolution, "cancel reconciled");
                    settled += 1;
                    self.forget(payment_id);
                }
                Err(error) => {
                    tracing::warn!(%payment_id, %error, "cancel reconciliation failed; will retry");
                    self.back_off(payment_id);
                }
            }
        }
        Ok(settled)
    }

    /// Resolves one payment: look it up at the PG; if the PG has not decided
    /// and Toss's confirm window is still open, send the confirm again with
    /// the SAME idempotency key (the PG approves at most once).
    ///
    /// # Errors
    /// [`SettleError`] when the answer cannot be recorded.
    pub async fn reconcile(&self, payment_id: PaymentId) -> Result<Reconciled, SettleError> {
        let Some(payment) = self.repository.load(payment_id).await? else {
            return Err(SettleError::NotFound(payment_id));
        };
        if payment.status() != PaymentStatus::InProgress {
            return Ok(Reconciled::NothingToDo);
        }
        let causation = Causation {
            causation_id: Some(format!("reconciler:{payment_id}")),
            ..Causation::default()
        };
        let looked_up = self.gateway.lookup_by_order(payment.order_id()).await;
        let mut resolution = match &looked_up {
            Ok(Some(at_gateway)) if Some(&at_gateway.payment_key) == payment.payment_key() => {
                Resolution::of(at_gateway)
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%payment_id, %error, "lookup failed");
                None
            }
        };
        if resolution.is_none() && looked_up.is_ok() {
            resolution = self.confirm_again(&payment).await;
        }
        if resolution.is_none()
            && matches!(looked_up, Ok(None))
            && self.window_closed(&payment).await
        {
            // Toss holds no approval and can no longer give one: the
            // customer's authentication expired with the confirm window.
            resolution = Some(Resolution::Declined(payment_domain::Failure {
                code: "CONFIRM_WINDOW_EXPIRED".into(),
                message: "the payment gateway never approved the payment within its confirm window"
                    .into(),
            }));
        }
        let Some(resolution) = resolution else {
            return Ok(Reconciled::StillUnknown);
        };
        let settled = settle_approval(
            &self.repository,
            &self.topics,
            payment_id,
            &resolution,
            &causation,
        )
        .await?;
        Ok(Reconciled::Settled(settled.status()))
    }

    /// Re-sends the pending approval with its own idempotency key while
    /// Toss still accepts it.
    async fn confirm_again(&self, payment: &payment_domain::Payment) -> Option<Resolution> {
        let key: &PaymentKey = payment.payment_key()?;
        let pending = self
            .repository
            .transactions(payment.id())
            .await
            .ok()?
            .into_iter()
            .rev()
            .find(|t| {
                t.kind() == TransactionKind::Approval && t.status() == TransactionStatus::Unknown
            })?;
        let age = (Utc::now() - pending.requested_at())
            .to_std()
            .unwrap_or_default();
        if age > self.settings.confirm_window {
            return None;
        }
        let outcome = self
            .gateway
            .confirm(&ConfirmRequest {
                payment_key: key.clone(),
                order_id: payment.order_id().clone(),
                amount: pending.amount(),
                idempotency_key: pending.idempotency_key().to_owned(),
            })
            .await;
        match outcome {
            GatewayOutcome::Succeeded(at_gateway) => Resolution::of(&at_gateway),
            GatewayOutcome::Declined(failure) => Some(Resolution::Declined(failure)),
            GatewayOutcome::Unknown(_) => None,
        }
    }

    /// Whether Toss's confirm window of the pending approval has passed.
    async fn window_closed(&self, payment: &payment_domain::Payment) -> bool {
        let Ok(transactions) = self.repository.transactions(payment.id()).await else {
            return false;
        };
        transactions
            .iter()
            .rev()
            .find(|t| t.kind() == TransactionKind::Approval)
            .is_some_and(|t| {
                (Utc::now() - t.requested_at()).to_std().unwrap_or_default()
                    > self.settings.confirm_window
            })
    }

    fn due(&self, payment_id: PaymentId) -> bool {
        let backoff = self
            .backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        backoff
            .get(&payment_id)
            .is_none_or(|(_, next)| Instant::now() >= *next)
    }

    fn back_off(&self, payment_id: PaymentId) {
        let mut backoff = self
            .backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let attempts = backoff
            .get(&payment_id)
            .map_or(0, |(attempts, _)| *attempts)
            + 1;
        let delay = self
            .settings
            .first_backoff
            .saturating_mul(2_u32.saturating_pow(attempts - 1))
            .min(self.settings.max_backoff);
        backoff.insert(payment_id, (attempts, Instant::now() + delay));
    }

    fn forget(&self, payment_id: PaymentId) {
        self.backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&payment_id);
    }
}

/// A webhook said a payment changed. The body is unsigned: only the payment
/// key is taken from it, and the truth is fetched from the PG.
#[derive(Debug)]
pub struct GatewayNotice<R, G> {
    repository: R,
    gateway: G,
    topics: Topics,
}

impl<R: PaymentRepository, G: PaymentGateway> GatewayNotice<R, G> {
    /// Records cancels made at the PG without us (Toss's dashboard): those
    /// whose transaction keys we have not recorded, and never more than the
    /// difference between our balance and the PG's. Skipped while our own
    /// cancels are pending (the reconciler settles those first).
    async fn record_outside_cancels(
        &self,
        payment_id: PaymentId,
        at_gateway: &crate::gateway::GatewayPayment,
        notice_id: &str,
    ) -> Result<Noticed, SettleError> {
        for _ in 0..5 {
            let Some(payment) = self.repository.load(payment_id).await? else {
                return Err(SettleError::NotFound(payment_id));
            };
            if !payment.pending_cancels().is_empty() {
                return Ok(Noticed::NothingToDo(payment_id));
            }
            let recorded: Vec<Option<String>> = self
                .repository
                .events(payment_id)
                .await?
                .into_iter()
                .filter_map(|e| match e.event {
                    payment_domain::PaymentEvent::PaymentCanceled {
                        transaction_key, ..
                    } => Some(transaction_key),
                    _ => None,
                })
                .collect();
            let Ok(mut missing) = payment.balance().checked_sub(at_gateway.balance_amount) else {
                return Ok(Noticed::NothingToDo(payment_id)); // the PG has more left than we do: not ours to fix
            };
            let mut state = payment.clone();
            let mut events = Vec::new();
            let mut announcements = Vec::new();
            let now = Utc::now();
            let causation = Causation {
                causation_id: Some(notice_id.to_owned()),
                ..Causation::default()
            };
            for outside in at_gateway
                .cancels
                .iter()
                .filter(|c| !recorded.contains(&c.transaction_key))
            {
                let Ok(left) = missing.checked_sub(outside.amount) else {
                    break;
                };
                let command = PaymentCommand::Cancel {
                    amount: Some(outside.amount),
                    reason: "canceled at the payment gateway".into(),
                    transaction_key: outside.transaction_key.clone(),
                };
                let (next, new) = execute(Some(&state), &command)
                    .map_err(|reason| SettleError::Contradiction { payment_id, reason })?;
                announcements.push(integration::payment_canceled(
                    &self.topics,
                    &next,
                    outside.amount,
                    outside.transaction_key.as_deref(),
                    "canceled at the payment gateway",
                    &causation,
                    now,
                ));
                events.extend(new);
                state = next;
                missing = left;
            }
            if events.is_empty() {
                return Ok(Noticed::NothingToDo(payment_id));
            }
            let commit = Commit {
                append: Some(Append {
                    expected_version: payment.version(),
                    events,
                    state: state.clone(),
                    occurred_at: now,
                }),
                outbox: announcements,
                ..Commit::default()
            };
            match self.repository.commit(commit).await {
                Ok(()) => return Ok(Noticed::Settled(payment_id, state.status())),
                Err(StoreError::Conflict { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Unexpected(anyhow::anyhow!("payment {payment_id} kept changing")).into())
    }
}

/// What a notice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noticed {
    /// The PG or we do not know this payment: acknowledged, nothing changed.
    UnknownPayment,
    /// Our payment already agrees with the PG.
    NothingToDo(PaymentId),
    /// Our payment was settled by what the PG says.
    Settled(PaymentId, PaymentStatus),
}

impl<R: PaymentRepository, G: PaymentGateway> GatewayNotice<R, G> {
    pub const fn new(repository: R, gateway: G, topics: Topics) -> Self {
        Self {
            repository,
            gateway,
            topics,
        }
    }

    /// Re-fetches the payment from the PG and settles ours accordingly.
    /// Idempotent: a repeated notice finds nothing left to do.
    ///
    /// # Errors
    /// [`SettleError`]; a failed lookup is `SettleError::Store(Unexpected)`
    /// (answer the PG with an error: it sends the notice again).
    pub async fn handle(
        &self,
        payment_key: &PaymentKey,
        notice_id: &str,
    ) -> Result<Noticed, SettleError> {
        let at_gateway = self
            .gateway
            .lookup(payment_key)
            .await
            .map_err(|e| SettleError::Store(StoreError::Unexpected(e.into())))?;
        let Some(at_gateway) = at_gateway else {
            return Ok(Noticed::UnknownPayment);
        };
        let Some(payment) = self.repository.find_by_order(&at_gateway.order_id).await? else {
            return Ok(Noticed::UnknownPayment);
        };
        if payment.payment_key() != Some(&at_gateway.payment_key) {
            return Ok(Noticed::NothingToDo(payment.id()));
        }
        if matches!(
            payment.status(),
            PaymentStatus::Done | PaymentStatus::PartialCanceled
        ) {
            return self
                .record_outside_cancels(payment.id(), &at_gateway, notice_id)
                .await;
        }
        if payment.status() != PaymentStatus::InProgress {
            return Ok(Noticed::NothingToDo(payment.id()));
        }
        let Some(resolution) = Resolution::of(&at_gateway) else {
            return Ok(Noticed::NothingToDo(payment.id()));
        };
        let causation = Causation {
            causation_id: Some(notice_id.to_owned()),
            ..Causation::default()
        };
        let settled = settle_approval(
            &self.repository,
            &self.topics,
            payment.id(),
            &resolution,
            &causation,
        )
        .await?;
        Ok(Noticed::Settled(payment.id(), settled.status()))
    }
}

//! The reconciler: resolving, in the background, approvals and cancels
//! whose outcome we do not know, by asking the PG (the webhook, in
//! `webhook.rs`, does the same when the PG tells us something changed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use payment_domain::{
    PaymentId, PaymentStatus, PaymentTransaction, TransactionKind, TransactionStatus,
};

use crate::cancel::ask_for_cancel;
use crate::gateway::{ConfirmRequest, GatewayOutcome, PaymentGateway};
use crate::integration::{Causation, Topics};
use crate::ports::{PaymentQueries, PaymentRef, PaymentRepository, Snapshot, StoreError};
use crate::settle::{settle_approval, settle_cancel, Resolution, SettleError};

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

impl<R: PaymentRepository + PaymentQueries, G: PaymentGateway> Reconciler<R, G> {
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
            let Some(Snapshot { payment, .. }) =
                self.repository.load(&PaymentRef::Id(payment_id)).await?
            else {
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
        let Some(Snapshot {
            payment,
            transactions,
            ..
        }) = self.repository.load(&PaymentRef::Id(payment_id)).await?
        else {
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
            resolution = self.confirm_again(&payment, &transactions).await;
        }
        if resolution.is_none()
            && matches!(looked_up, Ok(None))
            && self.window_closed(&transactions)
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
    async fn confirm_again(
        &self,
        payment: &payment_domain::Payment,
        transactions: &[PaymentTransaction],
    ) -> Option<Resolution> {
        let key = payment.payment_key()?;
        let pending = transactions.iter().rev().find(|t| {
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
            // Nothing learned about the first send: a re-send refused for our
            // credentials was not processed, and a key the PG refuses is not
            // shown to be this order's (the window rule still ends a payment
            // the PG holds nothing for).
            GatewayOutcome::KeyRefused(_)
            | GatewayOutcome::Misconfigured(_)
            | GatewayOutcome::Unknown(_) => None,
        }
    }

    /// Whether Toss's confirm window of the pending approval has passed.
    fn window_closed(&self, transactions: &[PaymentTransaction]) -> bool {
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

#[cfg(test)]
mod tests {
    use payment_domain::{Failure, OrderId, Payment, PaymentKey};
    use rust_decimal::Decimal;

    use super::*;
    use crate::cancel::{CancelPayment, Canceled};
    use crate::confirm::{Confirm, ConfirmPayment, Confirmed};
    use crate::gateway::GatewayOutcome;
    use crate::memory::MemoryRepository;
    use crate::testing::{
        approved_at_gateway, cancel_request, canceled_at_gateway, payment_at, topics, won,
        Scripted, Stage,
    };

    const ORDER: &str = "order-recon-1";
    const KEY: &str = "tgen_recon_1";

    fn now_due() -> ReconcilerSettings {
        ReconcilerSettings {
            min_age: Duration::ZERO,
            ..ReconcilerSettings::default()
        }
    }

    fn reconciler(
        repository: &MemoryRepository,
        gateway: &Scripted,
        settings: ReconcilerSettings,
    ) -> Reconciler<MemoryRepository, Scripted> {
        Reconciler::new(repository.clone(), gateway.clone(), topics(), settings)
    }

    /// A payment IN_PROGRESS whose confirm got no answer (its APPROVAL
    /// transaction UNKNOWN).
    async fn unknown_approval(repository: &MemoryRepository, gateway: &Scripted) -> Payment {
        payment_at(
            repository,
            ORDER,
            KEY,
            7_000,
            Stage::Ready,
            chrono::Duration::minutes(1),
        )
        .await;
        let confirm = ConfirmPayment::new(repository.clone(), gateway.clone(), topics());
        let outcome = confirm
            .handle(Confirm {
                payment_key: PaymentKey::parse(KEY).unwrap(),
                order_id: OrderId::parse(ORDER).unwrap(),
                amount: Decimal::from(7_000),
                causation: Causation::default(),
            })
            .await
            .unwrap();
        let Confirmed::Processing(payment) = outcome else {
            panic!("{outcome:?}")
        };
        payment
    }

    #[tokio::test]
    async fn an_approval_the_lookup_shows_is_recorded_without_confirming_again() {
        let repository = MemoryRepository::default();
        let gateway = Scripted::default();
        let payment = unknown_approval(&repository, &gateway).await;
        gateway.shows(approved_at_gateway(KEY, ORDER, 7_000));
        let reconciler = reconciler(&repository, &gateway, now_due());
        assert_eq!(reconciler.run_once().await.unwrap(), 1);
        let settled = repository.payment(payment.id()).await.unwrap().unwrap();
        assert_eq!(settled.status(), PaymentStatus::Done);
        assert_eq!(gateway.confirms(), 1, "only the original confirm");
        assert_eq!(
            repository.all_transactions()[0].status(),
            TransactionStatus::Succeeded
        );
        assert_eq!(
            repository.outbox().last().unwrap().event_type,
            "PaymentCompletedEvent"
        );
    }

    #[tokio::test]
    async fn a_decline_learned_by_confirming_again_aborts_the_payment() {
        let repository = MemoryRepository::default();
        let gateway = Scripted::default();
        let payment = unknown_approval(&repository, &gateway).await;
        *gateway.confirm.lock().unwrap() = Some(GatewayOutcome::Declined(Failure {
            code: "REJECT_CARD_COMPANY".into(),
            message: "declined".into(),
        }));
        let reconciler = reconciler(&repository, &gateway, now_due());
        assert_eq!(
            reconciler.reconcile(payment.id()).await.unwrap(),
            Reconciled::Settled(PaymentStatus::Aborted)
        );
        let aborted = repository.payment(payment.id()).await.unwrap().unwrap();
        assert_eq!(aborted.failure().unwrap().code, "REJECT_CARD_COMPANY");
        let keys = gateway.keys.lock().unwrap().clone();
        assert_eq!(keys[0], keys[1], "the same idempotency key");
    }

    #[tokio::test]
    async fn a_payment_still_unknown_waits_for_its_backoff() {
        let repository = MemoryRepository::default();
        let gateway = Scripted::default();
        unknown_approval(&repository, &gateway).await;
        let patient = ReconcilerSettings {
            first_backoff: Duration::from_secs(3_600),
            ..now_due()
        };
        let reconciler = reconciler(&repository, &gateway, patient);
        assert_eq!(reconciler.run_once().await.unwrap(), 0);
        assert_eq!(gateway.confirms(), 2, "asked once this round");
        assert_eq!(reconciler.run_once().await.unwrap(), 0);
        assert_eq!(gateway.confirms(), 2, "not before the backoff");
    }

    #[tokio::test]
    async fn a_cancel_whose_answer_was_lost_is_settled_with_its_own_key() {
        let repository = MemoryRepository::default();
        let gateway = Scripted::default();
        let payment = payment_at(
            &repository,
            ORDER,
            KEY,
            7_000,
            Stage::Done,
            chrono::Duration::minutes(1),
        )
        .await;
        let cancel = CancelPayment::new(repository.clone(), gateway.clone(), topics());
        let pending = cancel
            .handle(cancel_request(&payment, Some(2_000), "k1"))
            .await
            .unwrap();
        assert!(matches!(pending, Canceled::Pending(_)), "{pending:?}");

        gateway.cancels_with(GatewayOutcome::Succeeded(canceled_at_gateway(
            approved_at_gateway(KEY, ORDER, 7_000),
            &[(2_000, "txk-late")],
        )));
        let reconciler = reconciler(&repository, &gateway, now_due());
        assert_eq!(reconciler.run_once().await.unwrap(), 1);
        let settled = repository.payment(payment.id()).await.unwrap().unwrap();
        assert_eq!(settled.balance(), won(5_000));
        assert!(settled.pending_cancels().is_empty());
        let keys = gateway.cancel_keys.lock().unwrap().clone();
        assert_eq!(keys.len(), 3);
        assert!(keys.iter().all(|k| *k == keys[0]), "one key: {keys:?}");
        let canceled = repository.outbox().pop().unwrap();
        assert_eq!(canceled.event_type, "PaymentCanceledEvent");
        assert_eq!(canceled.payload["data"]["transactionKey"], "txk-late");
        assert_eq!(reconciler.run_once().await.unwrap(), 0, "nothing twice");
    }
}

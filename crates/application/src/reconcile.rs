//! The reconciler: resolving, in the background, approvals and cancels
//! whose outcome we do not know, by asking the PG (the webhook, in
//! `webhook.rs`, does the same when the PG tells us something changed).
//!
//! Its work is the UNKNOWN gateway transactions that are due: the backoff
//! lives in the database with each transaction ([`RetrySchedule`]), so one
//! indexed query selects what to look at, a restart forgets nothing, and a
//! payment that stays unsettled for a good reason (a virtual account waiting
//! for its deposit, a contradiction left for an operator) is pushed further
//! back each time instead of being selected again before the rest. Up to
//! [`ReconcilerSettings::concurrency`] payments are resolved at once, and
//! one that fails (a stream that does not replay, a PG error) is logged and
//! postponed; the round goes on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use payment_domain::{
    PaymentId, PaymentStatus, PaymentTransaction, TransactionId, TransactionKind, TransactionStatus,
};

use crate::backoff::Backoff;
use crate::cancel::{resolve_cancel, CancelResolved, CancelSettings, Look};
use crate::gateway::{ConfirmRequest, GatewayOutcome, PaymentGateway};
use crate::integration::{Causation, Topics};
use crate::ports::{
    Due, PaymentQueries, PaymentRef, PaymentRepository, RetrySchedule, Scheduled, Snapshot,
    StoreError,
};
use crate::settle::{settle_approval, then_waiting_cancels, Resolution, SettleError};

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
    /// Only transactions requested at least this long ago are examined (a
    /// confirm in flight is left alone).
    pub min_age: Duration,
    /// Toss accepts a confirm within this window after the customer's
    /// authentication; past it, only lookups are made.
    pub confirm_window: Duration,
    /// Delay after the first look that settled nothing; doubles with each
    /// further look, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Due transactions selected per query (a round selects again while a
    /// query comes back full).
    pub batch: u32,
    /// Payments resolved at once: each holds a database connection or a PG
    /// request at a time.
    pub concurrency: usize,
    /// How unknown cancels are settled.
    pub cancels: CancelSettings,
}

impl Default for ReconcilerSettings {
    fn default() -> Self {
        Self {
            min_age: Duration::from_secs(30),
            confirm_window: Duration::from_secs(10 * 60),
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5 * 60),
            batch: 500,
            concurrency: 16,
            cancels: CancelSettings::default(),
        }
    }
}

/// What looking at one due transaction came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Looked {
    Settled,
    Postponed,
    /// Neither settled nor postponed (the store failed): still due.
    Stuck,
}

#[derive(Debug)]
pub struct Reconciler<R, G> {
    repository: R,
    gateway: G,
    topics: Topics,
    settings: ReconcilerSettings,
}

impl<R, G> Reconciler<R, G>
where
    R: PaymentRepository + PaymentQueries + RetrySchedule,
    G: PaymentGateway,
{
    pub const fn new(
        repository: R,
        gateway: G,
        topics: Topics,
        settings: ReconcilerSettings,
    ) -> Self {
        Self {
            repository,
            gateway,
            topics,
            settings,
        }
    }

    /// One round: every approval, then every cancel, whose outcome is
    /// unknown and whose backoff is due; answers how many were settled.
    ///
    /// # Errors
    /// When the store cannot list the due transactions.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let approvals = self.drain(TransactionKind::Approval).await?;
        Ok(approvals + self.drain(TransactionKind::Cancel).await?)
    }

    /// Looks at the due transactions of `kind`, `concurrency` at a time,
    /// selecting again while a selection comes back full and something was
    /// settled or postponed (every look does one or the other, so what was
    /// looked at is not due again this round).
    async fn drain(&self, kind: TransactionKind) -> Result<usize, StoreError> {
        let min_age = chrono::Duration::from_std(self.settings.min_age).unwrap_or_default();
        let mut settled = 0;
        loop {
            let now = Utc::now();
            let due = self
                .repository
                .due(kind, now, now - min_age, self.settings.batch)
                .await?;
            let full = due.len() >= self.settings.batch as usize;
            let looked: Vec<Looked> = futures::stream::iter(due)
                .map(|due| self.look(kind, due))
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect()
                .await;
            settled += looked.iter().filter(|l| **l == Looked::Settled).count();
            if !full || looked.iter().all(|l| *l == Looked::Stuck) {
                return Ok(settled);
            }
        }
    }

    async fn look(&self, kind: TransactionKind, due: Due) -> Looked {
        let settled = match kind {
            TransactionKind::Approval => self.look_at_approval(&due.transaction).await,
            TransactionKind::Cancel => self.look_at_cancel(&due.transaction).await,
        };
        if settled {
            return Looked::Settled;
        }
        let attempts = due.attempts.saturating_add(1);
        let next = self.next_attempt(attempts, Utc::now());
        match self
            .repository
            .postpone(Scheduled::Transaction(due.transaction.id()), attempts, next)
            .await
        {
            Ok(()) => Looked::Postponed,
            Err(error) => {
                tracing::warn!(transaction_id = %due.transaction.id(), %error, "backoff not recorded");
                Looked::Stuck
            }
        }
    }

    /// Whether the approval `transaction` waits for was settled now.
    async fn look_at_approval(&self, transaction: &PaymentTransaction) -> bool {
        let payment_id = transaction.payment_id();
        match self.reconcile(payment_id).await {
            Ok(Reconciled::Settled(status)) => {
                tracing::info!(%payment_id, %status, "reconciled");
                true
            }
            Ok(Reconciled::NothingToDo | Reconciled::StillUnknown) => false,
            Err(error) => {
                tracing::warn!(%payment_id, %error, "reconciliation failed; will retry");
                false
            }
        }
    }

    /// An operator's pass over the cancels of `payment_id` whose outcome is
    /// unknown, escalated ones included: each settled from the PG's answer
    /// or view as the background pass would, an escalated one only looked up.
    ///
    /// # Errors
    /// [`SettleError`] when the payment cannot be read; a cancel that cannot
    /// be settled answers its own error.
    pub async fn reconcile_cancels(
        &self,
        payment_id: PaymentId,
    ) -> Result<Vec<(TransactionId, Result<CancelResolved, SettleError>)>, SettleError> {
        let Some(snapshot) = self.repository.load(&PaymentRef::Id(payment_id)).await? else {
            return Err(SettleError::NotFound(payment_id));
        };
        let mut resolved = Vec::new();
        for transaction in snapshot.transactions.iter().filter(|t| {
            t.kind() == TransactionKind::Cancel && t.status() == TransactionStatus::Unknown
        }) {
            let outcome = self.resolve_cancel(transaction, Look::Operator).await;
            resolved.push((transaction.id(), outcome));
        }
        Ok(resolved)
    }

    async fn resolve_cancel(
        &self,
        transaction: &PaymentTransaction,
        look: Look,
    ) -> Result<CancelResolved, SettleError> {
        let causation = Causation {
            causation_id: Some(format!("reconciler:{}", transaction.id())),
            ..Causation::default()
        };
        resolve_cancel(
            &self.repository,
            &self.gateway,
            &self.topics,
            &self.settings.cancels,
            transaction,
            &causation,
            look,
        )
        .await
    }

    /// Whether the cancel `transaction` was settled (or escalated) now.
    async fn look_at_cancel(&self, transaction: &PaymentTransaction) -> bool {
        let payment_id = transaction.payment_id();
        match self.resolve_cancel(transaction, Look::Reconciler).await {
            Ok(CancelResolved::Settled(_) | CancelResolved::Escalated(_)) => {
                tracing::info!(%payment_id, transaction_id = %transaction.id(), "cancel reconciled");
                true
            }
            Ok(
                CancelResolved::StillUnknown
                | CancelResolved::WaitingForApproval
                | CancelResolved::NothingToDo,
            ) => false,
            Err(error) => {
                tracing::warn!(%payment_id, %error, "cancel reconciliation failed; will retry");
                false
            }
        }
    }

    /// When a transaction looked at `attempts` times is due again.
    fn next_attempt(&self, attempts: u32, now: DateTime<Utc>) -> DateTime<Utc> {
        Backoff {
            first: self.settings.first_backoff,
            max: self.settings.max_backoff,
        }
        .next_attempt(attempts, now)
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
        let status = settled.status();
        if status == PaymentStatus::Done {
            // Refunds asked while the approval was unknown go out now.
            then_waiting_cancels(
                &self.repository,
                &self.gateway,
                &self.topics,
                settled,
                &causation,
            )
            .await;
        }
        Ok(Reconciled::Settled(status))
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
        unknown_approval_of(repository, gateway, ORDER, KEY).await
    }

    async fn unknown_approval_of(
        repository: &MemoryRepository,
        gateway: &Scripted,
        order: &str,
        key: &str,
    ) -> Payment {
        payment_at(
            repository,
            order,
            key,
            7_000,
            Stage::Ready,
            chrono::Duration::minutes(1),
        )
        .await;
        let confirm = ConfirmPayment::new(repository.clone(), gateway.clone(), topics());
        let outcome = confirm
            .handle(Confirm {
                payment_key: PaymentKey::parse(key).unwrap(),
                order_id: OrderId::parse(order).unwrap(),
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
    async fn a_round_goes_on_past_a_full_selection_and_backs_off_each_look_longer() {
        let repository = MemoryRepository::default();
        let gateway = Scripted::default();
        for i in 0..5 {
            let order = format!("order-recon-batch-{i}");
            unknown_approval_of(&repository, &gateway, &order, &format!("tgen_b{i}")).await;
        }
        let settings = ReconcilerSettings {
            batch: 2,
            concurrency: 2,
            first_backoff: Duration::from_secs(60),
            ..now_due()
        };
        let reconciler = reconciler(&repository, &gateway, settings);
        assert_eq!(reconciler.run_once().await.unwrap(), 0);
        assert_eq!(
            gateway.confirms(),
            10,
            "each asked once more, in batches of 2"
        );
        let now = Utc::now();
        let looked = repository
            .due(
                TransactionKind::Approval,
                now + chrono::Duration::hours(1),
                now,
                10,
            )
            .await
            .unwrap();
        assert_eq!(looked.len(), 5);
        assert!(looked.iter().all(|due| due.attempts == 1));
        let second = reconciler.next_attempt(2, now) - now;
        let capped = reconciler.next_attempt(30, now) - now;
        assert_eq!(second, chrono::Duration::seconds(120), "doubled");
        assert_eq!(capped, chrono::Duration::minutes(5), "up to max_backoff");
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

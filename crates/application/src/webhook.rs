//! Use case: the PG notified us that a payment changed (Toss's webhook).
//! The notice is unsigned, so only the payment key is taken from it and the
//! truth is fetched from the PG; what it shows settles a pending approval,
//! or records cancels made at the PG without us (Toss's dashboard).
//! Idempotent: a repeated notice finds nothing left to do.

use payment_domain::{PaymentCommand, PaymentEvent, PaymentId, PaymentKey, PaymentStatus};

use crate::error::Classify;
use crate::gateway::{GatewayPayment, LookupFailed, PaymentGateway};
use crate::integration::{self, Causation, Topics};
use crate::ports::{PaymentRef, PaymentRepository, StoreError};
use crate::runner::{run, Change, Decision, Ran, Trigger};
use crate::settle::{
    settle_approval, then_waiting_cancels, Resolution, SettleError, OUTSIDE_CANCEL_REASON,
};

/// The webhook's use case.
#[derive(Debug)]
pub struct GatewayNotice<R, G> {
    repository: R,
    gateway: G,
    topics: Topics,
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

#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    /// The PG could not be asked: the notice must come again.
    #[error(transparent)]
    Gateway(#[from] LookupFailed),
    #[error(transparent)]
    Settle(#[from] SettleError),
}

impl From<StoreError> for NoticeError {
    fn from(error: StoreError) -> Self {
        Self::Settle(error.into())
    }
}

impl Classify for NoticeError {
    fn is_permanent(&self) -> bool {
        match self {
            Self::Gateway(_) => false,
            Self::Settle(error) => error.is_permanent(),
        }
    }
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
    ///
    /// # Errors
    /// [`NoticeError`]; the PG should send the notice again.
    pub async fn handle(
        &self,
        payment_key: &PaymentKey,
        notice_id: &str,
    ) -> Result<Noticed, NoticeError> {
        let Some(at_gateway) = self.gateway.lookup(payment_key).await? else {
            return Ok(Noticed::UnknownPayment);
        };
        let which = PaymentRef::Order(at_gateway.order_id.clone());
        let Some(payment) = self.repository.load(&which).await?.map(|s| s.payment) else {
            return Ok(Noticed::UnknownPayment);
        };
        if payment.payment_key() != Some(&at_gateway.payment_key) {
            return Ok(Noticed::NothingToDo(payment.id()));
        }
        let causation = Causation {
            causation_id: Some(notice_id.to_owned()),
            ..Causation::default()
        };
        if matches!(
            payment.status(),
            PaymentStatus::Done | PaymentStatus::PartialCanceled
        ) {
            return Ok(self
                .record_outside_cancels(payment.id(), &at_gateway, &causation)
                .await?);
        }
        if payment.status() != PaymentStatus::InProgress {
            return Ok(Noticed::NothingToDo(payment.id()));
        }
        let Some(resolution) = Resolution::of(&at_gateway) else {
            return Ok(Noticed::NothingToDo(payment.id()));
        };
        let settled = settle_approval(
            &self.repository,
            &self.topics,
            payment.id(),
            &resolution,
            &causation,
        )
        .await?;
        let settled = then_waiting_cancels(
            &self.repository,
            &self.gateway,
            &self.topics,
            settled,
            &causation,
        )
        .await;
        Ok(Noticed::Settled(payment.id(), settled.status()))
    }

    /// Records cancels made at the PG without us: those whose transaction
    /// keys we have not recorded, and never more than the difference between
    /// our balance and the PG's. Skipped while our own cancels are pending
    /// (the reconciler settles those first).
    async fn record_outside_cancels(
        &self,
        payment_id: PaymentId,
        at_gateway: &GatewayPayment,
        causation: &Causation,
    ) -> Result<Noticed, SettleError> {
        let which = PaymentRef::Id(payment_id);
        let ran = run(
            &self.repository,
            &which,
            &Trigger::Untracked,
            |loaded, now| -> Result<_, SettleError> {
                let loaded = loaded.ok_or(SettleError::NotFound(payment_id))?;
                let payment = &loaded.payment;
                if !payment.pending_cancels().is_empty() {
                    return Ok(Decision::Answer(()));
                }
                let recorded: Vec<Option<&str>> = loaded
                    .history
                    .iter()
                    .filter_map(|e| match &e.event {
                        PaymentEvent::PaymentCanceled {
                            transaction_key, ..
                        } => Some(transaction_key.as_deref()),
                        _ => None,
                    })
                    .collect();
                let Ok(mut missing) = payment.balance().checked_sub(at_gateway.balance_amount)
                else {
                    return Ok(Decision::Answer(())); // the PG has more left than we do: not ours to fix
                };
                let mut change: Option<Change> = None;
                for outside in at_gateway
                    .cancels
                    .iter()
                    .filter(|c| !recorded.contains(&c.transaction_key.as_deref()))
                {
                    let Ok(left) = missing.checked_sub(outside.amount) else {
                        break;
                    };
                    let command = PaymentCommand::Cancel {
                        amount: Some(outside.amount),
                        reason: OUTSIDE_CANCEL_REASON.into(),
                        transaction_key: outside.transaction_key.clone(),
                    };
                    let next = match change {
                        None => Change::decide(Some(payment), &command),
                        Some(so_far) => so_far.then(&command),
                    }
                    .map_err(|reason| SettleError::Contradiction { payment_id, reason })?;
                    let canceled = integration::payment_canceled(
                        &self.topics,
                        next.state(),
                        outside.amount,
                        outside.transaction_key.as_deref(),
                        OUTSIDE_CANCEL_REASON,
                        causation,
                        now,
                    );
                    change = Some(next.announce(canceled));
                    missing = left;
                }
                Ok(change.map_or(Decision::Answer(()), |change| Decision::Record(change, ())))
            },
        )
        .await?;
        Ok(match ran {
            Ran::Answered(()) => Noticed::NothingToDo(payment_id),
            Ran::Recorded(payment, ()) => Noticed::Settled(payment_id, payment.status()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use payment_domain::Payment;

    use super::*;
    use crate::cancel::{Cancel, CancelPayment, Requester};
    use crate::gateway::GatewayOutcome;
    use crate::memory::MemoryRepository;
    use crate::ports::PaymentQueries as _;
    use crate::testing::{
        approved_at_gateway, cancel_request, canceled_at_gateway, topics, won, world, Scripted,
        Stage,
    };

    const ORDER: &str = "order-notice-1";
    const KEY: &str = "tgen_notice_1";

    async fn given(
        stage: Stage,
    ) -> (
        MemoryRepository,
        Scripted,
        GatewayNotice<MemoryRepository, Scripted>,
        Payment,
    ) {
        let (repository, gateway, payment) = world(ORDER, KEY, stage).await;
        let notice = GatewayNotice::new(repository.clone(), gateway.clone(), topics());
        (repository, gateway, notice, payment)
    }

    fn key() -> PaymentKey {
        PaymentKey::parse(KEY).unwrap()
    }

    #[tokio::test]
    async fn a_payment_the_pg_does_not_know_is_acknowledged() {
        let (repository, _, notice, _) = given(Stage::Done).await;
        assert_eq!(
            notice.handle(&key(), "n-1").await.unwrap(),
            Noticed::UnknownPayment
        );
        assert!(repository.outbox().is_empty());
    }

    #[tokio::test]
    async fn an_approval_the_pg_shows_settles_a_payment_in_progress() {
        let (repository, gateway, notice, payment) = given(Stage::InProgress).await;
        gateway.shows(approved_at_gateway(KEY, ORDER, 10_000));
        assert_eq!(
            notice.handle(&key(), "n-1").await.unwrap(),
            Noticed::Settled(payment.id(), PaymentStatus::Done)
        );
        let completed = repository.outbox().pop().unwrap();
        assert_eq!(completed.event_type, "PaymentCompletedEvent");
        assert_eq!(completed.payload["causationid"], "n-1");
        assert_eq!(
            notice.handle(&key(), "n-1").await.unwrap(),
            Noticed::NothingToDo(payment.id()),
            "the same notice again changes nothing"
        );
    }

    #[tokio::test]
    async fn a_refund_asked_while_the_approval_was_unknown_is_made_once_it_is_approved() {
        let (repository, gateway, notice, payment) = given(Stage::InProgress).await;
        // The order service asked a refund while the approval was unknown.
        let refund = Cancel {
            requester: Requester::OrderService,
            ..cancel_request(&payment, None, "k-wait")
        };
        CancelPayment::new(repository.clone(), gateway.clone(), topics())
            .handle(refund)
            .await
            .unwrap();
        assert_eq!(gateway.cancels(), 0, "nothing is sent before the approval");
        let approved = approved_at_gateway(KEY, ORDER, 10_000);
        gateway.shows(approved.clone());
        gateway.cancels_with(GatewayOutcome::Succeeded(canceled_at_gateway(
            approved,
            &[(10_000, "txk-refund")],
        )));
        assert_eq!(
            notice.handle(&key(), "n-1").await.unwrap(),
            Noticed::Settled(payment.id(), PaymentStatus::Canceled)
        );
        assert_eq!(gateway.cancels(), 1);
        let types: Vec<String> = repository
            .outbox()
            .iter()
            .map(|m| m.event_type.clone())
            .collect();
        assert_eq!(types, ["PaymentCompletedEvent", "PaymentCanceledEvent"]);
    }

    #[tokio::test]
    async fn a_dashboard_cancel_is_recorded_once() {
        let (repository, gateway, notice, payment) = given(Stage::Done).await;
        gateway.shows(canceled_at_gateway(
            approved_at_gateway(KEY, ORDER, 10_000),
            &[(2_500, "txk-dash-1")],
        ));
        assert_eq!(
            notice.handle(&key(), "n-1").await.unwrap(),
            Noticed::Settled(payment.id(), PaymentStatus::PartialCanceled)
        );
        assert_eq!(
            notice.handle(&key(), "n-2").await.unwrap(),
            Noticed::NothingToDo(payment.id())
        );
        let recorded = repository.payment(payment.id()).await.unwrap().unwrap();
        assert_eq!(recorded.balance(), won(7_500));
        let outbox = repository.outbox();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].payload["data"]["canceledAmount"], 2_500);
        assert_eq!(outbox[0].payload["data"]["transactionKey"], "txk-dash-1");
    }

    #[tokio::test]
    async fn outside_cancels_wait_while_one_of_ours_is_pending() {
        let (repository, gateway, notice, payment) = given(Stage::Done).await;
        // Our own cancel of 1,000 got no answer: it is still reserved.
        CancelPayment::new(repository.clone(), gateway.clone(), topics())
            .handle(cancel_request(&payment, Some(1_000), "k1"))
            .await
            .unwrap();
        gateway.shows(canceled_at_gateway(
            approved_at_gateway(KEY, ORDER, 10_000),
            &[(1_000, "txk-ours")],
        ));
        assert_eq!(
            notice.handle(&key(), "n-1").await.unwrap(),
            Noticed::NothingToDo(payment.id())
        );
        let unchanged = repository.payment(payment.id()).await.unwrap().unwrap();
        assert_eq!(unchanged.balance(), won(10_000));
    }

    #[tokio::test]
    async fn a_notice_about_another_payment_key_changes_nothing() {
        let (repository, gateway, notice, payment) = given(Stage::InProgress).await;
        gateway.shows(approved_at_gateway("tgen_someone_else", ORDER, 10_000));
        assert_eq!(
            notice.handle(&key(), "n-1").await.unwrap(),
            Noticed::NothingToDo(payment.id())
        );
        let unchanged = repository.payment(payment.id()).await.unwrap().unwrap();
        assert_eq!(unchanged.status(), PaymentStatus::InProgress);
    }

    #[tokio::test]
    async fn a_pg_that_cannot_be_asked_is_a_transient_failure() {
        let (_, gateway, notice, _) = given(Stage::InProgress).await;
        gateway.lookup_fails.store(true, Ordering::SeqCst);
        let error = notice.handle(&key(), "n-1").await.unwrap_err();
        assert!(matches!(error, NoticeError::Gateway(_)), "{error:?}");
        assert!(!error.is_permanent());
    }
}

//! Expiry: a READY payment nobody confirmed within the TTL becomes EXPIRED
//! and the platform is told (`PaymentFailedEvent`). IN_PROGRESS payments are
//! never expired — only the PG's answer settles them.
//!
//! A payment that cannot be expired (its stream does not replay, the store
//! refuses the write) is postponed in the store with a growing [`Backoff`],
//! as the reconciler's looks are ([`RetrySchedule`]): the next selection
//! skips it in the same indexed query, so any number of them never hold
//! back the payments behind.

use std::time::Duration;

use chrono::Utc;
use payment_domain::{PaymentCommand, PaymentStatus};

use crate::backoff::Backoff;
use crate::error::{Classify as _, Contended};
use crate::integration::{self, Causation, Topics};
use crate::ports::{
    PaymentQueries, PaymentRef, PaymentRepository, RetrySchedule, Scheduled, Stale, StoreError,
};
use crate::runner::{run, Change, Decision, Ran, Trigger};

/// How long a payment that could not be expired waits before the next
/// attempt: a minute, doubling up to an hour.
pub const EXPIRY_BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(60),
    max: Duration::from_secs(3_600),
};

#[derive(Debug, Clone)]
pub struct ExpirePayments<R> {
    repository: R,
    topics: Topics,
    ttl: Duration,
    batch: u32,
    backoff: Backoff,
}

/// Why one payment was not expired.
#[derive(Debug, thiserror::Error)]
enum ExpireError {
    #[error(transparent)]
    Contended(#[from] Contended),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<R: PaymentRepository + PaymentQueries + RetrySchedule> ExpirePayments<R> {
    /// Expires up to `batch` payments per run, postponing those that cannot
    /// be expired by [`EXPIRY_BACKOFF`].
    pub const fn new(repository: R, topics: Topics, ttl: Duration, batch: u32) -> Self {
        Self {
            repository,
            topics,
            ttl,
            batch,
            backoff: EXPIRY_BACKOFF,
        }
    }

    /// Expires the READY payments older than the TTL and due; answers how
    /// many. A payment that changed meanwhile (confirmed, aborted) is left
    /// alone; one the store cannot read or refuses to write (its stream
    /// does not replay) is logged and postponed.
    ///
    /// # Errors
    /// When the store is unavailable; what was expired so far stays expired.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or_default();
        let now = Utc::now();
        let candidates = self
            .repository
            .stale(PaymentStatus::Ready, now - ttl, now, self.batch)
            .await?;
        let mut expired = 0;
        for Stale {
            payment_id,
            attempts,
        } in candidates
        {
            let causation = Causation {
                causation_id: Some(format!("expiry:{payment_id}")),
                ..Causation::default()
            };
            let which = PaymentRef::Id(payment_id);
            let ran = run(
                &self.repository,
                &which,
                &Trigger::Untracked,
                |loaded, now| -> Result<_, ExpireError> {
                    let expire = PaymentCommand::Expire { expired_at: now };
                    let Some(Ok(change)) =
                        loaded.map(|s| Change::decide(Some(&s.payment), &expire))
                    else {
                        return Ok(Decision::Answer(())); // no longer READY
                    };
                    let failed =
                        integration::payment_failed(&self.topics, change.state(), &causation, now);
                    Ok(Decision::Record(change.announce(failed), ()))
                },
            )
            .await;
            match ran {
                Ok(Ran::Recorded(payment, ())) => {
                    tracing::info!(%payment_id, order_id = %payment.order_id(), "payment expired");
                    expired += 1;
                }
                Ok(Ran::Answered(())) => {}
                Err(ExpireError::Contended(error)) => {
                    tracing::warn!(%payment_id, %error, "not expired this round");
                }
                // This payment's own fault (a stream that does not replay):
                // the others are expired all the same, and the next rounds
                // look at it less and less often.
                Err(ExpireError::Store(error)) if error.is_permanent() => {
                    let attempts = attempts.saturating_add(1);
                    let next = self.backoff.next_attempt(attempts, Utc::now());
                    tracing::error!(%payment_id, attempts, %next, error = format!("{error:#}"), "payment cannot be expired; postponed");
                    if let Err(error) = self
                        .repository
                        .postpone(Scheduled::Payment(payment_id), attempts, next)
                        .await
                    {
                        tracing::warn!(%payment_id, %error, "expiry backoff not recorded");
                    }
                }
                Err(ExpireError::Store(error)) => return Err(error),
            }
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryRepository;
    use crate::testing::{payment_at, topics, Stage};

    #[tokio::test]
    async fn ready_payments_past_the_ttl_expire_with_a_failed_event() {
        let repository = MemoryRepository::default();
        let two_hours = chrono::Duration::hours(2);
        let minute = chrono::Duration::minutes(1);
        let old = payment_at(
            &repository,
            "order-old-1",
            "k",
            1_000,
            Stage::Ready,
            two_hours,
        )
        .await
        .id();
        let fresh = payment_at(&repository, "order-new-1", "k", 1_000, Stage::Ready, minute)
            .await
            .id();
        let expiry = ExpirePayments::new(
            repository.clone(),
            topics(),
            Duration::from_secs(30 * 60),
            10,
        );

        assert_eq!(expiry.run_once().await.unwrap(), 1);
        assert_eq!(
            repository.payment(old).await.unwrap().unwrap().status(),
            PaymentStatus::Expired
        );
        assert_eq!(
            repository.payment(fresh).await.unwrap().unwrap().status(),
            PaymentStatus::Ready
        );
        let failed = repository.outbox().pop().unwrap();
        assert_eq!(failed.event_type, "PaymentFailedEvent");
        assert_eq!(failed.payload["data"]["code"], "PAYMENT_EXPIRED");
        assert_eq!(expiry.run_once().await.unwrap(), 0, "nothing twice");
    }

    #[tokio::test]
    async fn payments_that_cannot_be_expired_never_hold_back_the_others() {
        let repository = MemoryRepository::default();
        let batch = 2;
        // More broken payments than a batch, all older than the good one.
        for i in 0..3 {
            let broken = payment_at(
                &repository,
                &format!("order-broken-{i}"),
                "k",
                1_000,
                Stage::Ready,
                chrono::Duration::hours(3) - chrono::Duration::minutes(i),
            )
            .await;
            repository.break_stream(broken.id());
        }
        let good = payment_at(
            &repository,
            "order-good-1",
            "k",
            1_000,
            Stage::Ready,
            chrono::Duration::hours(2),
        )
        .await
        .id();
        let expiry = ExpirePayments::new(
            repository.clone(),
            topics(),
            Duration::from_secs(30 * 60),
            batch,
        );

        // Each round postpones what it could not expire; within as many
        // rounds as it takes to look at every broken one, the good one goes.
        let mut expired = 0;
        for _ in 0..3 {
            expired += expiry.run_once().await.unwrap();
        }
        assert_eq!(expired, 1);
        assert_eq!(
            repository.payment(good).await.unwrap().unwrap().status(),
            PaymentStatus::Expired
        );
        assert_eq!(
            expiry.run_once().await.unwrap(),
            0,
            "the broken ones wait for their backoff"
        );
    }

    #[tokio::test]
    async fn in_progress_payments_never_expire() {
        let repository = MemoryRepository::default();
        let id = payment_at(
            &repository,
            "order-busy-1",
            "tgen_busy",
            1_000,
            Stage::InProgress,
            chrono::Duration::hours(2),
        )
        .await
        .id();
        let expiry = ExpirePayments::new(repository.clone(), topics(), Duration::from_secs(60), 10);
        assert_eq!(expiry.run_once().await.unwrap(), 0);
        assert_eq!(
            repository.payment(id).await.unwrap().unwrap().status(),
            PaymentStatus::InProgress
        );
    }
}

//! Expiry: a READY payment nobody confirmed within the TTL becomes EXPIRED
//! and the platform is told (`PaymentFailedEvent`). IN_PROGRESS payments are
//! never expired — only the PG's answer settles them.

use std::time::Duration;

use chrono::Utc;
use payment_domain::{execute, PaymentCommand, PaymentStatus};

use crate::integration::{self, Causation, Topics};
use crate::ports::{Append, Commit, PaymentRepository, StoreError};

#[derive(Debug, Clone)]
pub struct ExpirePayments<R> {
    repository: R,
    topics: Topics,
    ttl: Duration,
    batch: u32,
}

impl<R: PaymentRepository> ExpirePayments<R> {
    pub const fn new(repository: R, topics: Topics, ttl: Duration, batch: u32) -> Self {
        Self {
            repository,
            topics,
            ttl,
            batch,
        }
    }

    /// Expires the READY payments older than the TTL; answers how many.
    /// A payment that changed meanwhile (confirmed, aborted) is left alone.
    ///
    /// # Errors
    /// When the store fails; what was expired so far stays expired.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or_default();
        let candidates = self
            .repository
            .stale(PaymentStatus::Ready, now - ttl, self.batch)
            .await?;
        let mut expired = 0;
        for payment_id in candidates {
            let Some(payment) = self.repository.load(payment_id).await? else {
                continue;
            };
            let Ok((next, events)) =
                execute(Some(&payment), &PaymentCommand::Expire { expired_at: now })
            else {
                continue; // no longer READY
            };
            let causation = Causation {
                causation_id: Some(format!("expiry:{payment_id}")),
                ..Causation::default()
            };
            let commit = Commit {
                append: Some(Append {
                    expected_version: payment.version(),
                    events,
                    state: next.clone(),
                    occurred_at: now,
                }),
                outbox: vec![integration::payment_failed(
                    &self.topics,
                    &next,
                    &causation,
                    now,
                )],
                ..Commit::default()
            };
            match self.repository.commit(commit).await {
                Ok(()) => {
                    tracing::info!(%payment_id, order_id = %payment.order_id(), "payment expired");
                    expired += 1;
                }
                Err(StoreError::Conflict { .. }) => {} // changed meanwhile; next round re-checks
                Err(error) => return Err(error),
            }
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use payment_domain::{Currency, Money, OrderId, PaymentId, UserId};
    use rust_decimal::Decimal;

    use super::*;
    use crate::memory::MemoryRepository;

    async fn payment_created(
        repository: &MemoryRepository,
        order: &str,
        age: chrono::Duration,
    ) -> PaymentId {
        let (payment, events) = execute(
            None,
            &PaymentCommand::Create {
                payment_id: PaymentId::new(),
                order_id: OrderId::parse(order).unwrap(),
                user_id: UserId::parse("u").unwrap(),
                amount: Money::new(Decimal::from(1_000), Currency::Krw).unwrap(),
                created_at: Utc::now() - age,
            },
        )
        .unwrap();
        let id = payment.id();
        repository
            .commit(Commit {
                append: Some(Append {
                    expected_version: 0,
                    events,
                    state: payment,
                    occurred_at: Utc::now() - age,
                }),
                ..Commit::default()
            })
            .await
            .unwrap();
        id
    }

    fn topics() -> Topics {
        Topics {
            payment_created: "created".into(),
            payment_completed: "completed".into(),
            payment_failed: "failed".into(),
            payment_canceled: "canceled".into(),
        }
    }

    #[tokio::test]
    async fn ready_payments_past_the_ttl_expire_with_a_failed_event() {
        let repository = MemoryRepository::default();
        let old = payment_created(&repository, "order-old-1", chrono::Duration::hours(2)).await;
        let fresh = payment_created(&repository, "order-new-1", chrono::Duration::minutes(1)).await;
        let expiry = ExpirePayments::new(
            repository.clone(),
            topics(),
            Duration::from_secs(30 * 60),
            10,
        );

        assert_eq!(expiry.run_once().await.unwrap(), 1);
        assert_eq!(
            repository.load(old).await.unwrap().unwrap().status(),
            PaymentStatus::Expired
        );
        assert_eq!(
            repository.load(fresh).await.unwrap().unwrap().status(),
            PaymentStatus::Ready
        );
        let failed = repository.outbox().pop().unwrap();
        assert_eq!(failed.event_type, "PaymentFailedEvent");
        assert_eq!(failed.payload["data"]["code"], "PAYMENT_EXPIRED");
        assert_eq!(expiry.run_once().await.unwrap(), 0, "nothing twice");
    }

    #[tokio::test]
    async fn in_progress_payments_never_expire() {
        let repository = MemoryRepository::default();
        let id = payment_created(&repository, "order-busy-1", chrono::Duration::hours(2)).await;
        let payment = repository.load(id).await.unwrap().unwrap();
        let (started, events) = execute(
            Some(&payment),
            &PaymentCommand::StartConfirmation {
                payment_key: payment_domain::PaymentKey::parse("tgen_busy").unwrap(),
                amount: payment.amount(),
                transaction_id: payment_domain::TransactionId::new(),
            },
        )
        .unwrap();
        repository
            .commit(Commit {
                append: Some(Append {
                    expected_version: 1,
                    events,
                    state: started,
                    occurred_at: Utc::now() - chrono::Duration::hours(2),
                }),
                ..Commit::default()
            })
            .await
            .unwrap();
        let expiry = ExpirePayments::new(repository.clone(), topics(), Duration::from_secs(60), 10);
        assert_eq!(expiry.run_once().await.unwrap(), 0);
        assert_eq!(
            repository.load(id).await.unwrap().unwrap().status(),
            PaymentStatus::InProgress
        );
    }
}

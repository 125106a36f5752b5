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

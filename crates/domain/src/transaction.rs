//! One interaction with the payment gateway (an approval or a cancel).
//!
//! A transaction is recorded as `UNKNOWN` *before* the gateway is called and
//! settles exactly once, to `SUCCEEDED` or `FAILED`. Its id is the root of
//! the idempotency key sent to the gateway, so a retry after a crash or a
//! timeout replays the same request instead of moving money twice.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{PaymentId, TransactionId};
use crate::money::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransactionKind {
    Approval,
    Cancel,
}

impl TransactionKind {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Approval => "APPROVAL",
            Self::Cancel => "CANCEL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransactionStatus {
    Succeeded,
    Failed,
    /// Requested, outcome not known yet (in flight, timed out, or the PG
    /// answered ambiguously). Resolved only by asking the PG, never guessed.
    Unknown,
}

impl TransactionStatus {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for TransactionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A settled transaction cannot settle again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction {id} is already {status}")]
pub struct AlreadySettled {
    pub id: TransactionId,
    pub status: TransactionStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentTransaction {
    id: TransactionId,
    payment_id: PaymentId,
    kind: TransactionKind,
    amount: Money,
    status: TransactionStatus,
    idempotency_key: String,
    transaction_key: Option<String>,
    failure_code: Option<String>,
    requested_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl PaymentTransaction {
    /// A new request to the gateway, outcome unknown until settled.
    #[must_use]
    pub fn request(
        payment_id: PaymentId,
        kind: TransactionKind,
        amount: Money,
        requested_at: DateTime<Utc>,
    ) -> Self {
        Self::request_as(TransactionId::new(), payment_id, kind, amount, requested_at)
    }

    /// The same, with an id chosen by the caller (derived from a client's
    /// idempotency key, so a repeated request finds its transaction again).
    #[must_use]
    pub fn request_as(
        id: TransactionId,
        payment_id: PaymentId,
        kind: TransactionKind,
        amount: Money,
        requested_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            payment_id,
            kind,
            amount,
            status: TransactionStatus::Unknown,
            idempotency_key: id.to_string(),
            transaction_key: None,
            failure_code: None,
            requested_at,
            completed_at: None,
        }
    }

    /// Rebuilds a stored transaction (the storage adapter's door in).
    #[allow(clippy::too_many_arguments)]
    #[must_use]
    pub const fn restore(
        id: TransactionId,
        payment_id: PaymentId,
        kind: TransactionKind,
        amount: Money,
        status: TransactionStatus,
        idempotency_key: String,
        transaction_key: Option<String>,
        failure_code: Option<String>,
        requested_at: DateTime<Utc>,
        completed_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            id,
            payment_id,
            kind,
            amount,
            status,
            idempotency_key,
            transaction_key,
            failure_code,
            requested_at,
            completed_at,
        }
    }

    /// The gateway said yes.
    ///
    /// # Errors
    /// [`AlreadySettled`] unless the transaction is still `UNKNOWN`.
    pub fn succeed(
        &mut self,
        transaction_key: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<(), AlreadySettled> {
        self.settle(TransactionStatus::Succeeded, at)?;
        self.transaction_key = transaction_key;
        Ok(())
    }

    /// The gateway said no, definitively, with this code.
    ///
    /// # Errors
    /// [`AlreadySettled`] unless the transaction is still `UNKNOWN`.
    pub fn fail(&mut self, code: String, at: DateTime<Utc>) -> Result<(), AlreadySettled> {
        self.settle(TransactionStatus::Failed, at)?;
        self.failure_code = Some(code);
        Ok(())
    }

    fn settle(
        &mut self,
        status: TransactionStatus,
        at: DateTime<Utc>,
    ) -> Result<(), AlreadySettled> {
        if self.status != TransactionStatus::Unknown {
            return Err(AlreadySettled {
                id: self.id,
                status: self.status,
            });
        }
        self.status = status;
        self.completed_at = Some(at);
        Ok(())
    }

    #[must_use]
    pub const fn id(&self) -> TransactionId {
        self.id
    }
    #[must_use]
    pub const fn payment_id(&self) -> PaymentId {
        self.payment_id
    }
    #[must_use]
    pub const fn kind(&self) -> TransactionKind {
        self.kind
    }
    #[must_use]
    pub const fn amount(&self) -> Money {
        self.amount
    }
    #[must_use]
    pub const fn status(&self) -> TransactionStatus {
        self.status
    }
    /// Sent as the gateway's `Idempotency-Key` on every attempt.
    #[must_use]
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
    #[must_use]
    pub fn transaction_key(&self) -> Option<&str> {
        self.transaction_key.as_deref()
    }
    #[must_use]
    pub fn failure_code(&self) -> Option<&str> {
        self.failure_code.as_deref()
    }
    #[must_use]
    pub const fn requested_at(&self) -> DateTime<Utc> {
        self.requested_at
    }
    #[must_use]
    pub const fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.completed_at
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;
    use crate::money::Currency;

    fn approval() -> PaymentTransaction {
        let amount = Money::new(dec!(15000), Currency::Krw).unwrap();
        PaymentTransaction::request(
            PaymentId::new(),
            TransactionKind::Approval,
            amount,
            Utc::now(),
        )
    }

    #[test]
    fn a_request_starts_unknown_with_a_key_derived_from_its_id() {
        let tx = approval();
        assert_eq!(tx.status(), TransactionStatus::Unknown);
        assert_eq!(tx.idempotency_key(), tx.id().to_string());
        assert_eq!(tx.completed_at(), None);
    }

    #[test]
    fn it_settles_once_to_succeeded() {
        let mut tx = approval();
        tx.succeed(Some("txk_1".into()), Utc::now()).unwrap();
        assert_eq!(tx.status(), TransactionStatus::Succeeded);
        assert_eq!(tx.transaction_key(), Some("txk_1"));
        assert!(tx.completed_at().is_some());
        assert_eq!(
            tx.fail("REJECT_CARD_PAYMENT".into(), Utc::now()),
            Err(AlreadySettled {
                id: tx.id(),
                status: TransactionStatus::Succeeded
            })
        );
    }

    #[test]
    fn it_settles_once_to_failed() {
        let mut tx = approval();
        tx.fail("REJECT_CARD_PAYMENT".into(), Utc::now()).unwrap();
        assert_eq!(tx.status(), TransactionStatus::Failed);
        assert_eq!(tx.failure_code(), Some("REJECT_CARD_PAYMENT"));
        assert!(tx.succeed(None, Utc::now()).is_err());
    }
}

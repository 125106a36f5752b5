//! The payment gateway port: what the use cases ask of Toss (or a fake), in
//! our words. Only the adapter knows Toss's wire format and error codes; it
//! answers with one of five outcome classes, never with a guess.

use std::future::Future;

use chrono::{DateTime, Utc};
use payment_domain::{Failure, Money, OrderId, PaymentKey};

/// A confirm (approval) request. `idempotency_key` derives from our
/// APPROVAL transaction: every retry of the same transaction carries it, so
/// the gateway approves at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmRequest {
    pub payment_key: PaymentKey,
    pub order_id: OrderId,
    pub amount: Money,
    pub idempotency_key: String,
}

/// A cancel request; `idempotency_key` derives from our CANCEL
/// transaction, so a retry refunds at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    pub payment_key: PaymentKey,
    pub amount: Money,
    pub reason: String,
    pub idempotency_key: String,
}

/// What the gateway said.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayOutcome {
    /// Done: the payment as the gateway now has it.
    Succeeded(GatewayPayment),
    /// A definitive no: nothing happened, and retrying will not change it.
    Declined(Failure),
    /// A no about the payment key or its session itself (Toss's
    /// `NOT_FOUND_PAYMENT`, `NOT_FOUND_PAYMENT_SESSION`, …). Nothing
    /// happened; the key may be one the gateway never issued for this order
    /// (anyone can send one), so it ends a payment only once a lookup shows
    /// the key is this order's.
    KeyRefused(Failure),
    /// Ours: the gateway refused our credentials or configuration
    /// (`UNAUTHORIZED_KEY`, `INVALID_API_KEY`, …) and did nothing. Never a
    /// decline of the customer's payment.
    Misconfigured(Failure),
    /// Nobody knows (timeout, 5xx, connection reset, "already processed"…):
    /// the truth must be looked up, never guessed.
    Unknown(String),
}

/// A payment's state at the gateway (mapped from Toss's Payment object).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayPayment {
    pub payment_key: PaymentKey,
    pub order_id: OrderId,
    pub status: GatewayStatus,
    pub total_amount: Money,
    pub balance_amount: Money,
    pub method: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub last_transaction_key: Option<String>,
    pub failure: Option<Failure>,
    /// Every cancel of the payment, oldest first.
    pub cancels: Vec<GatewayCancel>,
}

/// One cancel at the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayCancel {
    pub amount: Money,
    pub transaction_key: Option<String>,
}

/// Toss's payment statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayStatus {
    Ready,
    InProgress,
    WaitingForDeposit,
    Done,
    PartialCanceled,
    Canceled,
    Aborted,
    Expired,
}

/// A lookup that could not tell (gateway unreachable, 5xx…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment gateway lookup failed: {0}")]
pub struct LookupFailed(pub String);

/// The payment gateway.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Asks the gateway to approve a payment the customer authorised.
    fn confirm(&self, request: &ConfirmRequest) -> impl Future<Output = GatewayOutcome> + Send;

    /// Asks the gateway to give `amount` back to the customer.
    fn cancel(&self, request: &CancelRequest) -> impl Future<Output = GatewayOutcome> + Send;

    /// The gateway's view of an order's payment; `Ok(None)` when it has none.
    ///
    /// # Errors
    /// [`LookupFailed`] when the gateway could not answer.
    fn lookup_by_order(
        &self,
        order_id: &OrderId,
    ) -> impl Future<Output = Result<Option<GatewayPayment>, LookupFailed>> + Send;

    /// The gateway's view of a payment by its key; `Ok(None)` when unknown.
    ///
    /// # Errors
    /// [`LookupFailed`] when the gateway could not answer.
    fn lookup(
        &self,
        payment_key: &PaymentKey,
    ) -> impl Future<Output = Result<Option<GatewayPayment>, LookupFailed>> + Send;
}

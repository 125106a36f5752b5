//! Use cases of the payment service and the ports they stand on.
//!
//! This crate decides *what* happens when an order is placed, a payment is
//! confirmed or canceled; the adapters in `payment-infra` and `payment-api`
//! decide *how* it reaches MariaDB, Kafka, Toss and HTTP.

pub mod cancel;
pub mod confirm;
pub mod create_payment;
pub mod expire;
pub mod gateway;
pub mod integration;
pub mod ports;
pub mod reconcile;
pub mod settle;

#[cfg(test)]
mod memory;

pub use cancel::{Cancel, CancelError, CancelPayment, CancelResolution, Canceled};
pub use confirm::{AbortError, AbortFromWidget, Confirm, ConfirmError, ConfirmPayment, Confirmed};
pub use create_payment::{CreatePayment, CreatePaymentError, Created, OrderPlaced};
pub use expire::ExpirePayments;
pub use gateway::{
    CancelRequest, ConfirmRequest, GatewayCancel, GatewayOutcome, GatewayPayment, GatewayStatus,
    LookupFailed, PaymentGateway,
};
pub use integration::{Causation, Topics};
pub use ports::{
    Append, Commit, HealthProbe, IdempotencyKeys, InboxEntry, KeyClaim, OutboxMessage,
    PaymentRepository, RecordedEvent, StoreError,
};
pub use reconcile::{GatewayNotice, Noticed, Reconciled, Reconciler, ReconcilerSettings};
pub use settle::{Resolution, SettleError};

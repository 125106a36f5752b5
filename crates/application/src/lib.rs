//! Use cases of the payment service and the ports they stand on.
//!
//! This crate decides *what* happens when an order is placed, a payment is
//! confirmed or canceled; the adapters in `payment-infra` and `payment-api`
//! decide *how* it reaches MariaDB, Kafka, Toss and HTTP.

pub mod backoff;
pub mod cancel;
pub mod confirm;
pub mod create_payment;
pub mod error;
pub mod expire;
pub mod gateway;
pub mod integration;
pub mod ports;
pub mod reconcile;
mod runner;
pub mod saga;
pub mod settle;
pub mod trace;
pub mod webhook;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod testing;

pub use backoff::Backoff;
pub use cancel::{
    carry_out_waiting_cancels, resolve_cancel, Cancel, CancelError, CancelPayment, CancelResolved,
    CancelSettings, Canceled, Look, Requester,
};
pub use confirm::{
    AttemptError, Confirm, ConfirmError, ConfirmPayment, Confirmed, RecordFailedAttempt,
};
pub use create_payment::{CreatePayment, CreatePaymentError, Created, OrderPlaced};
pub use error::{Classify, Contended};
pub use expire::ExpirePayments;
pub use gateway::{
    CancelRequest, ConfirmRequest, GatewayCancel, GatewayOutcome, GatewayPayment, GatewayStatus,
    LookupFailed, PaymentGateway,
};
pub use integration::{Causation, Topics};
pub use ports::{
    Append, Commit, Due, HealthProbe, IdempotencyKeys, InboxEntry, KeyClaim, OutboxMessage,
    PaymentQueries, PaymentRef, PaymentRepository, RecordedEvent, RetrySchedule, Scheduled,
    Snapshot, Stale, StoreError,
};
pub use reconcile::{Reconciled, Reconciler, ReconcilerSettings};
pub use runner::Trigger;
pub use saga::{
    booking_order_id, Booking, Bookings, PaymentRequested, Requested, SagaError, SagaPayments,
    SagaTopics,
};
pub use settle::{CancelResolution, Resolution, SettleError};
pub use webhook::{GatewayNotice, NoticeError, Noticed};

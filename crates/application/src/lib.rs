//! Use cases of the payment service and the ports they stand on.
//!
//! This crate decides *what* happens when an order is placed, a payment is
//! confirmed or canceled; the adapters in `payment-infra` and `payment-api`
//! decide *how* it reaches MariaDB, Kafka, Toss and HTTP.

pub mod create_payment;
pub mod integration;
pub mod ports;

#[cfg(test)]
mod memory;

pub use create_payment::{CreatePayment, CreatePaymentError, Created, OrderPlaced};
pub use integration::{Causation, Topics};
pub use ports::{
    Append, Commit, HealthProbe, InboxEntry, OutboxMessage, PaymentRepository, RecordedEvent,
    StoreError,
};

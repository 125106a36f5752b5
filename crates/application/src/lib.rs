//! Use cases of the payment service and the ports they stand on.
//!
//! This crate decides *what* happens when an order is placed, a payment is
//! confirmed or canceled; the adapters in `payment-infra` and `payment-api`
//! decide *how* it reaches MariaDB, Kafka, Toss and HTTP.

pub mod ports;

pub use ports::{
    Append, Commit, HealthProbe, InboxEntry, OutboxMessage, PaymentRepository, RecordedEvent,
    StoreError,
};

//! The payment domain: money, identifiers, the event-sourced `Payment`
//! aggregate and the gateway interactions it records. Pure rules, no I/O:
//! nothing here knows about databases, brokers, HTTP or Toss's wire format.

pub mod ids;
pub mod money;
pub mod payment;
pub mod transaction;

pub use ids::{IdError, OrderId, PaymentId, PaymentKey, TransactionId, UserId};
pub use money::{amount_from_json, parse_amount, Currency, Money, MoneyError};
pub use payment::{
    apply, decide, execute, Failure, Payment, PaymentCommand, PaymentError, PaymentEvent,
    PaymentStatus, PendingCancel, ReplayError, NOT_APPROVED, ORDER_CANCELED,
};
pub use transaction::{AlreadySettled, PaymentTransaction, TransactionKind, TransactionStatus};

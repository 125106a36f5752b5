//! Use case: an order was placed → exactly one READY payment.
//!
//! Runs twice (redelivery)? The inbox record, written in the same transaction
//! as the payment, makes the second run a no-op. Runs concurrently with
//! another message for the same order? `UNIQUE(order_id)` lets one win; the
//! other re-checks and finds the payment. Dies half-way? Nothing was
//! committed, the offset was not stored, the message comes back.

use payment_domain::{Money, OrderId, PaymentCommand, PaymentError, PaymentId, UserId};

use crate::error::{Classify, Contended};
use crate::integration::{self, Causation, Topics};
use crate::ports::{InboxEntry, PaymentRef, PaymentRepository, StoreError};
use crate::runner::{run, Change, Decision, Ran, Trigger};

/// An `OrderPlacedEvent`, parsed and valid.
#[derive(Debug, Clone)]
pub struct OrderPlaced {
    /// The event id (deduplication key).
    pub message_id: String,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub amount: Money,
    /// The flow this order belongs to (the event's `correlationid`).
    pub correlation_id: Option<String>,
    /// W3C trace context of the message.
    pub traceparent: Option<String>,
}

impl OrderPlaced {
    fn causation(&self) -> Causation {
        Causation {
            causation_id: Some(self.message_id.clone()),
            correlation_id: self.correlation_id.clone(),
            traceparent: self.traceparent.clone(),
        }
    }
}

/// What handling the event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new payment, announced by `PaymentCreatedEvent`.
    Created(PaymentId),
    /// This very message was handled before: nothing new.
    DuplicateMessage,
    /// Another message already created this order's payment with the same
    /// amount: nothing new.
    AlreadyExists(PaymentId),
}

#[derive(Debug, thiserror::Error)]
pub enum CreatePaymentError {
    /// The order already has a payment of another amount: refusing to guess
    /// which one is right.
    #[error("order {order_id} already has a payment of {existing}, refusing {requested}")]
    AmountConflict {
        order_id: OrderId,
        existing: Money,
        requested: Money,
    },
    /// The domain refuses the payment (e.g. a zero amount).
    #[error(transparent)]
    Refused(#[from] PaymentError),
    /// Concurrent creations kept racing; nothing was written. Retry later.
    #[error(transparent)]
    Contended(#[from] Contended),
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for CreatePaymentError {
    fn is_permanent(&self) -> bool {
        match self {
            Self::AmountConflict { .. } | Self::Refused(_) => true,
            Self::Contended(error) => error.is_permanent(),
            Self::Store(error) => error.is_permanent(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CreatePayment<R> {
    repository: R,
    topics: Topics,
    /// The inbox name of the messages this use case consumes.
    consumer: String,
}

impl<R: PaymentRepository> CreatePayment<R> {
    pub const fn new(repository: R, topics: Topics, consumer: String) -> Self {
        Self {
            repository,
            topics,
            consumer,
        }
    }

    /// Creates the order's payment unless this message or this order was
    /// already handled.
    ///
    /// # Errors
    /// [`CreatePaymentError`]; [`Classify::is_permanent`] tells whether a
    /// retry can help.
    pub async fn handle(&self, order: OrderPlaced) -> Result<Created, CreatePaymentError> {
        let trigger = Trigger::Message(InboxEntry {
            consumer: self.consumer.clone(),
            message_id: order.message_id.clone(),
        });
        let causation = order.causation();
        let which = PaymentRef::Order(order.order_id.clone());
        let ran = run(
            &self.repository,
            &which,
            &trigger,
            |loaded, now| -> Result<_, CreatePaymentError> {
                if let Some(existing) = loaded.map(|s| &s.payment) {
                    if existing.amount() != order.amount {
                        return Err(CreatePaymentError::AmountConflict {
                            order_id: order.order_id.clone(),
                            existing: existing.amount(),
                            requested: order.amount,
                        });
                    }
                    return Ok(Decision::Acknowledge(existing.id()));
                }
                let change = Change::decide(
                    None,
                    &PaymentCommand::Create {
                        payment_id: PaymentId::new(),
                        order_id: order.order_id.clone(),
                        user_id: order.user_id.clone(),
                        amount: order.amount,
                        created_at: now,
                    },
                )?;
                let created =
                    integration::payment_created(&self.topics, change.state(), &causation, now);
                Ok(Decision::Record(change.announce(created), ()))
            },
        )
        .await;
        match ran {
            Ok(Ran::Recorded(payment, ())) => Ok(Created::Created(payment.id())),
            Ok(Ran::Answered(existing)) => Ok(Created::AlreadyExists(existing)),
            Err(CreatePaymentError::Store(StoreError::AlreadyProcessed(_))) => {
                Ok(Created::DuplicateMessage)
            }
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use payment_domain::{Currency, PaymentStatus};
    use rust_decimal::Decimal;

    use super::*;
    use crate::memory::MemoryRepository;

    fn use_case(repository: &MemoryRepository) -> CreatePayment<MemoryRepository> {
        CreatePayment::new(
            repository.clone(),
            Topics {
                payment_created: "payment.created".into(),
                payment_completed: "payment.completed".into(),
                payment_failed: "payment.failed".into(),
                payment_canceled: "payment.canceled".into(),
                payment_cancel_failed: "payment.cancel.failed".into(),
            },
            "order.placed".into(),
        )
    }

    fn order(message_id: &str, order_id: &str, won: i64) -> OrderPlaced {
        OrderPlaced {
            message_id: message_id.into(),
            order_id: OrderId::parse(order_id).unwrap(),
            user_id: UserId::parse("user-1").unwrap(),
            amount: Money::new(Decimal::from(won), Currency::Krw).unwrap(),
            correlation_id: None,
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn a_placed_order_becomes_a_ready_payment_announced_once() {
        let repository = MemoryRepository::default();
        let outcome = use_case(&repository)
            .handle(order("m1", "order-001", 15_000))
            .await
            .unwrap();
        let Created::Created(id) = outcome else {
            panic!("{outcome:?}")
        };
        let payments = repository.payments();
        assert_eq!(payments.len(), 1);
        assert_eq!(payments[0].id(), id);
        assert_eq!(payments[0].status(), PaymentStatus::Ready);
        let outbox = repository.outbox();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].event_type, "PaymentCreatedEvent");
        assert_eq!(outbox[0].payload["causationid"], "m1");
    }

    #[tokio::test]
    async fn the_same_message_twice_changes_nothing() {
        let repository = MemoryRepository::default();
        let create = use_case(&repository);
        create
            .handle(order("m1", "order-001", 15_000))
            .await
            .unwrap();
        let again = create
            .handle(order("m1", "order-001", 15_000))
            .await
            .unwrap();
        assert_eq!(again, Created::DuplicateMessage);
        assert_eq!(repository.payments().len(), 1);
        assert_eq!(repository.outbox().len(), 1);
    }

    #[tokio::test]
    async fn another_message_for_the_same_order_and_amount_changes_nothing() {
        let repository = MemoryRepository::default();
        let create = use_case(&repository);
        let Created::Created(id) = create
            .handle(order("m1", "order-001", 15_000))
            .await
            .unwrap()
        else {
            panic!("first message must create")
        };
        let other = create
            .handle(order("m2", "order-001", 15_000))
            .await
            .unwrap();
        assert_eq!(other, Created::AlreadyExists(id));
        assert_eq!(repository.payments().len(), 1);
        assert_eq!(repository.outbox().len(), 1);
    }

    #[tokio::test]
    async fn the_same_order_with_another_amount_is_refused_for_good() {
        let repository = MemoryRepository::default();
        let create = use_case(&repository);
        create
            .handle(order("m1", "order-001", 15_000))
            .await
            .unwrap();
        let error = create
            .handle(order("m2", "order-001", 9_000))
            .await
            .unwrap_err();
        assert!(
            matches!(error, CreatePaymentError::AmountConflict { .. }),
            "{error:?}"
        );
        assert!(error.is_permanent());
        assert_eq!(
            repository.payments()[0].amount().amount(),
            Decimal::from(15_000)
        );
    }

    #[tokio::test]
    async fn a_zero_amount_order_is_refused_for_good() {
        let repository = MemoryRepository::default();
        let error = use_case(&repository)
            .handle(order("m1", "order-001", 0))
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            CreatePaymentError::Refused(PaymentError::ZeroAmount)
        ));
        assert!(error.is_permanent());
        assert!(repository.payments().is_empty());
    }
}

//! Use case: an order was placed → exactly one READY payment.
//!
//! Runs twice (redelivery)? The inbox record, written in the same transaction
//! as the payment, makes the second run a no-op. Runs concurrently with
//! another message for the same order? `UNIQUE(order_id)` lets one win; the
//! other re-checks and finds the payment. Dies half-way? Nothing was
//! committed, the offset was not stored, the message comes back.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use payment_domain::{Money, OrderId, PaymentCommand, PaymentError, PaymentId, UserId};

use crate::error::{Classify, Contended};
use crate::integration::{self, Causation, Topics};
use crate::ports::{InboxEntry, PaymentRef, PaymentRepository, Snapshot, StoreError};
use crate::runner::{run, run_all, Change, Decision, Ran, Trigger};

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
        let (which, trigger) = self.target(&order);
        let ran = run(&self.repository, &which, &trigger, |loaded, now| {
            self.decide(&order, loaded, now)
        })
        .await;
        match ran {
            Ok(ran) => Ok(created(ran)),
            Err(CreatePaymentError::Store(StoreError::AlreadyProcessed(_))) => {
                Ok(Created::DuplicateMessage)
            }
            Err(error) => Err(error),
        }
    }

    /// Handles `orders` (in the order they came) with as few commits as
    /// [`run_all`] allows: each run of messages about distinct orders is
    /// decided message by message and committed in ONE transaction, inbox
    /// records included. Answers what each message of the leading runs that
    /// were committed did; the messages after them — from the first run that
    /// could not be committed together (a message seen before, an order
    /// racing, a refused order, the store failing) — were not touched and
    /// are for [`CreatePayment::handle`], one by one.
    pub async fn handle_all(&self, orders: &[OrderPlaced]) -> Vec<Created> {
        let mut done = Vec::with_capacity(orders.len());
        let mut rest = orders;
        while !rest.is_empty() {
            let distinct = distinct_orders(rest);
            let (run, after) = rest.split_at(distinct);
            let committed = run_all(
                &self.repository,
                run,
                |order| self.target(order),
                |order, loaded, now| self.decide(order, loaded, now),
            )
            .await;
            let Some(ran) = committed else {
                break;
            };
            done.extend(ran.into_iter().map(created));
            rest = after;
        }
        done
    }

    fn target(&self, order: &OrderPlaced) -> (PaymentRef, Trigger) {
        let trigger = Trigger::Message(InboxEntry {
            consumer: self.consumer.clone(),
            message_id: order.message_id.clone(),
        });
        (PaymentRef::Order(order.order_id.clone()), trigger)
    }

    /// A placed order on its payment as loaded: the existing payment
    /// acknowledged (the same amount) or refused (another), else a new one.
    fn decide(
        &self,
        order: &OrderPlaced,
        loaded: Option<&Snapshot>,
        now: DateTime<Utc>,
    ) -> Result<Decision<PaymentId, ()>, CreatePaymentError> {
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
            integration::payment_created(&self.topics, change.state(), &order.causation(), now);
        Ok(Decision::Record(change.announce(created), ()))
    }
}

fn created(ran: Ran<PaymentId, ()>) -> Created {
    match ran {
        Ran::Recorded(payment, ()) => Created::Created(payment.id()),
        Ran::Answered(existing) => Created::AlreadyExists(existing),
    }
}

/// How many of `orders`, from the first, are about distinct orders: what
/// one batch may decide on states read before any of it is written.
fn distinct_orders(orders: &[OrderPlaced]) -> usize {
    let mut seen = HashSet::with_capacity(orders.len());
    orders
        .iter()
        .take_while(|order| seen.insert(&order.order_id))
        .count()
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
    async fn a_batch_commits_its_messages_together_in_order_repeats_after_their_order() {
        let repository = MemoryRepository::default();
        let create = use_case(&repository);
        let batch = [
            order("m1", "order-001", 15_000),
            order("m2", "order-002", 9_000),
            order("m3", "order-001", 15_000),
            order("m4", "order-003", 1_000),
        ];
        let done = create.handle_all(&batch).await;
        assert_eq!(done.len(), 4, "{done:?}");
        let ids: Vec<_> = done
            .iter()
            .map(|outcome| match outcome {
                Created::Created(id) | Created::AlreadyExists(id) => *id,
                Created::DuplicateMessage => panic!("{done:?}"),
            })
            .collect();
        assert!(matches!(done[0], Created::Created(_)));
        assert!(matches!(done[1], Created::Created(_)));
        assert_eq!(done[2], Created::AlreadyExists(ids[0]));
        assert!(matches!(done[3], Created::Created(_)));
        assert_eq!(repository.payments().len(), 3);
        assert_eq!(repository.outbox().len(), 3);
        for message in &batch {
            assert!(repository.processed(&InboxEntry {
                consumer: "order.placed".into(),
                message_id: message.message_id.clone(),
            }));
        }
        let again = create.handle(batch[1].clone()).await.unwrap();
        assert_eq!(again, Created::DuplicateMessage);
    }

    #[tokio::test]
    async fn a_batch_that_cannot_commit_together_writes_nothing_and_is_left_to_one_by_one() {
        let repository = MemoryRepository::default();
        let create = use_case(&repository);
        create
            .handle(order("m1", "order-001", 15_000))
            .await
            .unwrap();
        for batch in [
            // a message seen before
            vec![
                order("m2", "order-002", 9_000),
                order("m1", "order-001", 15_000),
            ],
            // a refused order
            vec![order("m3", "order-003", 9_000), order("m4", "order-004", 0)],
            // an order whose payment has another amount
            vec![order("m5", "order-005", 9_000), order("m6", "order-001", 1)],
        ] {
            assert_eq!(create.handle_all(&batch).await, vec![], "{batch:?}");
            assert_eq!(repository.payments().len(), 1, "{batch:?}");
            assert_eq!(repository.outbox().len(), 1, "{batch:?}");
        }
        // What ran before the run that could not commit stays committed.
        let batch = [
            order("m7", "order-007", 1_000),
            order("m8", "order-007", 1_000),
            order("m9", "order-009", 0),
        ];
        let done = create.handle_all(&batch).await;
        assert!(matches!(done[..], [Created::Created(_)]), "{done:?}");
        assert_eq!(repository.payments().len(), 2);
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

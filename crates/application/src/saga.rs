//! Use case: the booking saga asks for a payment (`saga.request_payment`)
//! and is answered by events (`payment.initiated`, then `payment.completed`
//! or `payment.failed`).
//!
//! 1. The booking is recorded ([`Bookings::record`]; the first request for a
//!    booking wins) and its payment is created and its APPROVAL started in
//!    ONE commit with `payment.initiated` and the request's inbox record.
//!    The payment's order id derives from the booking id
//!    ([`booking_order_id`]), so `UNIQUE(order_id)` allows one payment per
//!    booking whichever message asks.
//! 2. The processor (the [`PaymentGateway`] port) is called with the
//!    transaction's idempotency key; its answer settles the payment through
//!    [`settle_approval`], as a confirm would.
//! 3. A settled booking payment is answered once ([`Bookings::answer`]
//!    writes the reply to the outbox and marks the booking answered in one
//!    transaction) — by this use case at once, or by
//!    [`SagaPayments::answer_settled`] when the reconciler settled it.
//!
//! Crash safety: the request's offset is stored only after all of this, so
//! a crash at any point redelivers the request. A redelivered (or repeated)
//! request finds the payment IN_PROGRESS and resumes: it asks the processor
//! what it has for the order BEFORE calling it, so a call that was made
//! before the crash is never made again.

use payment_domain::{
    Failure, Money, OrderId, Payment, PaymentCommand, PaymentError, PaymentId, PaymentKey,
    PaymentStatus, PaymentTransaction, TransactionKind, TransactionStatus, UserId,
};
use serde_json::json;
use std::future::Future;
use uuid::Uuid;

use crate::error::{Classify, Contended};
use crate::gateway::{ConfirmRequest, GatewayOutcome, LookupFailed, PaymentGateway};
use crate::integration::{amount_json, outbox_message, Causation, Topics};
use crate::ports::{InboxEntry, OutboxMessage, PaymentRef, PaymentRepository, StoreError};
use crate::runner::{run, Change, Decision, Ran, Trigger};
use crate::settle::{settle_approval, Resolution, SettleError};

/// The namespace of [`booking_order_id`]'s UUIDs (fixed forever: changing it
/// would give a booking a second payment).
const BOOKING_NAMESPACE: Uuid = Uuid::from_u128(0x6b2f_1f7e_5c2a_4d3b_9a41_0c8e_d1f0_b007);

/// The order id of a booking's payment: `bk-` and the UUID v5 of the booking
/// id (35 characters of `[a-z0-9-]`, whatever the booking id looks like), so
/// every request for one booking names the same payment.
#[must_use]
pub fn booking_order_id(booking_id: &str) -> OrderId {
    let uuid = Uuid::new_v5(&BOOKING_NAMESPACE, booking_id.as_bytes());
    // 35 characters of [a-z0-9-]: always a valid order id.
    OrderId::parse(format!("bk-{}", uuid.simple())).unwrap_or_else(|_| unreachable!())
}

/// The processor's key of a booking payment (there is no widget to issue
/// one). `hint` is the request's `processoroutcome`, passed through to the
/// processor in the only field it sees; the fake gateway reads it.
fn processor_key(payment_id: PaymentId, hint: Option<&str>) -> PaymentKey {
    let id = payment_id.as_uuid().simple();
    let key = hint.map_or_else(|| format!("saga_{id}"), |hint| format!("saga_{hint}_{id}"));
    PaymentKey::parse(key).unwrap_or_else(|_| unreachable!())
}

/// A `RequestPayment`, parsed and valid.
#[derive(Debug, Clone)]
pub struct PaymentRequested {
    /// The event id (deduplication key).
    pub message_id: String,
    /// The saga instance: the correlation id of every reply.
    pub saga_id: String,
    pub booking_id: String,
    pub user_id: Option<UserId>,
    pub amount: Money,
    /// An outcome the request asks the (fake) processor for, `[a-z]{1,16}`.
    pub processor_hint: Option<String>,
    pub traceparent: Option<String>,
}

/// A booking the saga asked us to pay for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub booking_id: String,
    pub payment_id: PaymentId,
    pub order_id: OrderId,
    pub saga_id: String,
    /// The id of the first request for it (the replies' causation).
    pub request_id: String,
    pub traceparent: Option<String>,
}

impl Booking {
    fn causation(&self) -> Causation {
        Causation {
            causation_id: Some(self.request_id.clone()),
            correlation_id: Some(self.saga_id.clone()),
            traceparent: self.traceparent.clone(),
        }
    }
}

/// Where the saga's replies go.
#[derive(Debug, Clone)]
pub struct SagaTopics {
    pub initiated: String,
    pub completed: String,
    pub failed: String,
}

/// The saga's bookings.
pub trait Bookings: Send + Sync + 'static {
    /// Records `booking` unless its booking id is known; answers the
    /// booking as stored (the first request's).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] or [`StoreError::Unexpected`].
    fn record(&self, booking: &Booking)
        -> impl Future<Output = Result<Booking, StoreError>> + Send;

    /// Up to `limit` bookings whose payment is settled but not answered yet,
    /// oldest first.
    ///
    /// # Errors
    /// As [`Bookings::record`].
    fn unanswered(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Booking>, StoreError>> + Send;

    /// Writes `reply` to the outbox and marks the booking answered, in one
    /// transaction; `false` (nothing written) when it was answered already.
    ///
    /// # Errors
    /// As [`Bookings::record`].
    fn answer(
        &self,
        booking_id: &str,
        reply: &OutboxMessage,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// What handling a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The payment is settled with this status and the saga answered.
    Settled(PaymentId, PaymentStatus),
    /// The processor's answer is not known yet; the reconciler will settle
    /// it, and [`SagaPayments::answer_settled`] answer the saga.
    Pending(PaymentId),
    /// The booking's payment was settled before: nothing new.
    AlreadySettled(PaymentId),
}

#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// The booking already has a payment of another amount.
    #[error("booking {booking_id} already has a payment of {existing}, refusing {requested}")]
    AmountConflict {
        booking_id: String,
        existing: Money,
        requested: Money,
    },
    /// The domain refuses the payment (e.g. a zero amount).
    #[error(transparent)]
    Refused(#[from] PaymentError),
    /// The processor refused our credentials or configuration: it did
    /// nothing; the request is retried.
    #[error("the processor refused our configuration: {} {}", .0.code, .0.message)]
    Misconfigured(Failure),
    /// Resuming needs the processor's view first, and it could not answer.
    #[error(transparent)]
    Lookup(#[from] LookupFailed),
    #[error(transparent)]
    Settle(#[from] SettleError),
    #[error(transparent)]
    Contended(#[from] Contended),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for SagaError {
    fn is_permanent(&self) -> bool {
        match self {
            Self::AmountConflict { .. } | Self::Refused(_) => true,
            Self::Misconfigured(_) | Self::Lookup(_) => false,
            Self::Settle(error) => error.is_permanent(),
            Self::Contended(error) => error.is_permanent(),
            Self::Store(error) => error.is_permanent(),
        }
    }
}

/// The booking saga's participant.
#[derive(Debug, Clone)]
pub struct SagaPayments<R, B, G> {
    repository: R,
    bookings: B,
    processor: G,
    topics: Topics,
    saga_topics: SagaTopics,
    /// The inbox name of the requests.
    consumer: String,
}

impl<R: PaymentRepository, B: Bookings, G: PaymentGateway> SagaPayments<R, B, G> {
    pub const fn new(
        repository: R,
        bookings: B,
        processor: G,
        topics: Topics,
        saga_topics: SagaTopics,
        consumer: String,
    ) -> Self {
        Self {
            repository,
            bookings,
            processor,
            topics,
            saga_topics,
            consumer,
        }
    }

    /// Initiates, executes and answers the booking's payment; a repeated
    /// request resumes where the first one stopped.
    ///
    /// # Errors
    /// [`SagaError`]; [`Classify::is_permanent`] tells whether a retry helps.
    pub async fn handle(&self, request: PaymentRequested) -> Result<Requested, SagaError> {
        let order_id = booking_order_id(&request.booking_id);
        let booking = self
            .bookings
            .record(&Booking {
                booking_id: request.booking_id.clone(),
                payment_id: PaymentId::new(),
                order_id: order_id.clone(),
                saga_id: request.saga_id.clone(),
                request_id: request.message_id.clone(),
                traceparent: request.traceparent.clone(),
            })
            .await?;
        let trigger = Trigger::Message(InboxEntry {
            consumer: self.consumer.clone(),
            message_id: request.message_id.clone(),
        });
        let causation = Causation {
            causation_id: Some(request.message_id.clone()),
            correlation_id: Some(request.saga_id.clone()),
            traceparent: request.traceparent.clone(),
        };
        let ran = run(
            &self.repository,
            &PaymentRef::Order(order_id),
            &trigger,
            |loaded, now| -> Result<_, SagaError> {
                if let Some(existing) = loaded.map(|s| &s.payment) {
                    if existing.amount() != request.amount {
                        return Err(SagaError::AmountConflict {
                            booking_id: request.booking_id.clone(),
                            existing: existing.amount(),
                            requested: request.amount,
                        });
                    }
                    return Ok(Decision::Acknowledge(()));
                }
                let transaction = PaymentTransaction::request(
                    booking.payment_id,
                    TransactionKind::Approval,
                    request.amount,
                    now,
                );
                let change = Change::decide(
                    None,
                    &PaymentCommand::Create {
                        payment_id: booking.payment_id,
                        order_id: booking.order_id.clone(),
                        user_id: request.user_id.clone().unwrap_or_else(|| {
                            UserId::parse("saga").unwrap_or_else(|_| unreachable!())
                        }),
                        amount: request.amount,
                        created_at: now,
                    },
                )?
                .then(&PaymentCommand::StartConfirmation {
                    payment_key: processor_key(
                        booking.payment_id,
                        request.processor_hint.as_deref(),
                    ),
                    amount: request.amount,
                    transaction_id: transaction.id(),
                })?;
                let initiated =
                    initiated(&self.saga_topics, &booking, change.state(), &causation, now);
                Ok(Decision::Record(
                    change.record(transaction).announce(initiated),
                    (),
                ))
            },
        )
        .await;
        let fresh = match ran {
            Ok(Ran::Recorded(..)) => true,
            Ok(Ran::Answered(())) | Err(SagaError::Store(StoreError::AlreadyProcessed(_))) => false,
            Err(error) => return Err(error),
        };
        self.execute(&booking, fresh, &causation).await
    }

    /// Calls the processor for the booking's pending approval (after a
    /// lookup, unless the approval was started just now), settles and
    /// answers.
    async fn execute(
        &self,
        booking: &Booking,
        fresh: bool,
        causation: &Causation,
    ) -> Result<Requested, SagaError> {
        let snapshot = self
            .repository
            .load(&PaymentRef::Id(booking.payment_id))
            .await?
            .ok_or(SettleError::NotFound(booking.payment_id))?;
        let payment = snapshot.payment;
        if payment.status() != PaymentStatus::InProgress {
            self.answer(booking, &payment).await?;
            return Ok(Requested::AlreadySettled(payment.id()));
        }
        let (Some(key), Some(pending)) = (
            payment.payment_key(),
            snapshot.transactions.iter().rev().find(|t| {
                t.kind() == TransactionKind::Approval && t.status() == TransactionStatus::Unknown
            }),
        ) else {
            return Ok(Requested::Pending(payment.id()));
        };
        let mut resolution = None;
        let mut call = fresh;
        if !fresh {
            match self.processor.lookup_by_order(payment.order_id()).await? {
                Some(at_processor) if &at_processor.payment_key == key => {
                    tracing::info!(payment_id = %payment.id(), "resuming: the processor has the payment");
                    resolution = Resolution::of(&at_processor);
                }
                Some(_) => {}
                None => {
                    tracing::info!(payment_id = %payment.id(), "resuming: the processor has nothing; calling it");
                    call = true;
                }
            }
        }
        if call {
            let outcome = self
                .processor
                .confirm(&ConfirmRequest {
                    payment_key: key.clone(),
                    order_id: payment.order_id().clone(),
                    amount: pending.amount(),
                    idempotency_key: pending.idempotency_key().to_owned(),
                })
                .await;
            resolution = match outcome {
                GatewayOutcome::Succeeded(at_processor) => Resolution::of(&at_processor),
                GatewayOutcome::Declined(failure) | GatewayOutcome::KeyRefused(failure) => {
                    Some(Resolution::Declined(failure))
                }
                GatewayOutcome::Misconfigured(failure) => {
                    return Err(SagaError::Misconfigured(failure))
                }
                GatewayOutcome::Unknown(reason) => {
                    tracing::warn!(payment_id = %payment.id(), %reason, "processor outcome unknown; looking it up");
                    match self.processor.lookup_by_order(payment.order_id()).await {
                        Ok(Some(at_processor)) if &at_processor.payment_key == key => {
                            Resolution::of(&at_processor)
                        }
                        Ok(_) => None,
                        Err(error) => {
                            tracing::warn!(payment_id = %payment.id(), %error, "lookup failed; the reconciler will retry");
                            None
                        }
                    }
                }
            };
        }
        let Some(resolution) = resolution else {
            return Ok(Requested::Pending(payment.id()));
        };
        let settled = settle_approval(
            &self.repository,
            &self.topics,
            payment.id(),
            &resolution,
            causation,
        )
        .await?;
        if settled.status() == PaymentStatus::InProgress {
            return Ok(Requested::Pending(settled.id()));
        }
        self.answer(booking, &settled).await?;
        Ok(Requested::Settled(settled.id(), settled.status()))
    }

    /// Answers the saga about a settled payment (once: a second answer
    /// writes nothing).
    async fn answer(&self, booking: &Booking, payment: &Payment) -> Result<bool, SagaError> {
        let reply = reply(&self.saga_topics, booking, payment, chrono::Utc::now());
        Ok(self.bookings.answer(&booking.booking_id, &reply).await?)
    }

    /// Answers the bookings whose payment was settled elsewhere (by the
    /// reconciler) or whose answer a crash interrupted; answers how many.
    ///
    /// # Errors
    /// When the store fails.
    pub async fn answer_settled(&self, limit: u32) -> Result<usize, StoreError> {
        let mut answered = 0;
        for booking in self.bookings.unanswered(limit).await? {
            let Some(snapshot) = self
                .repository
                .load(&PaymentRef::Id(booking.payment_id))
                .await?
            else {
                continue;
            };
            if matches!(
                snapshot.payment.status(),
                PaymentStatus::Ready | PaymentStatus::InProgress
            ) {
                continue;
            }
            let reply = reply(
                &self.saga_topics,
                &booking,
                &snapshot.payment,
                chrono::Utc::now(),
            );
            if self.bookings.answer(&booking.booking_id, &reply).await? {
                answered += 1;
            }
        }
        Ok(answered)
    }
}

/// `payment.initiated`: the booking's payment exists and is being executed.
fn initiated(
    topics: &SagaTopics,
    booking: &Booking,
    payment: &Payment,
    causation: &Causation,
    at: chrono::DateTime<chrono::Utc>,
) -> OutboxMessage {
    let data = json!({
        "paymentId": payment.id(),
        "bookingId": booking.booking_id,
        "amount": amount_json(payment.amount()),
        "currency": payment.amount().currency(),
    });
    outbox_message(
        &topics.initiated,
        "PaymentInitiated",
        payment,
        causation,
        at,
        data,
    )
}

/// `payment.completed {paymentId, bookingId, reference, amount}` or
/// `payment.failed {paymentId, bookingId, reason}` for a settled payment.
fn reply(
    topics: &SagaTopics,
    booking: &Booking,
    payment: &Payment,
    at: chrono::DateTime<chrono::Utc>,
) -> OutboxMessage {
    let causation = booking.causation();
    if payment.status() == PaymentStatus::Done {
        let data = json!({
            "paymentId": payment.id(),
            "bookingId": booking.booking_id,
            "reference": payment.payment_key(),
            "amount": amount_json(payment.amount()),
            "currency": payment.amount().currency(),
        });
        return outbox_message(
            &topics.completed,
            "PaymentCompleted",
            payment,
            &causation,
            at,
            data,
        );
    }
    let (reason, message) = payment.failure().map_or_else(
        || (payment.status().as_str().to_owned(), String::new()),
        |failure| (failure.code.clone(), failure.message.clone()),
    );
    let data = json!({
        "paymentId": payment.id(),
        "bookingId": booking.booking_id,
        "reason": reason,
        "message": message,
    });
    outbox_message(
        &topics.failed,
        "PaymentFailed",
        payment,
        &causation,
        at,
        data,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::gateway::{CancelRequest, GatewayPayment, GatewayStatus};
    use crate::memory::MemoryRepository;
    use crate::testing::{topics, won};

    /// Bookings in memory, with the replies written.
    #[derive(Debug, Clone, Default)]
    struct MemoryBookings {
        bookings: Arc<Mutex<HashMap<String, (Booking, bool)>>>,
        replies: Arc<Mutex<Vec<OutboxMessage>>>,
    }

    impl Bookings for MemoryBookings {
        async fn record(&self, booking: &Booking) -> Result<Booking, StoreError> {
            let mut bookings = self.bookings.lock().unwrap();
            let (stored, _) = bookings
                .entry(booking.booking_id.clone())
                .or_insert_with(|| (booking.clone(), false));
            Ok(stored.clone())
        }

        async fn unanswered(&self, _: u32) -> Result<Vec<Booking>, StoreError> {
            let bookings = self.bookings.lock().unwrap();
            Ok(bookings
                .values()
                .filter(|(_, answered)| !answered)
                .map(|(b, _)| b.clone())
                .collect())
        }

        async fn answer(
            &self,
            booking_id: &str,
            reply: &OutboxMessage,
        ) -> Result<bool, StoreError> {
            let mut bookings = self.bookings.lock().unwrap();
            let Some((_, answered)) = bookings.get_mut(booking_id).filter(|(_, a)| !*a) else {
                return Ok(false);
            };
            *answered = true;
            self.replies.lock().unwrap().push(reply.clone());
            Ok(true)
        }
    }

    /// A processor that approves what it is asked (or answers unknown),
    /// remembers it, and counts the calls.
    #[derive(Debug, Clone, Default)]
    struct Processor {
        unknown: bool,
        seen: Arc<Mutex<HashMap<OrderId, GatewayPayment>>>,
        calls: Arc<AtomicUsize>,
    }

    impl PaymentGateway for Processor {
        async fn confirm(&self, request: &ConfirmRequest) -> GatewayOutcome {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.unknown {
                return GatewayOutcome::Unknown("timeout".into());
            }
            let payment = GatewayPayment {
                payment_key: request.payment_key.clone(),
                order_id: request.order_id.clone(),
                status: GatewayStatus::Done,
                total_amount: request.amount,
                balance_amount: request.amount,
                method: None,
                approved_at: None,
                last_transaction_key: None,
                failure: None,
                cancels: Vec::new(),
            };
            self.seen
                .lock()
                .unwrap()
                .insert(request.order_id.clone(), payment.clone());
            GatewayOutcome::Succeeded(payment)
        }

        async fn cancel(&self, _: &CancelRequest) -> GatewayOutcome {
            GatewayOutcome::Unknown("not in these tests".into())
        }

        async fn lookup_by_order(
            &self,
            order_id: &OrderId,
        ) -> Result<Option<GatewayPayment>, LookupFailed> {
            Ok(self.seen.lock().unwrap().get(order_id).cloned())
        }

        async fn lookup(&self, _: &PaymentKey) -> Result<Option<GatewayPayment>, LookupFailed> {
            Ok(None)
        }
    }

    fn saga(
        repository: &MemoryRepository,
        bookings: &MemoryBookings,
        processor: &Processor,
    ) -> SagaPayments<MemoryRepository, MemoryBookings, Processor> {
        SagaPayments::new(
            repository.clone(),
            bookings.clone(),
            processor.clone(),
            topics(),
            SagaTopics {
                initiated: "payment.initiated".into(),
                completed: "payment.completed".into(),
                failed: "payment.failed".into(),
            },
            "saga.request_payment".into(),
        )
    }

    fn request(message_id: &str) -> PaymentRequested {
        PaymentRequested {
            message_id: message_id.into(),
            saga_id: "saga-1".into(),
            booking_id: "booking-1".into(),
            user_id: None,
            amount: won(12_000),
            processor_hint: None,
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn a_request_is_initiated_executed_and_answered_once() {
        let (repository, bookings, processor) = (
            MemoryRepository::default(),
            MemoryBookings::default(),
            Processor::default(),
        );
        let saga = saga(&repository, &bookings, &processor);
        let done = saga.handle(request("m1")).await.unwrap();
        assert!(
            matches!(done, Requested::Settled(_, PaymentStatus::Done)),
            "{done:?}"
        );
        assert_eq!(
            saga.handle(request("m1")).await.unwrap(),
            Requested::AlreadySettled(repository.payments()[0].id())
        );
        assert_eq!(
            saga.handle(request("m2")).await.unwrap(),
            Requested::AlreadySettled(repository.payments()[0].id())
        );
        assert_eq!(processor.calls.load(Ordering::SeqCst), 1);
        assert_eq!(repository.payments().len(), 1);
        assert_eq!(
            repository.payments()[0].order_id(),
            &booking_order_id("booking-1")
        );
        let initiated: Vec<_> = repository
            .outbox()
            .into_iter()
            .filter(|m| m.event_type == "PaymentInitiated")
            .collect();
        assert_eq!(initiated.len(), 1);
        assert_eq!(initiated[0].payload["correlationid"], "saga-1");
        assert_eq!(initiated[0].payload["causationid"], "m1");
        let replies = bookings.replies.lock().unwrap().clone();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].event_type, "PaymentCompleted");
        assert_eq!(replies[0].payload["data"]["bookingId"], "booking-1");
        assert_eq!(replies[0].payload["data"]["amount"], 12_000);
    }

    #[tokio::test]
    async fn a_redelivered_request_looks_up_before_calling_again() {
        let (repository, bookings) = (MemoryRepository::default(), MemoryBookings::default());
        let lost = Processor {
            unknown: true,
            ..Processor::default()
        };
        let pending = saga(&repository, &bookings, &lost)
            .handle(request("m1"))
            .await
            .unwrap();
        assert!(matches!(pending, Requested::Pending(_)), "{pending:?}");
        // The processor did it after all: the redelivery finds it by lookup.
        let processor = Processor::default();
        let payment = &repository.payments()[0];
        let key = payment.payment_key().unwrap().clone();
        processor.seen.lock().unwrap().insert(
            payment.order_id().clone(),
            GatewayPayment {
                payment_key: key,
                order_id: payment.order_id().clone(),
                status: GatewayStatus::Done,
                total_amount: won(12_000),
                balance_amount: won(12_000),
                method: None,
                approved_at: None,
                last_transaction_key: None,
                failure: None,
                cancels: Vec::new(),
            },
        );
        let settled = saga(&repository, &bookings, &processor)
            .handle(request("m1"))
            .await
            .unwrap();
        assert!(
            matches!(settled, Requested::Settled(_, PaymentStatus::Done)),
            "{settled:?}"
        );
        assert_eq!(
            processor.calls.load(Ordering::SeqCst),
            0,
            "looked up, not called"
        );
        assert_eq!(bookings.replies.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_booking_always_gets_the_same_valid_order_id() {
        for booking in ["b", "booking 1/ä", &"x".repeat(255)] {
            let order = booking_order_id(booking);
            assert_eq!(order, booking_order_id(booking));
            assert_eq!(order.as_str().len(), 35);
        }
        assert_ne!(booking_order_id("a"), booking_order_id("b"));
    }
}

//! Integration events: what the rest of the platform is told, as CloudEvents
//! 1.0 (structured mode) waiting in the outbox.
//!
//! The domain's events are our private audit trail; these are the public
//! contract (docs/architecture.md, "Event contracts"). Field names are camelCase as the other services
//! read them; amounts are JSON numbers at the currency's scale.

use std::str::FromStr as _;

use chrono::{DateTime, SecondsFormat, Utc};
use payment_domain::{Failure, Money, Payment, PaymentStatus, TransactionId};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::ports::OutboxMessage;

/// `source` of every event this service emits.
pub const SOURCE: &str = "/payment-service";

/// Where each integration event goes (configurable topic names).
#[derive(Debug, Clone)]
pub struct Topics {
    pub payment_created: String,
    pub payment_completed: String,
    pub payment_failed: String,
    pub payment_canceled: String,
    pub payment_cancel_failed: String,
}

/// Who caused an event: the message or request that triggered the command.
/// Carried into `correlationid` / `causationid` and the `traceparent` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Causation {
    /// The id of the triggering message or request.
    pub causation_id: Option<String>,
    /// The id of the business flow (kept from the trigger, or started here).
    pub correlation_id: Option<String>,
    /// W3C trace context to continue (already checked,
    /// [`crate::trace::traceparent`]); without one, each event starts a new
    /// trace.
    pub traceparent: Option<String>,
}

/// A JSON number for an amount, exact, at the currency's scale (`15000`
/// won, `10.99` and `12.50` dollars): the decimal's own digits become the
/// number (`serde_json`'s `arbitrary_precision`, enabled by the domain
/// crate), never a float. Every amount fits 15 significant digits
/// ([`payment_domain::money::MAX_SIGNIFICANT_DIGITS`]), so readers that parse
/// numbers as doubles read it exactly too.
#[must_use]
pub fn amount_json(money: Money) -> Value {
    let text = money.amount().to_string();
    // A Decimal always prints as a valid JSON number; the string is only the
    // unreachable fallback, still exact.
    serde_json::Number::from_str(&text).map_or(Value::String(text), Value::Number)
}

pub(crate) fn outbox_message(
    topic: &str,
    event_type: &str,
    payment: &Payment,
    causation: &Causation,
    at: DateTime<Utc>,
    data: Value,
) -> OutboxMessage {
    let id = Uuid::now_v7();
    let mut envelope = json!({
        "id": id,
        "source": SOURCE,
        "specversion": "1.0",
        "type": event_type,
        "time": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "subject": payment.id(),
        "datacontenttype": "application/json",
        "data": data,
    });
    let correlation = causation
        .correlation_id
        .as_ref()
        .or(causation.causation_id.as_ref());
    if let Some(correlation) = correlation {
        envelope["correlationid"] = json!(correlation);
    }
    if let Some(cause) = &causation.causation_id {
        envelope["causationid"] = json!(cause);
    }
    OutboxMessage {
        id,
        topic: topic.to_owned(),
        key: payment.id().to_string(),
        event_type: event_type.to_owned(),
        payload: envelope,
        // Continued from the trigger, or a new trace started here: never
        // an event without one (DESIGN §3).
        traceparent: Some(
            causation
                .traceparent
                .clone()
                .unwrap_or_else(crate::trace::start),
        ),
        created_at: at,
    }
}

/// `PaymentCreatedEvent`: a payment now waits for the customer.
#[must_use]
pub fn payment_created(
    topics: &Topics,
    payment: &Payment,
    causation: &Causation,
    at: DateTime<Utc>,
) -> OutboxMessage {
    let data = json!({
        "paymentId": payment.id(),
        "orderId": payment.order_id(),
        "userId": payment.user_id(),
        "amount": amount_json(payment.amount()),
        "currency": payment.amount().currency(),
        "status": payment.status(),
        "createdAt": payment.created_at().to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    outbox_message(
        &topics.payment_created,
        "PaymentCreatedEvent",
        payment,
        causation,
        at,
        data,
    )
}

/// `PaymentCompletedEvent`: the PG approved; the customer has paid.
#[must_use]
pub fn payment_completed(
    topics: &Topics,
    payment: &Payment,
    causation: &Causation,
    at: DateTime<Utc>,
) -> OutboxMessage {
    let data = json!({
        "paymentId": payment.id(),
        "orderId": payment.order_id(),
        "paymentKey": payment.payment_key(),
        "paidAmount": amount_json(payment.amount()),
        "currency": payment.amount().currency(),
        "method": payment.method(),
        "approvedAt": payment.approved_at().map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
    });
    outbox_message(
        &topics.payment_completed,
        "PaymentCompletedEvent",
        payment,
        causation,
        at,
        data,
    )
}

/// `PaymentFailedEvent`: the payment will not be paid (declined, abandoned
/// in the widget, or expired), with the reason's code and message.
#[must_use]
pub fn payment_failed(
    topics: &Topics,
    payment: &Payment,
    causation: &Causation,
    at: DateTime<Utc>,
) -> OutboxMessage {
    let failure = payment.failure();
    let (code, message) = match (payment.status(), failure) {
        (_, Some(failure)) => (failure.code.as_str(), failure.message.as_str()),
        (PaymentStatus::Expired, None) => {
            ("PAYMENT_EXPIRED", "the payment was not confirmed in time")
        }
        _ => ("PAYMENT_FAILED", "the payment failed"),
    };
    let data = json!({
        "paymentId": payment.id(),
        "orderId": payment.order_id(),
        "status": payment.status(),
        "code": code,
        "message": message,
        "amount": amount_json(payment.amount()),
        "currency": payment.amount().currency(),
    });
    outbox_message(
        &topics.payment_failed,
        "PaymentFailedEvent",
        payment,
        causation,
        at,
        data,
    )
}

/// `PaymentCanceledEvent`: money went back to the customer.
#[must_use]
pub fn payment_canceled(
    topics: &Topics,
    payment: &Payment,
    canceled: Money,
    transaction_key: Option<&str>,
    reason: &str,
    causation: &Causation,
    at: DateTime<Utc>,
) -> OutboxMessage {
    let total = payment
        .amount()
        .checked_sub(payment.balance())
        .unwrap_or(canceled);
    let data = json!({
        "paymentId": payment.id(),
        "orderId": payment.order_id(),
        "paymentKey": payment.payment_key(),
        "canceledAmount": amount_json(canceled),
        "totalCanceledAmount": amount_json(total),
        "remainingAmount": amount_json(payment.balance()),
        "isFullyCanceled": payment.status() == PaymentStatus::Canceled,
        "currency": payment.amount().currency(),
        "cancelReason": reason,
        "transactionKey": transaction_key,
        "canceledAt": at.to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    outbox_message(
        &topics.payment_canceled,
        "PaymentCanceledEvent",
        payment,
        causation,
        at,
        data,
    )
}

/// `PaymentCancelFailedEvent`: a refund the PG finally refused, or one
/// that waited for an approval that never came (`PAYMENT_NOT_APPROVED`:
/// nothing was taken). `requestId` is our cancel's id: the UUID v5 of the
/// payment id and the request's key (a refund message's id), so the order
/// service can match it to its request.
#[must_use]
pub fn payment_cancel_failed(
    topics: &Topics,
    payment: &Payment,
    requested: Money,
    request_id: TransactionId,
    failure: &Failure,
    causation: &Causation,
    at: DateTime<Utc>,
) -> OutboxMessage {
    let data = json!({
        "paymentId": payment.id(),
        "orderId": payment.order_id(),
        "requestedAmount": amount_json(requested),
        "currency": requested.currency(),
        "code": failure.code,
        "message": failure.message,
        "requestId": request_id.to_string(),
    });
    outbox_message(
        &topics.payment_cancel_failed,
        "PaymentCancelFailedEvent",
        payment,
        causation,
        at,
        data,
    )
}

#[cfg(test)]
mod tests {
    use payment_domain::{execute, Currency, OrderId, PaymentCommand, PaymentId, UserId};
    use rust_decimal::Decimal;

    use super::*;

    fn topics() -> Topics {
        Topics {
            payment_created: "created".into(),
            payment_completed: "completed".into(),
            payment_failed: "failed".into(),
            payment_canceled: "canceled".into(),
            payment_cancel_failed: "cancel.failed".into(),
        }
    }

    #[test]
    fn amounts_are_exact_json_numbers() {
        let won = Money::new(Decimal::from(15_000), Currency::Krw).unwrap();
        assert_eq!(amount_json(won).to_string(), "15000");
        let dollars = Money::new(Decimal::new(1099, 2), Currency::Usd).unwrap();
        assert_eq!(amount_json(dollars).to_string(), "10.99");
    }

    #[test]
    fn amounts_keep_the_currency_scale_and_every_digit() {
        // Through a float these would print 12.5 and lose the last digits.
        let dollars = Money::new(Decimal::new(1250, 2), Currency::Usd).unwrap();
        assert_eq!(amount_json(dollars).to_string(), "12.50");
        let max = Money::new(Currency::Usd.max_amount(), Currency::Usd).unwrap();
        assert_eq!(amount_json(max).to_string(), "9999999999999.99");
        let won = Money::new(Currency::Krw.max_amount(), Currency::Krw).unwrap();
        assert_eq!(amount_json(won).to_string(), "999999999999999");
        let event = serde_json::to_string(&json!({ "amount": amount_json(dollars) })).unwrap();
        assert_eq!(event, r#"{"amount":12.50}"#);
    }

    #[test]
    fn payment_created_is_a_cloudevent_keyed_by_payment() {
        let (payment, _) = execute(
            None,
            &PaymentCommand::Create {
                payment_id: PaymentId::new(),
                order_id: OrderId::parse("order-ce-1").unwrap(),
                user_id: UserId::parse("user-9").unwrap(),
                amount: Money::new(Decimal::from(15_000), Currency::Krw).unwrap(),
                created_at: Utc::now(),
            },
        )
        .unwrap();
        let causation = Causation {
            causation_id: Some("evt-in-1".into()),
            correlation_id: None,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        };
        let message = payment_created(&topics(), &payment, &causation, Utc::now());
        assert_eq!(message.topic, "created");
        assert_eq!(message.key, payment.id().to_string());
        assert_eq!(message.event_type, "PaymentCreatedEvent");
        let event = &message.payload;
        assert_eq!(event["id"], message.id.to_string());
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "PaymentCreatedEvent");
        assert_eq!(event["source"], SOURCE);
        assert_eq!(event["subject"], payment.id().to_string());
        assert_eq!(event["causationid"], "evt-in-1");
        assert_eq!(event["correlationid"], "evt-in-1");
        assert_eq!(event["data"]["orderId"], "order-ce-1");
        assert_eq!(event["data"]["amount"], 15_000);
        assert_eq!(event["data"]["currency"], "KRW");
        assert_eq!(event["data"]["status"], "READY");
        assert_eq!(message.traceparent, causation.traceparent);

        // Without a trace to continue, the event starts one.
        let untraced = payment_created(&topics(), &payment, &Causation::default(), Utc::now());
        let started = untraced.traceparent.unwrap();
        assert_eq!(
            crate::trace::traceparent(Some(&started)).as_deref(),
            Some(started.as_str())
        );
    }
}

//! `koosco.commerce.order.refund.requested`: the order service asks for a
//! refund of an order, in full or in part. The message id becomes the
//! cancel's idempotency key, and the message's inbox record is committed in
//! the same transaction as the cancel's reservation (the cancel runs with
//! [`Trigger::Message`]): a redelivery finds the cancel's transaction and
//! resumes or answers it, a concurrent second delivery is refused by the
//! inbox, and nothing is ever refunded twice.
//!
//! No refund request is lost: for a payment whose approval is unknown
//! (IN_PROGRESS) the refund is reserved and carried out once the approval
//! is settled (or released as `PAYMENT_NOT_APPROVED` if it never comes);
//! for a payment not paid yet (READY) the order is gone, so the payment is
//! ended (`ORDER_CANCELED`) without calling the PG; a refund the PG refuses
//! is acknowledged, its `PaymentCancelFailedEvent` published with the
//! release. Each of these commits the message's inbox record with its effect.

use payment_application::{
    Cancel, CancelError, CancelPayment, Canceled, Causation, InboxEntry, PaymentGateway,
    PaymentQueries, PaymentRepository, Requester, StoreError, Trigger,
};
use payment_domain::{amount_from_json, OrderId};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;

use super::cloudevent::{self, CloudEvent};
use super::consumer::{HandlingError, Incoming, MessageHandler};

const EVENT_TYPE: &str = "OrderRefundRequested";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefundData {
    order_id: String,
    /// Absent: refund everything still refundable.
    #[serde(alias = "refundAmount", alias = "cancelAmount")]
    amount: Option<Value>,
    #[serde(alias = "cancelReason")]
    reason: Option<String>,
}

/// A refund request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequested {
    pub message_id: String,
    pub order_id: OrderId,
    pub amount: Option<Decimal>,
    pub reason: String,
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
}

/// Parses and validates one message; every error is permanent.
///
/// # Errors
/// A reason naming the offending field.
pub fn decode(message: &Incoming) -> Result<RefundRequested, String> {
    let envelope: CloudEvent<RefundData> = cloudevent::parse(message, EVENT_TYPE)?;
    let data = envelope.data;
    let amount = match &data.amount {
        None | Some(Value::Null) => None,
        Some(value) => Some(amount_from_json(value).map_err(|e| format!("amount: {e}"))?),
    };
    Ok(RefundRequested {
        message_id: envelope.id,
        order_id: OrderId::parse(data.order_id).map_err(|e| e.to_string())?,
        amount,
        reason: data
            .reason
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| "refund requested by the order service".into()),
        correlation_id: envelope.correlationid,
        traceparent: envelope.traceparent,
    })
}

/// Refunds orders on request.
#[derive(Debug)]
pub struct RefundRequestedHandler<R, G> {
    repository: R,
    cancel: CancelPayment<R, G>,
}

impl<R, G> RefundRequestedHandler<R, G> {
    pub const fn new(repository: R, cancel: CancelPayment<R, G>) -> Self {
        Self { repository, cancel }
    }
}

impl<R: PaymentRepository + PaymentQueries, G: PaymentGateway> MessageHandler
    for RefundRequestedHandler<R, G>
{
    async fn handle(&self, message: &Incoming) -> Result<&'static str, HandlingError> {
        let refund = decode(message).map_err(HandlingError::Permanent)?;
        let payment = self
            .repository
            .find_by_order(&refund.order_id)
            .await
            .map_err(HandlingError::classified)?
            .ok_or_else(|| {
                HandlingError::Permanent(format!("order {} has no payment", refund.order_id))
            })?;
        let request = Cancel {
            payment_id: payment.id(),
            amount: refund.amount,
            reason: refund.reason,
            request_key: Some(refund.message_id.clone()),
            trigger: Trigger::Message(InboxEntry {
                consumer: message.topic.clone(),
                message_id: refund.message_id.clone(),
            }),
            causation: Causation {
                causation_id: Some(refund.message_id),
                correlation_id: refund.correlation_id,
                traceparent: refund.traceparent,
            },
            requester: Requester::OrderService,
        };
        match self.cancel.handle(request).await {
            Ok(Canceled::Done(_)) => Ok("refunded"),
            Ok(Canceled::Pending(_)) => Ok("refund_pending"),
            Ok(Canceled::Waiting(_)) => Ok("refund_waiting_for_approval"),
            Ok(Canceled::Ended(_)) => Ok("payment_ended"),
            // Released, and PaymentCancelFailedEvent tells the order service.
            Err(CancelError::Declined { .. }) => Ok("refund_declined"),
            Ok(Canceled::Repeated(_))
            | Err(CancelError::Store(StoreError::AlreadyProcessed(_))) => Ok("duplicate_message"),
            Err(error) => Err(HandlingError::classified(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &str) -> Incoming {
        Incoming {
            topic: "koosco.commerce.order.refund.requested".into(),
            partition: 0,
            offset: 1,
            key: None,
            payload: Some(payload.as_bytes().to_vec()),
            headers: Vec::new(),
        }
    }

    #[test]
    fn full_and_partial_refunds_are_read() {
        let full = decode(&message(
            r#"{"id":"r-1","specversion":"1.0","type":"OrderRefundRequested","data":{"orderId":"order-0001"}}"#,
        ))
        .unwrap();
        assert_eq!(full.amount, None);
        let partial = decode(&message(
            r#"{"id":"r-2","specversion":"1.0","type":"OrderRefundRequested","data":{"orderId":"order-0001","refundAmount":1500,"reason":"one item"}}"#,
        ))
        .unwrap();
        assert_eq!(partial.amount, Some(Decimal::from(1_500)));
        assert_eq!(partial.reason, "one item");
    }

    #[test]
    fn invalid_refunds_are_refused_with_the_field_named() {
        let bad = decode(&message(
            r#"{"id":"r-3","specversion":"1.0","type":"OrderRefundRequested","data":{"orderId":"x"}}"#,
        ));
        assert!(bad.unwrap_err().contains("orderId"));
        let wrong = decode(&message(
            r#"{"id":"r-4","specversion":"1.0","type":"OrderPlacedEvent","data":{"orderId":"order-0001"}}"#,
        ));
        assert!(wrong.unwrap_err().contains("OrderPlacedEvent"));
    }
}

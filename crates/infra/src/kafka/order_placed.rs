//! `koosco.commerce.order.placed`: CloudEvents JSON carrying an
//! `OrderPlacedEvent`, parsed at the edge into the use case's input.

use std::str::FromStr as _;

use payment_application::{CreatePayment, Created, OrderPlaced, PaymentRepository};
use payment_domain::{Currency, Money, OrderId, UserId};
use serde::Deserialize;
use serde_json::Value;

use super::cloudevent::{self, CloudEvent};
use super::consumer::{HandlingError, Incoming, MessageHandler};

/// The CloudEvent type this topic carries.
const EVENT_TYPE: &str = "OrderPlacedEvent";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderPlacedData {
    order_id: String,
    /// The order service sends a number or a string.
    user_id: Value,
    /// A JSON number or a decimal string; never a float in our hands.
    amount: Value,
    currency: Option<String>,
}

/// Parses and validates one message; every error is permanent (the same
/// bytes will never parse).
///
/// # Errors
/// A reason naming the offending field.
pub fn decode(message: &Incoming) -> Result<OrderPlaced, String> {
    let envelope: CloudEvent<OrderPlacedData> = cloudevent::parse(message, EVENT_TYPE)?;
    let data = envelope.data;
    let order_id = OrderId::parse(data.order_id).map_err(|e| e.to_string())?;
    let user_id = match data.user_id {
        Value::String(text) => text,
        Value::Number(number) => number.to_string(),
        other => return Err(format!("userId must be a string or a number, got {other}")),
    };
    let user_id = UserId::parse(user_id).map_err(|e| e.to_string())?;
    let currency = data
        .currency
        .as_deref()
        .map_or(Ok(Currency::default()), Currency::from_str)
        .map_err(|e| e.to_string())?;
    let amount = Money::from_json(&data.amount, currency).map_err(|e| format!("amount: {e}"))?;
    Ok(OrderPlaced {
        message_id: envelope.id,
        order_id,
        user_id,
        amount,
        correlation_id: envelope.correlationid,
        traceparent: envelope.traceparent,
    })
}

/// Creates payments from placed orders.
#[derive(Debug)]
pub struct OrderPlacedHandler<R> {
    create: CreatePayment<R>,
}

impl<R> OrderPlacedHandler<R> {
    pub const fn new(create: CreatePayment<R>) -> Self {
        Self { create }
    }
}

impl<R: PaymentRepository> MessageHandler for OrderPlacedHandler<R> {
    async fn handle(&self, message: &Incoming) -> Result<&'static str, HandlingError> {
        let order = decode(message).map_err(HandlingError::Permanent)?;
        let order_id = order.order_id.clone();
        match self.create.handle(order).await {
            Ok(created) => Ok(outcome(&order_id, created)),
            Err(error) => Err(HandlingError::classified(error)),
        }
    }

    /// The messages up to the first that does not decode, through
    /// [`CreatePayment::handle_all`]: one transaction per run of distinct
    /// orders.
    async fn handle_batch(&self, messages: &[Incoming]) -> Vec<&'static str> {
        let orders: Vec<OrderPlaced> = messages.iter().map_while(|m| decode(m).ok()).collect();
        let done = self.create.handle_all(&orders).await;
        orders
            .iter()
            .zip(done)
            .map(|(order, created)| outcome(&order.order_id, created))
            .collect()
    }
}

/// The metrics label of what a message did, logged.
fn outcome(order_id: &OrderId, created: Created) -> &'static str {
    match created {
        Created::Created(payment_id) => {
            tracing::info!(%order_id, %payment_id, "payment created");
            "created"
        }
        Created::DuplicateMessage => "duplicate_message",
        Created::AlreadyExists(payment_id) => {
            tracing::info!(%order_id, %payment_id, "order already has this payment; nothing new");
            "already_exists"
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn message(payload: &str) -> Incoming {
        Incoming {
            topic: "koosco.commerce.order.placed".into(),
            partition: 0,
            offset: 7,
            key: None,
            payload: Some(payload.as_bytes().to_vec()),
            headers: vec![("traceparent".into(), Some(TRACEPARENT.as_bytes().to_vec()))],
        }
    }

    fn event(data: &str) -> String {
        format!(
            r#"{{"id":"evt-1","source":"/order-service","specversion":"1.0","type":"OrderPlacedEvent",
               "time":"2026-11-22T00:00:00Z","correlationid":"flow-1","data":{data}}}"#
        )
    }

    #[test]
    fn a_valid_event_becomes_the_use_case_input() {
        let order = decode(&message(&event(
            r#"{"orderId":"order-0001","userId":42,"amount":15000,"currency":"KRW","occurredAt":"2026-11-22T00:00:00Z"}"#,
        )))
        .unwrap();
        assert_eq!(order.message_id, "evt-1");
        assert_eq!(order.order_id.as_str(), "order-0001");
        assert_eq!(order.user_id.as_str(), "42");
        assert_eq!(
            order.amount,
            Money::new(dec!(15000), Currency::Krw).unwrap()
        );
        assert_eq!(order.correlation_id.as_deref(), Some("flow-1"));
        assert_eq!(order.traceparent.as_deref(), Some(TRACEPARENT));
    }

    #[test]
    fn currency_defaults_to_krw_and_string_amounts_are_exact() {
        let order = decode(&message(&event(
            r#"{"orderId":"order-0001","userId":"u","amount":"10.50"}"#,
        )));
        assert!(order.unwrap_err().contains("KRW"), "KRW has no minor unit");
        let order = decode(&message(&event(
            r#"{"orderId":"order-0001","userId":"u","amount":"10.50","currency":"USD"}"#,
        )))
        .unwrap();
        assert_eq!(order.amount.amount(), dec!(10.50));
    }

    #[test]
    fn an_amount_the_column_cannot_hold_is_refused_at_the_edge() {
        // DECIMAL(19,4) holds 15 digits before the point: 10^15 would fail
        // the insert on every retry; refused here, it is permanent (DLQ).
        for amount in ["1000000000000000", r#""1000000000000000""#, "1e15"] {
            let data = format!(r#"{{"orderId":"order-0001","userId":"u","amount":{amount}}}"#);
            let error = decode(&message(&event(&data))).unwrap_err();
            assert!(error.contains("amount"), "{amount}: {error}");
        }
        let largest = decode(&message(&event(
            r#"{"orderId":"order-0001","userId":"u","amount":999999999999999}"#,
        )))
        .unwrap();
        assert_eq!(largest.amount.amount(), dec!(999999999999999));
    }

    #[test]
    fn invalid_events_are_refused_with_the_field_named() {
        for (data, expected) in [
            (r#"{"orderId":"bad","userId":"u","amount":100}"#, "orderId"),
            (
                r#"{"orderId":"order-0001","userId":"","amount":100}"#,
                "userId",
            ),
            (
                r#"{"orderId":"order-0001","userId":"u","amount":-5}"#,
                "negative",
            ),
            (
                r#"{"orderId":"order-0001","userId":"u","amount":true}"#,
                "amount",
            ),
            (
                r#"{"orderId":"order-0001","userId":"u","amount":100,"currency":"EUR"}"#,
                "EUR",
            ),
            (r#"{"userId":"u","amount":100}"#, "orderId"),
        ] {
            let error = decode(&message(&event(data))).unwrap_err();
            assert!(error.contains(expected), "{data}: {error}");
        }
        assert!(decode(&message("not json"))
            .unwrap_err()
            .contains("CloudEvent"));
        let wrong_type = event(r#"{"orderId":"order-0001","userId":"u","amount":1}"#)
            .replace("OrderPlacedEvent", "OrderCanceledEvent");
        assert!(decode(&message(&wrong_type))
            .unwrap_err()
            .contains("OrderCanceledEvent"));
    }
}

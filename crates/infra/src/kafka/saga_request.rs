//! `saga.request_payment`: CloudEvents JSON carrying a booking saga's
//! `RequestPayment {sagaId, bookingId, userId?, totalPrice, currency}`,
//! parsed at the edge into the use case's input. The optional extension
//! attribute `processoroutcome` (`approve`, `decline`, `unknown`) asks the
//! fake gateway for an outcome.

use std::str::FromStr as _;

use payment_application::{
    Bookings, PaymentGateway, PaymentRepository, PaymentRequested, Requested, SagaPayments,
};
use payment_domain::{Currency, Money, UserId};
use serde::Deserialize;
use serde_json::Value;

use super::cloudevent::{self, CloudEvent};
use super::consumer::{HandlingError, Incoming, MessageHandler};

/// The CloudEvent type this topic carries.
const EVENT_TYPE: &str = "RequestPayment";

/// The longest booking or saga id `saga_bookings` keeps.
const ID_MAX: usize = 255;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestPaymentData {
    saga_id: String,
    booking_id: String,
    /// A number or a string, when known.
    user_id: Option<Value>,
    /// A JSON number or a decimal string; never a float in our hands.
    total_price: Value,
    currency: String,
}

/// The envelope's extension attributes this topic reads.
#[derive(Debug, Deserialize)]
struct Extensions {
    processoroutcome: Option<String>,
}

fn id(field: &str, value: String, ascii: bool) -> Result<String, String> {
    let fits = (1..=ID_MAX).contains(&value.len())
        && if ascii {
            value.bytes().all(|b| b.is_ascii_graphic())
        } else {
            !value.chars().any(char::is_control) && !value.trim().is_empty()
        };
    if fits {
        Ok(value)
    } else {
        Err(format!(
            "{field} must be 1-{ID_MAX} characters{}",
            if ascii { " of visible ASCII" } else { "" }
        ))
    }
}

/// Parses and validates one message; every error is permanent (the same
/// bytes will never parse).
///
/// # Errors
/// A reason naming the offending field.
pub fn decode(message: &Incoming) -> Result<PaymentRequested, String> {
    let envelope: CloudEvent<RequestPaymentData> = cloudevent::parse(message, EVENT_TYPE)?;
    let extensions: Extensions =
        serde_json::from_slice(message.payload.as_deref().unwrap_or_default())
            .map_err(|e| format!("extension attributes: {e}"))?;
    let data = envelope.data;
    let user_id = match data.user_id {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(Value::Number(number)) => Some(number.to_string()),
        Some(other) => return Err(format!("userId must be a string or a number, got {other}")),
    }
    .map(UserId::parse)
    .transpose()
    .map_err(|e| format!("userId: {e}"))?;
    let currency = Currency::from_str(&data.currency).map_err(|e| format!("currency: {e}"))?;
    let amount =
        Money::from_json(&data.total_price, currency).map_err(|e| format!("totalPrice: {e}"))?;
    let processor_hint = match extensions.processoroutcome {
        None => None,
        Some(hint)
            if (1..=16).contains(&hint.len()) && hint.bytes().all(|b| b.is_ascii_lowercase()) =>
        {
            Some(hint)
        }
        Some(hint) => {
            return Err(format!(
                "processoroutcome must be 1-16 of [a-z], got {hint:?}"
            ))
        }
    };
    Ok(PaymentRequested {
        message_id: envelope.id,
        saga_id: id("sagaId", data.saga_id, false)?,
        booking_id: id("bookingId", data.booking_id, true)?,
        user_id,
        amount,
        processor_hint,
        traceparent: envelope.traceparent,
    })
}

/// Pays for bookings.
#[derive(Debug)]
pub struct SagaRequestHandler<R, B, G> {
    saga: SagaPayments<R, B, G>,
}

impl<R, B, G> SagaRequestHandler<R, B, G> {
    pub const fn new(saga: SagaPayments<R, B, G>) -> Self {
        Self { saga }
    }
}

impl<R: PaymentRepository, B: Bookings, G: PaymentGateway> MessageHandler
    for SagaRequestHandler<R, B, G>
{
    async fn handle(&self, message: &Incoming) -> Result<&'static str, HandlingError> {
        let request = decode(message).map_err(HandlingError::Permanent)?;
        let booking_id = request.booking_id.clone();
        match self.saga.handle(request).await {
            Ok(Requested::Settled(payment_id, status)) => {
                tracing::info!(%booking_id, %payment_id, %status, "booking payment settled");
                Ok("settled")
            }
            Ok(Requested::Pending(payment_id)) => {
                tracing::info!(%booking_id, %payment_id, "booking payment pending; the reconciler settles it");
                Ok("pending")
            }
            Ok(Requested::AlreadySettled(_)) => Ok("already_settled"),
            Err(error) => Err(HandlingError::classified(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn message(payload: &str) -> Incoming {
        Incoming {
            topic: "saga.request_payment".into(),
            partition: 0,
            offset: 1,
            key: None,
            payload: Some(payload.as_bytes().to_vec()),
            headers: Vec::new(),
        }
    }

    fn event(data: &str, extra: &str) -> String {
        format!(
            r#"{{"id":"req-1","source":"/booking-saga","specversion":"1.0","type":"RequestPayment"{extra},"data":{data}}}"#
        )
    }

    #[test]
    fn a_valid_request_becomes_the_use_case_input() {
        let request = decode(&message(&event(
            r#"{"sagaId":"saga-7","bookingId":"bk 1/ä"  ,"totalPrice":12000,"currency":"KRW"}"#,
            "",
        )));
        assert!(request.unwrap_err().contains("bookingId"));
        let request = decode(&message(&event(
            r#"{"sagaId":"saga-7","bookingId":"booking-1","userId":7,"totalPrice":"10.50","currency":"USD"}"#,
            r#","processoroutcome":"decline""#,
        )))
        .unwrap();
        assert_eq!(request.message_id, "req-1");
        assert_eq!(request.saga_id, "saga-7");
        assert_eq!(request.booking_id, "booking-1");
        assert_eq!(request.user_id.unwrap().as_str(), "7");
        assert_eq!(request.amount.amount(), dec!(10.50));
        assert_eq!(request.processor_hint.as_deref(), Some("decline"));
    }

    #[test]
    fn invalid_requests_are_refused_with_the_field_named() {
        for (data, extra, expected) in [
            (
                r#"{"bookingId":"b-1","totalPrice":1,"currency":"KRW"}"#,
                "",
                "sagaId",
            ),
            (
                r#"{"sagaId":"s","totalPrice":1,"currency":"KRW"}"#,
                "",
                "bookingId",
            ),
            (
                r#"{"sagaId":"s","bookingId":"b-1","totalPrice":-1,"currency":"KRW"}"#,
                "",
                "totalPrice",
            ),
            (
                r#"{"sagaId":"s","bookingId":"b-1","totalPrice":1}"#,
                "",
                "currency",
            ),
            (
                r#"{"sagaId":"s","bookingId":"b-1","totalPrice":1,"currency":"EUR"}"#,
                "",
                "currency",
            ),
            (
                r#"{"sagaId":"","bookingId":"b-1","totalPrice":1,"currency":"KRW"}"#,
                "",
                "sagaId",
            ),
            (
                r#"{"sagaId":"s","bookingId":"b-1","totalPrice":1,"currency":"KRW"}"#,
                r#","processoroutcome":"DROP TABLE""#,
                "processoroutcome",
            ),
        ] {
            let error = decode(&message(&event(data, extra))).unwrap_err();
            assert!(error.contains(expected), "{data}: {error}");
        }
    }
}

//! The booking saga as its orchestrator drives it: `RequestPayment`
//! CloudEvents in, replies read back, each test on its own topics.

use serde_json::{json, Value};

use crate::kafka;
use crate::orders::TestTopics;

/// One test's saga topics, beside its commerce topics.
#[derive(Debug, Clone)]
pub struct SagaTopics {
    pub commerce: TestTopics,
    pub request: String,
    pub initiated: String,
    pub completed: String,
    pub failed: String,
}

impl SagaTopics {
    /// Fresh topics, created on the broker.
    pub async fn create() -> Self {
        let topics = Self {
            commerce: TestTopics::create().await,
            request: kafka::unique_topic("saga.request_payment"),
            initiated: kafka::unique_topic("payment.initiated"),
            completed: kafka::unique_topic("payment.completed"),
            failed: kafka::unique_topic("payment.failed"),
        };
        kafka::create_topics(&[
            topics.request.clone(),
            format!("{}.dlq", topics.request),
            topics.initiated.clone(),
            topics.completed.clone(),
            topics.failed.clone(),
        ])
        .await;
        topics
    }

    /// The service settings for these topics and the fake gateway's
    /// settings (`[fake]`).
    #[must_use]
    pub fn config(&self, fake: Value) -> Value {
        let mut config = self.commerce.config();
        let topics = &mut config["topics"];
        topics["saga_request_payment"] = json!(self.request);
        topics["saga_payment_initiated"] = json!(self.initiated);
        topics["saga_payment_completed"] = json!(self.completed);
        topics["saga_payment_failed"] = json!(self.failed);
        config["gateway"] = json!("fake");
        config["fake"] = fake;
        config["saga"] = json!({ "answer_interval_ms": 100 });
        config
    }
}

/// A `RequestPayment` CloudEvent as the saga orchestrator publishes it;
/// `outcome` is the `processoroutcome` extension attribute.
#[must_use]
pub fn request_payment(
    event_id: &str,
    saga_id: &str,
    booking_id: &str,
    total_price: u64,
    outcome: Option<&str>,
) -> Vec<u8> {
    let mut event = json!({
        "id": event_id,
        "source": "/booking-saga",
        "specversion": "1.0",
        "type": "RequestPayment",
        "time": "2026-12-02T00:00:00Z",
        "subject": booking_id,
        "datacontenttype": "application/json",
        "correlationid": saga_id,
        "data": {
            "sagaId": saga_id,
            "bookingId": booking_id,
            "userId": "guest-7",
            "totalPrice": total_price,
            "currency": "KRW",
        },
    });
    if let Some(outcome) = outcome {
        event["processoroutcome"] = json!(outcome);
    }
    event.to_string().into_bytes()
}

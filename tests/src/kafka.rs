//! Kafka helpers for the tests: unique topics, publishing, and reading a
//! topic from the beginning until a condition holds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use payment_infra::kafka::KafkaSettings;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message as _;

use crate::brokers;

/// A consumed message, owned.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

impl Received {
    /// The payload as JSON (panics on anything else: a test failure).
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.payload.as_deref().expect("payload")).expect("JSON payload")
    }
}

fn settings(group: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: brokers(),
        client_id: "payment-e2e".into(),
        group_id: group.into(),
        session_timeout: Duration::from_secs(3),
        debug: None,
    }
}

/// A topic name no other test uses.
#[must_use]
pub fn unique_topic(name: &str) -> String {
    format!("it.{}.{name}", uuid::Uuid::now_v7().simple())
}

/// Creates `topics` (3 partitions each).
pub async fn create_topics(topics: &[String]) {
    settings("admin")
        .ensure_topics(topics, 3, 1)
        .await
        .expect("create test topics");
}

/// An idempotent producer to the local broker.
pub fn producer() -> FutureProducer {
    settings("producer").producer().expect("producer")
}

/// Publishes one message and waits for the ack.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header {
            key,
            value: Some(*value),
        });
    }
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(owned),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .expect("publish");
}

/// Publishes many keyed messages at once (in order per key) and waits for
/// every ack.
pub async fn publish_all(producer: &FutureProducer, topic: &str, messages: &[(String, Vec<u8>)]) {
    let sends = messages.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(30),
        )
    });
    for result in futures::future::join_all(sends).await {
        result.map_err(|(error, _)| error).expect("publish");
    }
}

/// Reads `topic` from the beginning (a fresh group) until `done` says the
/// messages so far are enough, or `timeout` passes; answers all of them.
/// Reads `topic` until `arrived` holds (40 s at most), then 2 s more, so
/// that what must NOT come has had its chance too: for tests that expect
/// exactly these records, whatever a consumer group's join costs.
pub async fn read_then_settle(
    topic: &str,
    mut arrived: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    let mut since: Option<Instant> = None;
    read_until(topic, Duration::from_secs(40), |seen| {
        if since.is_none() && arrived(seen) {
            since = Some(Instant::now());
        }
        since.is_some_and(|at| at.elapsed() >= Duration::from_secs(2))
    })
    .await
}

pub async fn read_until(
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    let group = format!("reader-{}", uuid::Uuid::now_v7().simple());
    let consumer: StreamConsumer = settings(&group)
        .client_config()
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    while !done(&received) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(Ok(message)) =
            tokio::time::timeout(left.min(Duration::from_millis(500)), consumer.recv()).await
        else {
            continue;
        };
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_owned(), value.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        received.push(Received {
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    received
}

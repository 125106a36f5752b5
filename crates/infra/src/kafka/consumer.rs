//! The at-least-once consumer loop shared by every inbound topic.
//!
//! A message's offset is stored only after its handler has committed its
//! effect (or after the message was safely parked in `<topic>.dlq`), so a
//! crash at any point replays the message instead of losing it; the handler's
//! inbox makes the replay harmless. Transient failures (database down) are
//! retried with backoff on the same message — the partition waits, nothing
//! is skipped — and make the service not-ready while they last.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use futures::future::BoxFuture;
use payment_application::{Classify, HealthProbe};
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message as _;
use tokio_util::sync::CancellationToken;

use super::KafkaSettings;

/// A consumed message, detached from librdkafka's buffers.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Incoming {
    fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// A header's value as text, if present and UTF-8.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
            .and_then(|value| std::str::from_utf8(value).ok())
    }
}

/// Why a message was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandlingError {
    /// It can never succeed (undecodable, invalid, contradicts what we
    /// know): it goes to the dead-letter topic with this reason.
    #[error("{0}")]
    Permanent(String),
    /// It may succeed later (database down …): retried, offset not stored.
    #[error(transparent)]
    Transient(anyhow::Error),
}

impl HandlingError {
    /// A use case's failure, permanent or transient as the failure itself
    /// says ([`Classify`]): the one place the consumer's split is decided.
    pub fn classified<E>(error: E) -> Self
    where
        E: Classify + std::error::Error + Send + Sync + 'static,
    {
        let permanent = error.is_permanent();
        let error = anyhow::Error::new(error);
        if permanent {
            Self::Permanent(format!("{error:#}"))
        } else {
            Self::Transient(error)
        }
    }
}

/// Handles one message of a topic.
pub trait MessageHandler: Send + Sync + 'static {
    /// Applies the message's effect, committing it together with the
    /// message's inbox record; answers a short outcome label for metrics.
    ///
    /// # Errors
    /// [`HandlingError`] saying whether a retry can help.
    fn handle(
        &self,
        message: &Incoming,
    ) -> impl Future<Output = Result<&'static str, HandlingError>> + Send;
}

/// The dead-letter topic of `topic`.
#[must_use]
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Readiness of a consumer: down while it is retrying a transient failure.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHealth {
    failing: Arc<AtomicBool>,
    last_error: Arc<Mutex<String>>,
}

impl ConsumerHealth {
    fn failing(&self, error: &str) {
        error.clone_into(
            &mut self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.failing.store(true, Ordering::Release);
    }

    fn recovered(&self) {
        self.failing.store(false, Ordering::Release);
    }
}

impl HealthProbe for ConsumerHealth {
    fn name(&self) -> &'static str {
        "consumer"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let result = if self.failing.load(Ordering::Acquire) {
            Err(self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone())
        } else {
            Ok(())
        };
        Box::pin(async move { result })
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Consumes `topics` until `shutdown`, then commits the stored offsets.
///
/// # Errors
/// When the consumer cannot be created or subscribed.
pub async fn run_consumer<H: MessageHandler>(
    settings: &KafkaSettings,
    topics: &[String],
    handler: H,
    dlq: FutureProducer,
    health: ConsumerHealth,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = settings
        .client_config()
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by hand, after the effect is committed.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "session.timeout.ms",
            settings.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (settings.session_timeout.as_millis() / 6)
                .max(100)
                .to_string(),
        )
        .create()
        .context("create Kafka consumer")?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .with_context(|| format!("subscribe to {names:?}"))?;
    tracing::info!(topics = ?names, group = %settings.group_id, "consuming");

    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => break,
            received = consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "consumer error");
                tokio::time::sleep(FIRST_BACKOFF).await;
                continue;
            }
        };
        let incoming = Incoming::from_message(&message);
        if !process(&handler, &incoming, &dlq, &health, &shutdown).await {
            break; // shutting down mid-retry: the message will be redelivered
        }
        if let Err(error) = consumer.store_offset_from_message(&message) {
            tracing::warn!(topic = %incoming.topic, %error, "cannot store offset; the message may be redelivered");
        }
    }

    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::warn!(%error, "final offset commit failed; the last messages may be redelivered");
    }
    tracing::info!(topics = ?names, "consumer stopped");
    Ok(())
}

/// Handles one message until it is done (effect committed or dead-lettered).
/// Answers `false` if shutdown came first.
async fn process<H: MessageHandler>(
    handler: &H,
    message: &Incoming,
    dlq: &FutureProducer,
    health: &ConsumerHealth,
    shutdown: &CancellationToken,
) -> bool {
    let topic = message.topic.clone();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let failure = match handler.handle(message).await {
            Ok(outcome) => {
                metrics::counter!("kafka_messages_total", "topic" => topic.clone(), "outcome" => outcome)
                    .increment(1);
                health.recovered();
                return true;
            }
            Err(HandlingError::Permanent(reason)) => {
                match dead_letter(dlq, message, &reason).await {
                    Ok(()) => {
                        tracing::warn!(
                            topic, partition = message.partition, offset = message.offset, %reason,
                            "message sent to the dead-letter topic"
                        );
                        metrics::counter!("kafka_messages_total", "topic" => topic.clone(), "outcome" => "dead_lettered")
                            .increment(1);
                        health.recovered();
                        return true;
                    }
                    Err(error) => error.context("dead-letter the message"),
                }
            }
            Err(HandlingError::Transient(error)) => error,
        };
        let error = format!("{failure:#}");
        tracing::warn!(topic, offset = message.offset, %error, retry_in = ?backoff, "message not handled yet");
        metrics::counter!("kafka_handling_retries_total", "topic" => topic.clone()).increment(1);
        health.failing(&format!("{topic}: {error}"));
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Publishes the message as it came, with why and where from, to
/// `<topic>.dlq`, and waits for the broker's ack.
async fn dead_letter(dlq: &FutureProducer, message: &Incoming, reason: &str) -> anyhow::Result<()> {
    let partition = message.partition.to_string();
    let offset = message.offset.to_string();
    let failed_at = Utc::now().to_rfc3339();
    let mut headers = OwnedHeaders::new();
    for (key, value) in &message.headers {
        headers = headers.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    for (key, value) in [
        ("dlq.error", reason),
        ("dlq.original.topic", message.topic.as_str()),
        ("dlq.original.partition", partition.as_str()),
        ("dlq.original.offset", offset.as_str()),
        ("dlq.failed.at", failed_at.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let topic = dlq_topic(&message.topic);
    let mut record = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
    if let Some(key) = &message.key {
        record = record.key(key.as_slice());
    }
    if let Some(payload) = &message.payload {
        record = record.payload(payload.as_slice());
    }
    dlq.send(record, Duration::from_secs(10))
        .await
        .map(drop)
        .map_err(|(error, _)| anyhow::Error::new(error).context(format!("publish to {topic}")))
}

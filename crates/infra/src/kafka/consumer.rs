//! The at-least-once consumer loop shared by every inbound topic.
//!
//! A message's offset is stored only after its handler has committed its
//! effect (or after the message was safely parked in `<topic>.dlq`), so a
//! crash at any point replays the message instead of losing it; the handler's
//! inbox makes the replay harmless. Transient failures (database down) are
//! retried with backoff on the same message — the partition waits, nothing
//! is skipped — and make the service not-ready while they last.
//!
//! The loop takes what is already fetched (up to [`BATCH`] messages), splits
//! it by partition and handles the partitions concurrently, each in order:
//! first as one batch ([`MessageHandler::handle_batch`], one transaction for
//! many messages where the handler can), the rest one by one; then it
//! stores each partition's offset after its last handled message.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt as _;
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

    /// Handles several messages of ONE partition, in order, committing
    /// their effects together where it safely can; answers the outcome
    /// labels of the leading messages it handled (all, some or none). The
    /// loop hands the rest to [`MessageHandler::handle`] one by one, so a
    /// message that cannot be handled here (poison, a store outage) is
    /// handled exactly as it would be alone. The default handles none.
    fn handle_batch(
        &self,
        messages: &[Incoming],
    ) -> impl Future<Output = Vec<&'static str>> + Send {
        let _ = messages;
        async { Vec::new() }
    }
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
/// The most messages taken at once (what is already fetched): one batch
/// per partition among them, committed in one transaction where safe.
const BATCH: usize = 256;
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
        let first = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "consumer error");
                tokio::time::sleep(FIRST_BACKOFF).await;
                continue;
            }
        };
        // What is already fetched, never waiting for more.
        let mut fetched = vec![first];
        while fetched.len() < BATCH {
            match consumer.recv().now_or_never() {
                Some(Ok(message)) => fetched.push(message),
                Some(Err(error)) => {
                    tracing::warn!(%error, "consumer error");
                    break;
                }
                None => break,
            }
        }
        let partitions = by_partition(fetched);
        let handled =
            futures::future::join_all(partitions.iter().map(|(_, incoming)| {
                process_partition(&handler, incoming, &dlq, &health, &shutdown)
            }))
            .await;
        let mut stopped = false;
        for ((messages, incoming), done) in partitions.iter().zip(handled) {
            if let Some(last) = done.checked_sub(1).map(|i| &messages[i]) {
                if let Err(error) = consumer.store_offset_from_message(last) {
                    tracing::warn!(topic = %last.topic(), %error, "cannot store offset; the messages may be redelivered");
                }
            }
            // Shutting down mid-retry: the rest will be redelivered.
            stopped |= done < incoming.len();
        }
        if stopped {
            break;
        }
    }

    if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::warn!(%error, "final offset commit failed; the last messages may be redelivered");
    }
    tracing::info!(topics = ?names, "consumer stopped");
    Ok(())
}

/// The fetched messages per partition, each partition's in their order.
fn by_partition(
    fetched: Vec<BorrowedMessage<'_>>,
) -> Vec<(Vec<BorrowedMessage<'_>>, Vec<Incoming>)> {
    let mut partitions: Vec<(Vec<BorrowedMessage<'_>>, Vec<Incoming>)> = Vec::new();
    for message in fetched {
        let incoming = Incoming::from_message(&message);
        let slot = partitions.iter().position(|(_, same)| {
            same[0].partition == incoming.partition && same[0].topic == incoming.topic
        });
        match slot {
            Some(slot) => {
                partitions[slot].0.push(message);
                partitions[slot].1.push(incoming);
            }
            None => partitions.push((vec![message], vec![incoming])),
        }
    }
    partitions
}

/// Handles one partition's messages, in order, until each is done: as
/// batches as far as the handler can, one by one where a batch stops short
/// (a poison message, an outage: handled alone exactly as without
/// batching, then batching resumes). After a batch that handled nothing,
/// twice as many messages go one by one before the next try, so a stretch
/// no batch can take (a redelivered run handled before) costs few tries.
/// Answers how many are done (fewer than all only if shutdown came first).
async fn process_partition<H: MessageHandler>(
    handler: &H,
    messages: &[Incoming],
    dlq: &FutureProducer,
    health: &ConsumerHealth,
    shutdown: &CancellationToken,
) -> usize {
    let mut done = 0;
    let mut alone = 1;
    while done < messages.len() {
        let rest = &messages[done..];
        let batched = if rest.len() > 1 {
            handler.handle_batch(rest).await
        } else {
            Vec::new()
        };
        for (message, outcome) in rest.iter().zip(&batched) {
            metrics::counter!("kafka_messages_total", "topic" => message.topic.clone(), "outcome" => *outcome)
                .increment(1);
        }
        let one_by_one = if batched.is_empty() {
            let now = alone;
            alone = (alone * 2).min(BATCH);
            now
        } else {
            health.recovered();
            alone = 1;
            1
        };
        done += batched.len();
        for message in messages[done..].iter().take(one_by_one) {
            if !process(handler, message, dlq, health, shutdown).await {
                return done;
            }
            done += 1;
        }
    }
    done
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

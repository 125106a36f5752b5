//! Kafka through rdkafka (librdkafka): client settings shared by every
//! client of the service, topic provisioning, the at-least-once consumer with
//! its dead-letter topics, the inbound message decoders and the readiness
//! probe.

mod cloudevent;
mod consumer;
mod order_placed;
mod probe;
mod refund_requested;
mod router;
mod saga_request;

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

pub use consumer::{
    dlq_topic, run_consumer, ConsumerHealth, HandlingError, Incoming, MessageHandler,
};
pub use order_placed::OrderPlacedHandler;
pub use probe::BrokerProbe;
pub use refund_requested::RefundRequestedHandler;
pub use router::{AndTopic, TopicRouter};
pub use saga_request::SagaRequestHandler;

/// Where the brokers are and how every client of this service talks to them.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// `client.id`, visible in broker logs.
    pub client_id: String,
    /// Consumer group of every consumer of this service.
    pub group_id: String,
    /// Consumer session timeout: a dead member's partitions move after this;
    /// joining a group takes about half of it.
    pub session_timeout: Duration,
    /// librdkafka debug contexts (e.g. `cgrp,topic,fetch`), for diagnosis.
    pub debug: Option<String>,
}

impl KafkaSettings {
    /// The settings every client shares.
    #[must_use]
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            // Fail requests to a dead broker quickly instead of hanging for minutes.
            .set("socket.timeout.ms", "10000")
            .set("reconnect.backoff.max.ms", "2000");
        if let Some(contexts) = &self.debug {
            config.set("debug", contexts);
        }
        config
    }

    /// An idempotent producer that waits for every in-sync replica: a
    /// retried send can neither duplicate nor reorder within a partition.
    ///
    /// # Errors
    /// When librdkafka refuses the configuration.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        self.client_config()
            .set("enable.idempotence", "true")
            // Kafka's Java partitioner (what Debezium's Connect uses), so a
            // key lands on the same partition whichever relay sent it.
            .set("partitioner", "murmur2_random")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000")
            .create()
            .context("create Kafka producer")
    }

    /// Creates the topics that do not exist yet (existing ones are left as
    /// they are).
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses a creation.
    pub async fn ensure_topics(
        &self,
        topics: &[String],
        partitions: i32,
        replication: i32,
    ) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .context("create Kafka admin client")?;
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&new_topics, &options)
            .await
            .context("create Kafka topics")?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("create topic {topic}: {code}"),
            }
        }
        Ok(())
    }
}

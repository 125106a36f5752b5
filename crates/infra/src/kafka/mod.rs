//! Kafka through rdkafka (librdkafka): client configuration shared by the
//! consumer, the outbox relay and the readiness probe.

mod probe;

pub use probe::BrokerProbe;

use rdkafka::ClientConfig;

/// Where the brokers are and how every client of this service talks to them.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// `client.id`, visible in broker logs.
    pub client_id: String,
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
        config
    }
}

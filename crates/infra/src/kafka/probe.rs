//! Readiness: the broker answers a metadata request.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use payment_application::HealthProbe;
use rdkafka::producer::{BaseProducer, Producer as _};

use super::KafkaSettings;

/// Asks the cluster for its metadata with a short timeout. The client is
/// created once and reconnects by itself; each check is one request.
#[derive(Clone)]
pub struct BrokerProbe {
    client: Arc<BaseProducer>,
    timeout: Duration,
}

impl std::fmt::Debug for BrokerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerProbe")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl BrokerProbe {
    /// # Errors
    /// When librdkafka refuses the configuration.
    pub fn new(settings: &KafkaSettings, timeout: Duration) -> anyhow::Result<Self> {
        let client: BaseProducer = settings
            .client_config()
            .create()
            .context("create Kafka client for the readiness probe")?;
        Ok(Self {
            client: Arc::new(client),
            timeout,
        })
    }
}

impl HealthProbe for BrokerProbe {
    fn name(&self) -> &'static str {
        "broker"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        let client = Arc::clone(&self.client);
        let timeout = self.timeout;
        Box::pin(async move {
            // librdkafka's metadata call blocks its thread: keep it off the runtime.
            let metadata = tokio::task::spawn_blocking(move || {
                client
                    .client()
                    .fetch_metadata(None, timeout)
                    .map(|m| m.brokers().len())
            })
            .await
            .map_err(|e| format!("probe task failed: {e}"))?;
            match metadata {
                Ok(0) => Err("no broker in the cluster metadata".to_owned()),
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

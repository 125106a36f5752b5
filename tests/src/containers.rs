//! The tests' MariaDB and broker from testcontainers instead of the local
//! stack (`scripts/stack.sh`), when a Docker Engine runs.
//!
//! `#[sqlx::test]` reads `DATABASE_URL` before a test's body runs, and the
//! workspace forbids the `unsafe` a pre-`main` hook would need, so the
//! containers cannot be started from inside a test binary. Instead
//! [`Infra::start`] runs them for a whole `cargo test` that the
//! `with-containers` launcher starts with [`Infra::env`] (what
//! `.stack/env` exports for the local stack); `scripts/test-containers.sh`
//! is the one command.
//!
//! testcontainers comes from `testcontainers-modules`' re-export only: the
//! modules are built against one testcontainers release, and a second copy
//! of the crate would not share its traits.
//!
//! Image names are settings. The defaults are the official images;
//! without a registry (our machines, CI) `scripts/docker.sh images` builds
//! stand-ins that take the same variables (docs/docker.md):
//! `PAYMENT_TEST_MARIADB_IMAGE=local/mariadb:10.11`,
//! `PAYMENT_TEST_KAFKA_IMAGE=local/tansu:0.1.2`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::ClientConfig;
use testcontainers_modules::mariadb::Mariadb;
use testcontainers_modules::testcontainers::core::{ContainerPort, IntoContainerPort as _};
use testcontainers_modules::testcontainers::runners::AsyncRunner as _;
use testcontainers_modules::testcontainers::{ContainerAsync, GenericImage, ImageExt as _};

/// The label on every container started here; its value is the starting
/// process's id (`scripts/test-containers.sh` removes the containers of a
/// run that was killed before it could remove them).
pub const LABEL: &str = "payment-e2e.containers";

fn owner() -> String {
    std::process::id().to_string()
}

/// Which images to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// `PAYMENT_TEST_MARIADB_IMAGE`, `name:tag`.
    pub mariadb: String,
    /// `PAYMENT_TEST_KAFKA_IMAGE`, `name:tag`: apache/kafka or an image that
    /// reads its `KAFKA_*` listener variables.
    pub kafka: String,
}

impl Images {
    /// The settings from the environment, else the official images
    /// `docker-compose.yml` pins.
    #[must_use]
    pub fn from_env() -> Self {
        let setting = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        Self {
            mariadb: setting("PAYMENT_TEST_MARIADB_IMAGE", "mariadb:11.4"),
            kafka: setting("PAYMENT_TEST_KAFKA_IMAGE", "apache/kafka:4.3.0"),
        }
    }
}

/// `name:tag` split at the tag's colon (a registry's `host:port/` stays in
/// the name); no tag means `latest`.
fn name_and_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// A running MariaDB and broker; remove them with [`Infra::remove`].
#[derive(Debug)]
pub struct Infra {
    mariadb: ContainerAsync<Mariadb>,
    kafka: ContainerAsync<GenericImage>,
    /// The server URL (root, no password, database `payment`).
    pub database_url: String,
    /// `host:port` of the broker.
    pub brokers: String,
}

impl Infra {
    /// Starts both containers and waits until each answers.
    ///
    /// # Errors
    /// When Docker cannot be reached, an image is missing (nothing is
    /// pulled when it is present), or a server does not come up in time.
    pub async fn start(images: &Images) -> anyhow::Result<Self> {
        let (mariadb, kafka) =
            tokio::join!(start_mariadb(&images.mariadb), start_kafka(&images.kafka));
        let (mariadb, database_url) = mariadb?;
        let (kafka, brokers) = match kafka {
            Ok(kafka) => kafka,
            Err(error) => {
                let _ = mariadb.rm().await;
                return Err(error);
            }
        };
        Ok(Self {
            mariadb,
            kafka,
            database_url,
            brokers,
        })
    }

    /// What the tests read, as `.stack/env` exports it for the local stack.
    #[must_use]
    pub fn env(&self) -> [(&'static str, String); 3] {
        [
            ("DATABASE_URL", self.database_url.clone()),
            ("PAYMENT__DATABASE__URL", self.database_url.clone()),
            ("PAYMENT__KAFKA__BROKERS", self.brokers.clone()),
        ]
    }

    /// Stops and removes both containers (and their anonymous volumes).
    ///
    /// # Errors
    /// When Docker refuses; the other container is still removed.
    pub async fn remove(self) -> anyhow::Result<()> {
        let (mariadb, kafka) = tokio::join!(self.mariadb.rm(), self.kafka.rm());
        mariadb.context("remove the MariaDB container")?;
        kafka.context("remove the broker container")
    }
}

async fn start_mariadb(image: &str) -> anyhow::Result<(ContainerAsync<Mariadb>, String)> {
    let (name, tag) = name_and_tag(image);
    // The module's image: root without a password, ready once the server
    // (not the entrypoint's init server, which listens on no port) logs
    // `port: 3306`.
    let container = Mariadb::default()
        .with_name(name)
        .with_tag(tag)
        .with_env_var("MARIADB_DATABASE", "payment")
        .with_label(LABEL, owner())
        .with_startup_timeout(Duration::from_secs(120))
        .start()
        .await
        .with_context(|| format!("start MariaDB from {image}"))?;
    let port = container
        .get_host_port_ipv4(3306.tcp())
        .await
        .context("MariaDB's host port")?;
    Ok((container, format!("mysql://root@127.0.0.1:{port}/payment")))
}

async fn start_kafka(image: &str) -> anyhow::Result<(ContainerAsync<GenericImage>, String)> {
    // A broker advertises one fixed address to its clients, and Tansu only
    // one at all, so the host port is the container's port: P -> P.
    let port = free_port().context("a free host port for the broker")?;
    let (name, tag) = name_and_tag(image);
    let container = GenericImage::new(name, tag)
        .with_exposed_port(ContainerPort::Tcp(port))
        .with_mapped_port(port, ContainerPort::Tcp(port))
        .with_label(LABEL, owner())
        .with_env_var("KAFKA_NODE_ID", "1")
        .with_env_var("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env_var(
            "KAFKA_LISTENERS",
            format!("PLAINTEXT://:{port},CONTROLLER://:9093"),
        )
        .with_env_var(
            "KAFKA_ADVERTISED_LISTENERS",
            format!("PLAINTEXT://127.0.0.1:{port}"),
        )
        .with_env_var("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
        .with_env_var("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env_var(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        )
        .with_env_var("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env_var("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_startup_timeout(Duration::from_secs(120))
        .start()
        .await
        .with_context(|| format!("start the broker from {image}"))?;
    let brokers = format!("127.0.0.1:{port}");
    // Ready means answering the Kafka protocol: the same test for any image
    // (their log lines differ).
    if let Err(error) = wait_for_broker(&brokers, Duration::from_secs(120)).await {
        let _ = container.rm().await;
        return Err(error);
    }
    Ok((container, brokers))
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_for_broker(brokers: &str, within: Duration) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("a client for the broker")?;
    let deadline = Instant::now() + within;
    tokio::task::spawn_blocking(move || loop {
        let problem = match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(metadata) if !metadata.brokers().is_empty() => return Ok(()),
            Ok(_) => "it lists no broker".to_owned(),
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("the broker does not answer within {within:?}: {problem}");
        }
        std::thread::sleep(Duration::from_millis(200));
    })
    .await
    .context("wait for the broker")?
}

#[cfg(test)]
mod tests {
    use super::name_and_tag;

    #[test]
    fn an_image_splits_at_its_tag_not_at_a_registry_port() {
        assert_eq!(name_and_tag("mariadb:11.4"), ("mariadb", "11.4"));
        assert_eq!(name_and_tag("local/tansu:0.1.2"), ("local/tansu", "0.1.2"));
        assert_eq!(
            name_and_tag("registry:5000/apache/kafka:4.3.0"),
            ("registry:5000/apache/kafka", "4.3.0")
        );
        assert_eq!(
            name_and_tag("registry:5000/mariadb"),
            ("registry:5000/mariadb", "latest")
        );
        assert_eq!(name_and_tag("mariadb"), ("mariadb", "latest"));
    }
}

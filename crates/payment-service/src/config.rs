//! Typed, layered configuration: defaults < TOML file < `PAYMENT__…` env.
//!
//! The environment names are a public contract (operators and black-box
//! tests set them): `PAYMENT__HTTP__ADDR`, `PAYMENT__DATABASE__URL`,
//! `PAYMENT__KAFKA__BROKERS`, `PAYMENT__KAFKA__GROUP_ID`, `PAYMENT__GATEWAY`,
//! `PAYMENT__TOSS__BASE_URL`, `PAYMENT__TOSS__SECRET_KEY`,
//! `PAYMENT__OUTBOX__RELAY`, `PAYMENT__TOPICS__<NAME>`, `PAYMENT__HTTP__OPS_ADDR`,
//! `PAYMENT__AUTH__HS256_SECRET`, `PAYMENT__AUTH__PUBLIC_KEYS_FILE`,
//! `PAYMENT__AUTH__ISSUER`, `PAYMENT__AUTH__AUDIENCE`,
//! `PAYMENT__AUTH__DISABLED`; a double underscore
//! separates levels. Secrets are [`SecretString`]s: `Debug` prints
//! `[REDACTED]`, and only the adapter that needs one exposes it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format as _, Toml};
use figment::Figment;
use payment_infra::fake_gateway::FakeSettings;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

/// Why the configuration is unusable; the service refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub gateway: GatewayKind,
    #[serde(default)]
    pub toss: TossConfig,
    #[serde(default)]
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub topics: Topics,
    #[serde(default)]
    pub log: LogConfig,
    /// The network-free gateway (`gateway = fake`).
    #[serde(default)]
    pub fake: FakeSettings,
    #[serde(default)]
    pub reconciler: ReconcilerConfig,
    #[serde(default)]
    pub saga: SagaConfig,
    #[serde(default)]
    pub expiry: ExpiryConfig,
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
    #[serde(default)]
    pub inbox: InboxConfig,
}

/// Inbox records (messages already handled) are kept this long, then
/// pruned (`PAYMENT__INBOX__RETENTION_HOURS`). A message redelivered after
/// its record is gone would be applied again: keep them at least as long as
/// the inbound topics keep messages (Kafka's default: 7 days).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InboxConfig {
    pub retention_hours: u64,
    pub prune_interval_secs: u64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            retention_hours: 7 * 24,
            prune_interval_secs: 3_600,
        }
    }
}

/// HTTP `Idempotency-Key`s are kept this long, then pruned.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IdempotencyConfig {
    pub retention_hours: u64,
    pub prune_interval_secs: u64,
    /// A request holding a key longer than this is presumed dead; the next
    /// request with the same key and body takes the key over.
    pub in_flight_lease_secs: u64,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            retention_hours: 24,
            prune_interval_secs: 3_600,
            in_flight_lease_secs: 120,
        }
    }
}

/// The booking saga's participant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SagaConfig {
    /// How often bookings whose payment was settled elsewhere (by the
    /// reconciler) are answered.
    pub answer_interval_ms: u64,
    /// Bookings answered per round.
    pub answer_batch: u32,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            answer_interval_ms: 1_000,
            answer_batch: 100,
        }
    }
}

/// The background resolution of approvals whose outcome is unknown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ReconcilerConfig {
    /// How often stale IN_PROGRESS payments are examined.
    pub interval_ms: u64,
    /// A payment is left alone until it has been IN_PROGRESS this long.
    pub min_age_ms: u64,
    pub first_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Toss accepts a confirm this long after the customer's authentication.
    pub confirm_window_secs: u64,
    /// Due transactions selected per query.
    pub batch: u32,
    /// Payments resolved at once (each holds a pooled connection or a PG
    /// request at a time: keep it below `database.max_connections`).
    pub concurrency: usize,
    /// How long Toss replays an idempotency key's first answer (15 days):
    /// a cancel re-sent after that would be a second refund.
    pub cancel_idempotency_window_secs: u64,
    /// Re-sending a cancel stops at least this long before that window
    /// could have passed.
    pub cancel_safety_margin_secs: u64,
    /// An unknown cancel is re-sent with its key only this long; then Toss
    /// is only looked at.
    pub cancel_resend_for_secs: u64,
    /// An unknown cancel Toss shows nothing of is released after this long
    /// (no request of ours in flight since `cancel_resend_for_secs`); one
    /// Toss's view cannot settle is escalated to an operator.
    pub cancel_settle_within_secs: u64,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval_ms: 5_000,
            min_age_ms: 30_000,
            first_backoff_ms: 5_000,
            max_backoff_ms: 300_000,
            confirm_window_secs: 600,
            batch: 500,
            // docs/measurements.md: a backlog of 10,000 unknowns drained at
            // >= 500 settled/s with 16 (not with 8).
            concurrency: 16,
            cancel_idempotency_window_secs: 15 * 24 * 3_600,
            cancel_safety_margin_secs: 24 * 3_600,
            cancel_resend_for_secs: 600,
            cancel_settle_within_secs: 3_600,
        }
    }
}

/// READY payments nobody confirmed become EXPIRED after `ttl_secs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ExpiryConfig {
    pub ttl_secs: u64,
    pub interval_ms: u64,
    /// Payments expired per round (`PAYMENT__EXPIRY__BATCH`); one that
    /// cannot be expired is postponed in the database, never selected again
    /// before the rest.
    pub batch: u32,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 30 * 60,
            interval_ms: 30_000,
            batch: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Where to listen; port 0 picks a free port (tests).
    pub addr: SocketAddr,
    /// When set, `/health/*` and `/metrics` are served here only, never with
    /// the public API.
    pub ops_addr: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 8087)),
            ops_addr: None,
        }
    }
}

/// How callers of `/api/v1/**` are authenticated (bearer JWTs). `serve`
/// refuses to start without a key unless `disabled` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// HS256 secret (development and tests; at least 32 bytes).
    pub hs256_secret: Option<SecretString>,
    /// RS256/ES256 public keys: a PEM file (one or more `PUBLIC KEY`
    /// blocks) or a JWKS file (read once at start-up).
    pub public_keys_file: Option<PathBuf>,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Required `aud` when set.
    pub audience: Option<String>,
    /// Development only: no token needed, every caller is an admin. Never
    /// the default; start-up logs a warning.
    pub disabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    /// `mysql://user:password@host:port/database` — a secret: it may carry a password.
    pub url: SecretString,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
}

/// Room for the reconciler's default concurrency (16) and, beside it, the
/// consumers, the relay, HTTP requests and the other background jobs.
const fn default_max_connections() -> u32 {
    32
}

const fn default_acquire_timeout_ms() -> u64 {
    3_000
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    #[serde(default = "default_group_id")]
    pub group_id: String,
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// A dead consumer's partitions move after this; joining takes about half.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Create missing topics (and their `.dlq`) at start-up. Turn off where
    /// topics are provisioned by the platform.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    #[serde(default = "default_topic_partitions")]
    pub topic_partitions: i32,
    #[serde(default = "default_topic_replication")]
    pub topic_replication: i32,
    /// librdkafka debug contexts (e.g. `cgrp,fetch`), logged at debug level.
    #[serde(default)]
    pub debug: Option<String>,
}

const fn default_session_timeout_ms() -> u64 {
    10_000
}

const fn default_true() -> bool {
    true
}

const fn default_topic_partitions() -> i32 {
    3
}

const fn default_topic_replication() -> i32 {
    1
}

fn default_group_id() -> String {
    "payment-service-group".into()
}

fn default_client_id() -> String {
    "payment-service".into()
}

/// Which payment gateway the service talks to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    #[default]
    Toss,
    /// No network: approve, decline, seeded random, "unknown then
    /// resolved", forced outcomes, delays, a ledger (the booking saga, local
    /// runs, load tests); see `fake`.
    Fake,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TossConfig {
    pub base_url: String,
    /// Toss secret key (`test_sk_…` / `live_sk_…`); required when `gateway = toss`.
    pub secret_key: Option<SecretString>,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    /// Where the browser goes after a successful widget flow (JSON if unset).
    pub success_redirect_url: Option<String>,
    /// Where the browser goes after a failed widget flow (JSON if unset).
    pub fail_redirect_url: Option<String>,
}

impl Default for TossConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.tosspayments.com".into(),
            secret_key: None,
            connect_timeout_ms: 3_000,
            read_timeout_ms: 30_000,
            success_redirect_url: None,
            fail_redirect_url: None,
        }
    }
}

/// Who moves outbox rows to Kafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxRelay {
    /// The service's own relay.
    #[default]
    Embedded,
    /// Debezium's Outbox Event Router tails the table; the service only writes.
    Debezium,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    pub relay: OutboxRelay,
    /// Rows the embedded relay claims per round.
    pub batch_size: u32,
    /// The embedded relay's fallback poll (local commits wake it at once).
    pub poll_interval_ms: u64,
    /// Debezium mode: rows older than this are deleted
    /// (`PAYMENT__OUTBOX__RETENTION_SECS`). Debezium captures them from the
    /// binlog, and `outbox replay` reads `outbox_log`: this only bounds
    /// what `outbox stats` shows.
    pub retention_secs: u64,
    /// How often old rows are pruned (the outbox in debezium mode, and
    /// `outbox_log` in both).
    pub prune_interval_secs: u64,
    /// Rows deleted per statement by those prunes.
    pub prune_batch: u32,
    /// `outbox_log` rows (what `outbox replay` can republish) older than
    /// this are deleted, in both modes (`PAYMENT__OUTBOX__LOG_RETENTION_HOURS`).
    pub log_retention_hours: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            relay: OutboxRelay::default(),
            batch_size: 200,
            poll_interval_ms: 500,
            retention_secs: 3_600,
            prune_interval_secs: 60,
            prune_batch: 1_000,
            log_retention_hours: 7 * 24,
        }
    }
}

/// Topic names (docs/architecture.md, "Event contracts"), each overridable by `PAYMENT__TOPICS__<NAME>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Topics {
    pub order_placed: String,
    pub order_refund_requested: String,
    pub saga_request_payment: String,
    pub payment_created: String,
    pub payment_completed: String,
    pub payment_failed: String,
    pub payment_canceled: String,
    /// A refund the PG finally refused, or one whose payment was never
    /// approved (`PAYMENT__TOPICS__PAYMENT_CANCEL_FAILED`).
    pub payment_cancel_failed: String,
    pub saga_payment_initiated: String,
    pub saga_payment_completed: String,
    pub saga_payment_failed: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            order_placed: "koosco.commerce.order.placed".into(),
            order_refund_requested: "koosco.commerce.order.refund.requested".into(),
            saga_request_payment: "saga.request_payment".into(),
            payment_created: "koosco.commerce.payment.created".into(),
            payment_completed: "koosco.commerce.payment.completed".into(),
            payment_failed: "koosco.commerce.payment.failed".into(),
            payment_canceled: "koosco.commerce.payment.canceled".into(),
            payment_cancel_failed: "koosco.commerce.payment.cancel.failed".into(),
            saga_payment_initiated: "payment.initiated".into(),
            saga_payment_completed: "payment.completed".into(),
            saga_payment_failed: "payment.failed".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `tracing` filter directives; `RUST_LOG` wins when set.
    pub filter: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info,sqlx=warn,rdkafka=warn".into(),
            format: LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (production).
    #[default]
    Json,
    /// Human-readable (a terminal).
    Pretty,
}

impl Config {
    /// Loads defaults < `file` (if given) < the `PAYMENT__…` environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the missing or malformed setting.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(figment.merge(Env::prefixed("PAYMENT__").split("__")))
    }

    /// Extracts and validates a configuration from any provider stack.
    ///
    /// # Errors
    /// [`ConfigError`] naming the missing or malformed setting.
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Self = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| Err(ConfigError::Invalid(message.to_owned()));
        if !self.database.url.expose_secret().starts_with("mysql://") {
            return invalid("database.url (PAYMENT__DATABASE__URL) must be a mysql:// URL");
        }
        if self.kafka.brokers.trim().is_empty() {
            return invalid("kafka.brokers (PAYMENT__KAFKA__BROKERS) must not be empty");
        }
        if self.gateway == GatewayKind::Toss {
            match &self.toss.secret_key {
                Some(key) if !key.expose_secret().trim().is_empty() => {}
                _ => {
                    return invalid(
                        "toss.secret_key (PAYMENT__TOSS__SECRET_KEY) is required when gateway = toss",
                    );
                }
            }
            if !self.toss.base_url.starts_with("http://")
                && !self.toss.base_url.starts_with("https://")
            {
                return invalid("toss.base_url (PAYMENT__TOSS__BASE_URL) must be an http(s) URL");
            }
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.fake.success_rate) {
            return invalid(
                "fake.success_rate (PAYMENT__FAKE__SUCCESS_RATE) must be between 0 and 1",
            );
        }
        if self.outbox.batch_size == 0 {
            return invalid("outbox.batch_size must be at least 1");
        }
        if self.outbox.prune_interval_secs == 0
            || self.outbox.prune_batch == 0
            || self.outbox.log_retention_hours == 0
        {
            return invalid(
                "outbox.prune_interval_secs, outbox.prune_batch and outbox.log_retention_hours must be at least 1",
            );
        }
        if self.expiry.batch == 0 {
            return invalid("expiry.batch must be at least 1");
        }
        if self.reconciler.batch == 0 || self.reconciler.concurrency == 0 {
            return invalid("reconciler.batch and reconciler.concurrency must be at least 1");
        }
        if self.reconciler.concurrency >= self.database.max_connections as usize {
            return invalid(
                "reconciler.concurrency must be below database.max_connections (each of its tasks holds a pooled connection; the consumers, the relay and HTTP need some too)",
            );
        }
        if self.inbox.prune_interval_secs == 0 {
            return invalid("inbox.prune_interval_secs must be at least 1");
        }
        let reconciling = &self.reconciler;
        if reconciling.cancel_safety_margin_secs >= reconciling.cancel_idempotency_window_secs {
            return invalid(
                "reconciler.cancel_safety_margin_secs must be shorter than reconciler.cancel_idempotency_window_secs",
            );
        }
        if reconciling.cancel_settle_within_secs <= reconciling.cancel_resend_for_secs {
            return invalid(
                "reconciler.cancel_settle_within_secs must be longer than reconciler.cancel_resend_for_secs (a cancel is released only once no re-send can be in flight)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
// figment's `Jail` closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use payment_infra::fake_gateway::FakeMode;

    use super::*;

    /// The tests run in an environment that may carry real `PAYMENT__…`
    /// settings (the local stack's): start each one from none.
    fn set_required(jail: &mut Jail) {
        jail.clear_env();
        jail.set_env(
            "PAYMENT__DATABASE__URL",
            "mysql://app:s3cret@127.0.0.1:3306/payment",
        );
        jail.set_env("PAYMENT__KAFKA__BROKERS", "127.0.0.1:19092");
        jail.set_env("PAYMENT__GATEWAY", "fake");
    }

    #[test]
    fn defaults_apply_when_only_the_required_settings_are_given() {
        Jail::expect_with(|jail| {
            set_required(jail);
            let config = Config::load(None).expect("valid config");
            assert_eq!(config.http.addr.to_string(), "0.0.0.0:8087");
            assert_eq!(config.kafka.group_id, "payment-service-group");
            assert_eq!(config.topics.order_placed, "koosco.commerce.order.placed");
            assert_eq!(config.toss.base_url, "https://api.tosspayments.com");
            assert_eq!(config.outbox.relay, OutboxRelay::Embedded);
            Ok(())
        });
    }

    #[test]
    fn the_reconciler_defaults_drain_a_backlog_as_fast_as_measured_with_room_in_the_pool() {
        Jail::expect_with(|jail| {
            set_required(jail);
            let config = Config::load(None).expect("valid config");
            // docs/measurements.md: >= 500 settled/s needed concurrency 16
            // (8 gave less), on a pool of its own of 18.
            assert!(config.reconciler.concurrency >= 16);
            let others = 8; // consumers, relay, HTTP, expiry, saga, pruners
            assert!(
                config.database.max_connections as usize >= config.reconciler.concurrency + others,
                "{} connections for a reconciler of {}",
                config.database.max_connections,
                config.reconciler.concurrency
            );
            Ok(())
        });
    }

    #[test]
    fn a_reconciler_that_would_take_the_whole_pool_is_refused() {
        Jail::expect_with(|jail| {
            set_required(jail);
            jail.set_env("PAYMENT__DATABASE__MAX_CONNECTIONS", "10");
            jail.set_env("PAYMENT__RECONCILER__CONCURRENCY", "10");
            let error = Config::load(None).expect_err("must fail").to_string();
            assert!(error.contains("reconciler.concurrency"), "{error}");
            jail.set_env("PAYMENT__RECONCILER__CONCURRENCY", "9");
            Config::load(None).expect("one connection left for the rest");
            Ok(())
        });
    }

    #[test]
    fn the_environment_beats_the_file_which_beats_the_defaults() {
        Jail::expect_with(|jail| {
            set_required(jail);
            jail.create_file(
                "payment.toml",
                r#"
                [http]
                addr = "127.0.0.1:9000"
                [kafka]
                group_id = "from-file"
                [topics]
                payment_created = "file.created"
                "#,
            )?;
            jail.set_env("PAYMENT__KAFKA__GROUP_ID", "from-env");
            jail.set_env("PAYMENT__TOPICS__PAYMENT_COMPLETED", "env.completed");
            jail.set_env("PAYMENT__OUTBOX__RELAY", "debezium");
            let config = Config::load(Some(Path::new("payment.toml"))).expect("valid config");
            assert_eq!(config.http.addr.to_string(), "127.0.0.1:9000");
            assert_eq!(config.kafka.group_id, "from-env");
            assert_eq!(config.topics.payment_created, "file.created");
            assert_eq!(config.topics.payment_completed, "env.completed");
            assert_eq!(config.outbox.relay, OutboxRelay::Debezium);
            Ok(())
        });
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        Jail::expect_with(|jail| {
            set_required(jail);
            jail.set_env("PAYMENT__TOSS__SECRET_KEY", "test_sk_not_a_real_key");
            let config = Config::load(None).expect("valid config");
            let debug = format!("{config:?}");
            assert!(!debug.contains("s3cret"), "{debug}");
            assert!(!debug.contains("not_a_real_key"), "{debug}");
            assert!(debug.contains("REDACTED"), "{debug}");
            Ok(())
        });
    }

    #[test]
    fn auth_settings_are_read_and_the_secret_is_masked() {
        Jail::expect_with(|jail| {
            set_required(jail);
            jail.set_env("PAYMENT__AUTH__HS256_SECRET", "hs256-not-a-real-secret");
            jail.set_env("PAYMENT__AUTH__PUBLIC_KEYS_FILE", "keys.jwks");
            jail.set_env("PAYMENT__AUTH__ISSUER", "https://idp");
            jail.set_env("PAYMENT__AUTH__AUDIENCE", "payments");
            jail.set_env("PAYMENT__HTTP__OPS_ADDR", "127.0.0.1:9100");
            let config = Config::load(None).expect("valid config");
            assert_eq!(
                config.auth.public_keys_file.as_deref(),
                Some(Path::new("keys.jwks"))
            );
            assert_eq!(config.auth.issuer.as_deref(), Some("https://idp"));
            assert_eq!(config.auth.audience.as_deref(), Some("payments"));
            assert!(!config.auth.disabled, "auth is on unless disabled");
            assert_eq!(
                config.http.ops_addr.map(|a| a.to_string()).as_deref(),
                Some("127.0.0.1:9100")
            );
            let debug = format!("{config:?}");
            assert!(!debug.contains("not-a-real-secret"), "{debug}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_database_url_is_named() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("PAYMENT__KAFKA__BROKERS", "127.0.0.1:19092");
            let error = Config::load(None).expect_err("must fail").to_string();
            assert!(error.contains("missing field `database`"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn toss_needs_a_secret_key() {
        Jail::expect_with(|jail| {
            set_required(jail);
            jail.set_env("PAYMENT__GATEWAY", "toss");
            let error = Config::load(None).expect_err("must fail").to_string();
            assert!(error.contains("PAYMENT__TOSS__SECRET_KEY"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn malformed_values_are_refused_with_their_key() {
        Jail::expect_with(|jail| {
            set_required(jail);
            jail.set_env("PAYMENT__HTTP__ADDR", "not-an-address");
            let error = Config::load(None).expect_err("must fail").to_string();
            assert!(error.contains("HTTP.ADDR"), "{error}");
            jail.set_env("PAYMENT__HTTP__ADDR", "127.0.0.1:0");
            jail.set_env("PAYMENT__GATEWAY", "paypal");
            let error = Config::load(None).expect_err("must fail").to_string();
            assert!(error.contains("GATEWAY"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn the_one_fake_gateway_is_configured_under_fake() {
        Jail::expect_with(|jail| {
            set_required(jail);
            jail.set_env("PAYMENT__FAKE__MODE", "unknown");
            jail.set_env("PAYMENT__FAKE__SUCCESS_RATE", "0.7");
            jail.set_env("PAYMENT__FAKE__SEED", "20261202");
            jail.set_env("PAYMENT__FAKE__DELAY_MS", "5");
            jail.set_env("PAYMENT__FAKE__REPLY_DELAY_MS", "6");
            jail.set_env("PAYMENT__FAKE__UNKNOWN_LOOKUPS", "2");
            jail.set_env("PAYMENT__FAKE__LEDGER", "calls.jsonl");
            let config = Config::load(None).expect("valid config");
            assert_eq!(config.gateway, GatewayKind::Fake);
            let fake = &config.fake;
            assert_eq!(fake.mode, FakeMode::Unknown);
            assert!((fake.success_rate - 0.7).abs() < f64::EPSILON);
            assert_eq!(fake.seed, 20_261_202);
            assert_eq!((fake.delay_ms, fake.reply_delay_ms), (5, 6));
            assert_eq!(fake.unknown_lookups, 2);
            assert_eq!(fake.ledger.as_deref(), Some(Path::new("calls.jsonl")));
            jail.set_env("PAYMENT__FAKE__SUCCESS_RATE", "1.5");
            let error = Config::load(None).expect_err("must fail").to_string();
            assert!(error.contains("PAYMENT__FAKE__SUCCESS_RATE"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn there_is_no_second_fake_gateway() {
        Jail::expect_with(|jail| {
            set_required(jail);
            jail.set_env("PAYMENT__GATEWAY", "processor");
            let error = Config::load(None).expect_err("must fail").to_string();
            assert!(error.contains("GATEWAY"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn a_named_config_file_must_exist() {
        Jail::expect_with(|jail| {
            set_required(jail);
            let error = Config::load(Some(Path::new("missing.toml")))
                .expect_err("must fail")
                .to_string();
            assert!(error.contains("missing.toml"), "{error}");
            Ok(())
        });
    }
}

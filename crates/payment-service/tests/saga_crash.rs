//! Crash safety of the booking saga, with the real binary killed by
//! SIGKILL: a payment initiated but not executed when the process dies is
//! executed after a restart, and the processor is called once per payment
//! whether the process died before the call or right after it. The fake
//! gateway's ledger (a file) is what it did; it survives the kill, as a
//! real processor's books would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use payment_infra::kafka::KafkaSettings;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::Message as _;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{ConnectOptions as _, MySqlPool};

const BIN: &str = env!("CARGO_BIN_EXE_payment-service");

fn kafka() -> KafkaSettings {
    KafkaSettings {
        brokers: std::env::var("PAYMENT__KAFKA__BROKERS")
            .unwrap_or_else(|_| "127.0.0.1:19092".into()),
        client_id: "saga-crash-test".into(),
        group_id: "saga-crash-test".into(),
        session_timeout: Duration::from_secs(3),
        debug: None,
    }
}

/// One test's topics and processor ledger.
struct World {
    run: String,
    ledger: PathBuf,
}

impl World {
    async fn new() -> Self {
        let world = Self {
            run: format!("crash.{}", uuid::Uuid::now_v7().simple()),
            ledger: std::env::temp_dir().join(format!(
                "saga-crash-{}.jsonl",
                uuid::Uuid::now_v7().simple()
            )),
        };
        let topics: Vec<String> = ["request", "request.dlq", "initiated", "completed", "failed"]
            .iter()
            .map(|t| world.topic(t))
            .collect();
        kafka().ensure_topics(&topics, 3, 1).await.unwrap();
        world
    }

    fn topic(&self, name: &str) -> String {
        format!("it.{}.{name}", self.run)
    }

    /// The service, its processor answering after `delay_ms` /
    /// `reply_delay_ms`.
    fn start(&self, db: &MySqlConnectOptions, delay_ms: u64, reply_delay_ms: u64) -> Child {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PAYMENT__DATABASE__URL", db.to_url_lossy().to_string())
            .env("PAYMENT__KAFKA__BROKERS", kafka().brokers)
            .env("PAYMENT__KAFKA__GROUP_ID", format!("{}.group", self.run))
            .env("PAYMENT__KAFKA__SESSION_TIMEOUT_MS", "3000")
            .env("PAYMENT__HTTP__ADDR", format!("127.0.0.1:{port}"))
            .env("PAYMENT__GATEWAY", "fake")
            .env("PAYMENT__AUTH__DISABLED", "true")
            .env("PAYMENT__FAKE__LEDGER", &self.ledger)
            .env("PAYMENT__FAKE__DELAY_MS", delay_ms.to_string())
            .env("PAYMENT__FAKE__REPLY_DELAY_MS", reply_delay_ms.to_string())
            .env(
                "PAYMENT__TOPICS__SAGA_REQUEST_PAYMENT",
                self.topic("request"),
            )
            .env(
                "PAYMENT__TOPICS__SAGA_PAYMENT_INITIATED",
                self.topic("initiated"),
            )
            .env(
                "PAYMENT__TOPICS__SAGA_PAYMENT_COMPLETED",
                self.topic("completed"),
            )
            .env("PAYMENT__TOPICS__SAGA_PAYMENT_FAILED", self.topic("failed"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    async fn request(&self, booking: &str) {
        let payload = serde_json::json!({
            "id": format!("req-{booking}"), "source": "/booking-saga", "specversion": "1.0",
            "type": "RequestPayment", "correlationid": "saga-crash",
            "data": { "sagaId": "saga-crash", "bookingId": booking, "totalPrice": 42000, "currency": "KRW" },
        })
        .to_string();
        kafka()
            .producer()
            .unwrap()
            .send(
                FutureRecord::to(&self.topic("request"))
                    .key(booking)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(error, _)| error)
            .unwrap();
    }

    fn calls(&self) -> usize {
        calls(&self.ledger)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ledger);
    }
}

fn calls(ledger: &Path) -> usize {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .count()
}

fn kill(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap();
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status(pool: &MySqlPool) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM payments")
        .fetch_optional(pool)
        .await
        .unwrap_or_default()
}

async fn answered(pool: &MySqlPool) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM saga_bookings WHERE answered_at IS NOT NULL")
        .fetch_one(pool)
        .await
        .is_ok_and(|n| n == 1)
}

/// The messages of `topic` (from the start), read until `expected` came
/// and two seconds more passed, or 30 seconds (10 when none is expected).
async fn messages(topic: &str, expected: usize) -> Vec<serde_json::Value> {
    let group = format!("reader-{}", uuid::Uuid::now_v7().simple());
    let consumer: StreamConsumer = kafka()
        .client_config()
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut received = Vec::new();
    // Nothing expected: read long enough to have joined and seen any.
    let patience = if expected == 0 { 10 } else { 30 };
    let deadline = Instant::now() + Duration::from_secs(patience);
    let mut enough_at = None;
    while Instant::now() < deadline {
        if enough_at.is_some_and(|at: Instant| at.elapsed() > Duration::from_secs(2)) {
            break;
        }
        if let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            received.push(serde_json::from_slice(message.payload().unwrap()).unwrap());
        }
        if expected > 0 && received.len() >= expected && enough_at.is_none() {
            enough_at = Some(Instant::now());
        }
    }
    received
}

/// How many distinct events (by CloudEvent id) `messages` holds.
fn distinct(messages: &[serde_json::Value]) -> usize {
    messages
        .iter()
        .map(|m| m["id"].to_string())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Restarts the service with a prompt processor and checks the payment is
/// DONE, the processor called once in all, and the saga told once: one
/// `payment.initiated`, one `payment.completed` (by event id), none failed.
async fn restart_and_check(world: &World, db: &MySqlConnectOptions, pool: &MySqlPool) {
    let mut second = world.start(db, 0, 0);
    wait_for(
        "the booking answered",
        Duration::from_secs(60),
        async || answered(pool).await,
    )
    .await;
    assert_eq!(status(pool).await.as_deref(), Some("DONE"));
    assert_eq!(
        world.calls(),
        1,
        "the processor called once in all: {}",
        std::fs::read_to_string(&world.ledger).unwrap_or_default()
    );
    // The relay is at-least-once: a kill between its publish and its delete
    // sends the same event (same id) again. One event each, by id.
    assert_eq!(distinct(&messages(&world.topic("initiated"), 1).await), 1);
    let completed = messages(&world.topic("completed"), 1).await;
    assert_eq!(distinct(&completed), 1, "{completed:?}");
    assert_eq!(completed[0]["correlationid"], "saga-crash");
    assert!(messages(&world.topic("failed"), 0).await.is_empty());
    kill(&mut second);
}

#[sqlx::test(migrations = false)]
async fn killed_between_initiated_and_the_call_it_is_executed_once_after_restart(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let world = World::new().await;
    // The processor sits on the request: the call has not reached it.
    let mut first = world.start(&db, 60_000, 0);
    world.request("booking-crash-1").await;
    let pool = pool_options.connect_with(db.clone()).await.unwrap();
    wait_for(
        "payment.initiated committed",
        Duration::from_secs(60),
        async || status(&pool).await.as_deref() == Some("IN_PROGRESS"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(&mut first);
    assert_eq!(world.calls(), 0, "the processor never got the call");
    restart_and_check(&world, &db, &pool).await;
}

#[sqlx::test(migrations = false)]
async fn killed_right_after_the_call_it_is_settled_without_calling_again(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let world = World::new().await;
    // The processor did the work; its answer never arrives.
    let mut first = world.start(&db, 0, 60_000);
    world.request("booking-crash-2").await;
    let pool = pool_options.connect_with(db.clone()).await.unwrap();
    wait_for(
        "the processor called",
        Duration::from_secs(60),
        async || world.calls() == 1,
    )
    .await;
    kill(&mut first);
    assert_eq!(status(&pool).await.as_deref(), Some("IN_PROGRESS"));
    assert_eq!(world.calls(), 1, "the processor did it");
    restart_and_check(&world, &db, &pool).await;
}

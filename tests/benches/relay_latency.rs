//! Commit → consumer latency of the embedded outbox relay, woken by local
//! commits vs. left to its fallback poll, side by side in one run; then how
//! fast the relay drains a backlog (rows/s) at two claim sizes.
//!
//! Needs the local stack: `scripts/stack.sh up && source .stack/env &&
//! cargo bench -p payment-e2e --bench relay_latency`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use payment_application::{Commit, OutboxMessage, PaymentRepository as _};
use payment_e2e::kafka;
use payment_infra::mariadb::{self, MariaDbPaymentRepository};
use payment_infra::outbox::{OutboxRelay, RelaySettings};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::Message as _;
use serde_json::json;
use sqlx::MySqlPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SAMPLES: usize = 200;
const POLL: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (source .stack/env)");
    let database = format!("bench_{}", Uuid::now_v7().simple());
    let admin = MySqlPool::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
    let pool = MySqlPool::connect(&url).await.unwrap();
    mariadb::migrate(&pool).await.unwrap();

    println!("commit → consumer latency, {SAMPLES} events each, fallback poll {POLL:?}");
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9}",
        "relay", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let woken = measure(&pool, true).await;
    let polled = measure(&pool, false).await;
    for (name, samples) in [("woken by commit", &woken), ("poll only", &polled)] {
        println!(
            "{name:<22} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            percentile(samples, 0.5),
            percentile(samples, 0.9),
            percentile(samples, 0.99),
            percentile(samples, 1.0)
        );
    }
    println!(
        "ratio poll-only / woken: p50 {:.1}×, p90 {:.1}×",
        percentile(&polled, 0.5) / percentile(&woken, 0.5),
        percentile(&polled, 0.9) / percentile(&woken, 0.9)
    );

    let rows = std::env::var("BENCH_RELAY_ROWS").map_or(20_000, |v| v.parse().unwrap());
    println!("relay drain of a {rows}-row backlog (two topics, two rows per payment)");
    for batch_size in [200, 1_000] {
        let per_s = drain(&pool, rows, batch_size).await;
        println!("batch {batch_size:>5}: {per_s:>8.0} rows/s");
    }

    pool.close().await;
    sqlx::query(&format!("DROP DATABASE {database}"))
        .execute(&admin)
        .await
        .unwrap();
}

/// Commits one outbox row at a time and times its arrival at a consumer.
async fn measure(pool: &MySqlPool, wake_on_commit: bool) -> Vec<f64> {
    let topic = kafka::unique_topic("bench.relay");
    kafka::create_topics(std::slice::from_ref(&topic)).await;
    let consumer = joined_consumer(&topic).await;

    let signal = Arc::new(Notify::new());
    let repository = if wake_on_commit {
        MariaDbPaymentRepository::new(pool.clone()).notifying(Arc::clone(&signal))
    } else {
        MariaDbPaymentRepository::new(pool.clone())
    };
    let relay = OutboxRelay::new(
        pool.clone(),
        kafka::producer(),
        RelaySettings {
            batch_size: 200,
            poll_interval: POLL,
        },
        signal,
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.run(stop.clone()));

    let mut samples = Vec::with_capacity(SAMPLES);
    for n in 0..SAMPLES {
        let id = Uuid::now_v7();
        let message = OutboxMessage {
            id,
            topic: topic.clone(),
            key: format!("payment-{}", n % 7),
            event_type: "BenchEvent".into(),
            payload: json!({ "id": id }),
            traceparent: None,
            created_at: Utc::now(),
        };
        let committed = Instant::now();
        repository
            .commit(Commit {
                outbox: vec![message],
                ..Commit::default()
            })
            .await
            .unwrap();
        loop {
            let received = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
                .await
                .expect("event arrives")
                .unwrap();
            let payload: serde_json::Value =
                serde_json::from_slice(received.payload().unwrap()).unwrap();
            if payload["id"] == json!(id) {
                break;
            }
        }
        samples.push(committed.elapsed().as_secs_f64() * 1_000.0);
    }
    stop.cancel();
    running.await.unwrap();
    samples
}

/// Writes `rows` outbox rows (each payment's created event, then each one's
/// completed event, on two topics) and answers the rows/s of draining them
/// with `relay_once`.
async fn drain(pool: &MySqlPool, rows: usize, batch_size: u32) -> f64 {
    let topics = [
        kafka::unique_topic("bench.drain.created"),
        kafka::unique_topic("bench.drain.completed"),
    ];
    kafka::create_topics(&topics).await;
    let repository = MariaDbPaymentRepository::new(pool.clone());
    let payments = rows.div_ceil(2);
    let messages: Vec<OutboxMessage> = (0..rows)
        .map(|n| {
            let id = Uuid::now_v7();
            OutboxMessage {
                id,
                topic: topics[n / payments].clone(),
                key: format!("payment-{}", n % payments),
                event_type: "BenchEvent".into(),
                payload: json!({ "id": id, "n": n }),
                traceparent: None,
                created_at: Utc::now(),
            }
        })
        .collect();
    for chunk in messages.chunks(1_000) {
        repository
            .commit(Commit {
                outbox: chunk.to_vec(),
                ..Commit::default()
            })
            .await
            .unwrap();
    }
    let relay = OutboxRelay::new(
        pool.clone(),
        kafka::producer(),
        RelaySettings {
            batch_size,
            poll_interval: POLL,
        },
        Arc::new(Notify::new()),
    );
    let started = Instant::now();
    let mut published = 0;
    while published < rows {
        let n = relay.relay_once().await.unwrap();
        assert!(n > 0, "the relay stalled at {published} of {rows}");
        published += n;
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

async fn joined_consumer(topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", format!("bench-{}", Uuid::now_v7().simple()))
        .set("auto.offset.reset", "latest")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    // Wait for the partition assignment, so join time is not measured.
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "consumer never joined");
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
    consumer
}

fn kafka_brokers() -> String {
    payment_e2e::brokers()
}

fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index]
}

//! Every figure of issue 10 in one run, side by side with its ratio: the
//! raw MariaDB commit rate (the same `BEGIN; INSERT; COMMIT` over sqlx at 1
//! and 16 connections), payments created from queued `OrderPlacedEvent`s,
//! confirms/s with 16 clients (in-process fake gateway), `GET
//! /api/v1/payments/{id}` vs `GET /health/live` at 32 connections, the
//! outbox commit → consumer latency while those loads run, and the
//! service's RSS idle and at its peak. The service is the release binary
//! (`PAYMENT_BIN`), a separate process: its RSS is its own.
//!
//! Run it with `scripts/bench.sh` (builds, starts the stack, adds the
//! reconciler drain). Settings: `BENCH_ORDERS` (20000), `BENCH_CONFIRMS`
//! (5000), `BENCH_GETS` (30000 per endpoint). `/api/v1` auth is off for the
//! run (`PAYMENT__AUTH__DISABLED=true`): what is measured is the read, not
//! the token check. No assertion: it prints.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use payment_e2e::{brokers, kafka, orders};
use payment_infra::kafka::KafkaSettings;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |v| v.parse().expect(name))
}

#[tokio::main]
async fn main() {
    let orders = setting("BENCH_ORDERS", 20_000);
    let confirms = setting("BENCH_CONFIRMS", 5_000).min(orders);
    let gets = setting("BENCH_GETS", 30_000);
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (source .stack/env)");
    let binary = std::env::var("PAYMENT_BIN").expect("PAYMENT_BIN: the release payment-service");
    let admin = MySqlPool::connect(&base).await.unwrap();
    let database = format!("bench_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
    let pool = MySqlPoolOptions::new()
        .max_connections(20)
        .connect(&url)
        .await
        .unwrap();

    eprintln!("raw commits …");
    let raw_1 = raw_commits(&pool, 1).await;
    let raw_16 = raw_commits(&pool, 16).await;

    let topics = orders::TestTopics::create().await;
    let port = free_port();
    let service = Service {
        binary,
        url: url.clone(),
        topics: topics.clone(),
        port,
    };
    eprintln!("service idle …");
    // Its own group: the loaded run's group starts with no member behind.
    let mut idle = service.start("idle");
    service.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(&idle, "VmRSS");
    service.stop(&mut idle);

    eprintln!("queueing {orders} OrderPlacedEvents …");
    let run = Uuid::now_v7().simple().to_string();
    let order_id = |i: usize| format!("bench-{}-{i}", &run[run.len() - 8..]);
    let amount = |i: usize| 1_000 + (i % 1_000) as u64;
    let messages: Vec<(String, Vec<u8>)> = (0..orders)
        .map(|i| {
            let id = order_id(i);
            let event = orders::order_placed(&format!("evt-{id}"), &id, amount(i));
            (id, event)
        })
        .collect();
    let producer = kafka::producer();
    for chunk in messages.chunks(2_000) {
        kafka::publish_all(&producer, &topics.order_placed, chunk).await;
    }

    let relay = Relay::start(&[
        topics.payment_created.clone(),
        topics.payment_completed.clone(),
    ]);
    eprintln!("draining the queue …");
    let mut loaded = service.start("loaded");
    service.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while count(&pool, "SELECT COUNT(*) FROM payments").await < orders as i64 {
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let span_us: i64 = sqlx::query_scalar(
        "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(created_at), MAX(created_at)) FROM payments",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let created_per_s = orders as f64 / (span_us.max(1) as f64 / 1e6);

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let base_url = format!("http://127.0.0.1:{port}");
    eprintln!("{confirms} confirms, 16 clients …");
    let confirmed = {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let clients = (0..16).map(|_| {
            let (http, next, base_url) = (http.clone(), next.clone(), base_url.clone());
            let order_id = &order_id;
            async move {
                let mut done = 0_usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= confirms {
                        return done;
                    }
                    let body = serde_json::json!({
                        "paymentKey": format!("tgen_bench_{i}"),
                        "orderId": order_id(i),
                        "amount": amount(i),
                    });
                    let response = http
                        .post(format!("{base_url}/api/v1/payments/confirm"))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                    if response.status().is_success() {
                        done += 1;
                    } else if done == 0 {
                        eprintln!("confirm answered {}", response.status());
                    }
                }
            }
        });
        let done: usize = futures::future::join_all(clients).await.into_iter().sum();
        done as f64 / started.elapsed().as_secs_f64()
    };

    let ids: Vec<String> = sqlx::query_scalar("SELECT payment_id FROM payments LIMIT 1000")
        .fetch_all(&pool)
        .await
        .unwrap();
    eprintln!("GET payment vs live, {gets} requests each, 32 connections …");
    let live = load(&http, gets, |_| format!("{base_url}/health/live")).await;
    let get = load(&http, gets, |i| {
        format!("{base_url}/api/v1/payments/{}", ids[i % ids.len()])
    })
    .await;
    let rss_peak = rss_kib(&loaded, "VmHWM");
    let rss_after = rss_kib(&loaded, "VmRSS");
    let (latencies, by_topic) = relay.stop().await;
    service.stop(&mut loaded);
    sqlx::query(&format!("DROP DATABASE {database}"))
        .execute(&admin)
        .await
        .unwrap();

    let drain = std::env::var("RECONCILE_DRAIN").ok();
    println!();
    println!("| figure | measured | ratio | goal |");
    println!("|---|---|---|---|");
    println!("| raw INSERT+COMMIT, 1 connection | {raw_1:.0}/s | (baseline) | |");
    println!("| raw INSERT+COMMIT, 16 connections | {raw_16:.0}/s | (baseline) | |");
    println!(
        "| payments created from {orders} queued OrderPlacedEvents | {created_per_s:.0}/s | {:.2}× raw(1) | ≥ 1.0× |",
        created_per_s / raw_1
    );
    println!(
        "| confirms, 16 clients, fake gateway ({confirms}) | {confirmed:.0}/s | {:.3}× raw(16) | ≥ 0.25× |",
        confirmed / raw_16
    );
    println!(
        "| GET /api/v1/payments/{{id}} vs /health/live, 32 connections | {get:.0} vs {live:.0} req/s | {:.2}× | ≥ 0.3× |",
        get / live
    );
    match drain {
        Some(line) => println!("| reconciler drain (reconcile_drain bench) | {line} | | ≥ 500/s |"),
        None => println!("| reconciler drain | not run (scripts/bench.sh runs it) | | ≥ 500/s |"),
    }
    for (what, latencies) in [
        ("every event, under the loads", &latencies),
        ("created events (the queue drain)", &by_topic[0]),
        ("completed events (the confirms)", &by_topic[1]),
    ] {
        println!(
            "| outbox commit → consumer, {what} ({} events) | p50 {} ms, p99 {} ms, max {} ms | | p99 ≤ 50 ms |",
            latencies.len(),
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
            percentile(latencies, 1.0)
        );
    }
    println!(
        "| service RSS idle / peak under the loads (after) | {} MB / {} MB ({} MB) | | < 64 MB / < 200 MB |",
        rss_idle / 1024,
        rss_peak / 1024,
        rss_after / 1024
    );
}

/// Commits/s of `BEGIN; INSERT one row; COMMIT` on `connections`
/// connections for 3 seconds.
async fn raw_commits(pool: &MySqlPool, connections: usize) -> f64 {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS raw_commit (id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, \
         payload VARCHAR(64) NOT NULL, created_at DATETIME(6) NOT NULL) ENGINE = InnoDB",
    )
    .execute(pool)
    .await
    .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    let workers = (0..connections).map(|_| async move {
        let mut commits = 0_u64;
        while Instant::now() < until {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO raw_commit (payload, created_at) VALUES (?, NOW(6))")
                .bind("0123456789abcdef0123456789abcdef")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            commits += 1;
        }
        commits
    });
    let started = Instant::now();
    let commits: u64 = futures::future::join_all(workers).await.into_iter().sum();
    commits as f64 / started.elapsed().as_secs_f64()
}

/// Requests/s of `count` GETs of `url(i)` over 32 concurrent connections.
async fn load(http: &reqwest::Client, count: usize, url: impl Fn(usize) -> String) -> f64 {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let workers = (0..32).map(|_| async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return;
            }
            let response = http.get(url(i)).send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.unwrap();
        }
    });
    futures::future::join_all(workers).await;
    count as f64 / started.elapsed().as_secs_f64()
}

async fn count(pool: &MySqlPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `field` (`VmRSS`, `VmHWM`) of the process, in KiB.
fn rss_kib(child: &Child, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect(field)
}

/// How the service under test is run.
struct Service {
    binary: String,
    url: String,
    topics: orders::TestTopics,
    port: u16,
}

impl Service {
    /// Starts the service in consumer group `group`.
    fn start(&self, group: &str) -> Child {
        let topics = &self.topics;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::env::var("BENCH_LOG").unwrap_or_else(|_| "/dev/null".into()))
            .unwrap();
        Command::new(&self.binary)
            .arg("serve")
            .env("PAYMENT__DATABASE__URL", &self.url)
            .env("PAYMENT__DATABASE__MAX_CONNECTIONS", "32")
            .env("PAYMENT__KAFKA__BROKERS", brokers())
            .env(
                "PAYMENT__KAFKA__GROUP_ID",
                format!("{}.{group}", topics.order_placed),
            )
            .env("PAYMENT__HTTP__ADDR", format!("127.0.0.1:{}", self.port))
            .env("PAYMENT__GATEWAY", "fake")
            .env("PAYMENT__AUTH__DISABLED", "true")
            .env("PAYMENT__TOPICS__ORDER_PLACED", &topics.order_placed)
            .env(
                "PAYMENT__TOPICS__ORDER_REFUND_REQUESTED",
                &topics.order_refund_requested,
            )
            .env("PAYMENT__TOPICS__PAYMENT_CREATED", &topics.payment_created)
            .env(
                "PAYMENT__TOPICS__PAYMENT_COMPLETED",
                &topics.payment_completed,
            )
            .env("PAYMENT__TOPICS__PAYMENT_FAILED", &topics.payment_failed)
            .env(
                "PAYMENT__TOPICS__PAYMENT_CANCELED",
                &topics.payment_canceled,
            )
            .env(
                "PAYMENT__TOPICS__PAYMENT_CANCEL_FAILED",
                &topics.payment_cancel_failed,
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the service")
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http
                .get(format!("http://127.0.0.1:{}/health/ready", self.port))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the service never got ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM (a graceful stop: it leaves the consumer group at once).
    fn stop(&self, child: &mut Child) {
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        child.wait().unwrap();
    }
}

/// Reads the service's published events as they come and keeps, per
/// event, how long after its outbox row's `created_at` it reached this
/// consumer, in ms ([`committed_at`]).
struct Relay {
    stop: CancellationToken,
    /// All latencies, and each topic's, sorted.
    task: tokio::task::JoinHandle<(Vec<i64>, Vec<Vec<i64>>)>,
}

impl Relay {
    fn start(topics: &[String]) -> Self {
        let group = format!("bench-relay-{}", Uuid::now_v7().simple());
        let settings = KafkaSettings {
            brokers: brokers(),
            client_id: "payment-bench".into(),
            group_id: group.clone(),
            session_timeout: Duration::from_secs(6),
            debug: None,
        };
        let consumer: StreamConsumer = settings
            .client_config()
            .set("group.id", &group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()
            .unwrap();
        // Every partition assigned directly from the beginning, no group:
        // a group join can take longer than a short run (the recorded
        // latencies once were the age of what piled up before it).
        let mut assignment = TopicPartitionList::new();
        for topic in topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .unwrap();
            for partition in metadata.topics()[0].partitions() {
                assignment
                    .add_partition_offset(topic, partition.id(), Offset::Beginning)
                    .unwrap();
            }
        }
        assert!(assignment.count() > 0, "no partitions of {topics:?}");
        consumer.assign(&assignment).unwrap();
        let stop = CancellationToken::new();
        let until = stop.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let topics = topics.to_vec();
        let task = tokio::spawn(async move {
            let mut errors = 0_u64;
            let mut untimed = 0_u64;
            loop {
                let message = tokio::select! {
                    () = until.cancelled() => break,
                    message = consumer.recv() => message,
                };
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("relay consumer: {error}");
                        }
                        continue;
                    }
                };
                let now = chrono::Utc::now().timestamp_millis();
                let topic = topics.iter().position(|t| t == message.topic());
                match (committed_at(&message), topic) {
                    (Some(at), Some(topic)) => seen.lock().unwrap().push((topic, now - at)),
                    _ => untimed += 1,
                }
            }
            if errors + untimed > 0 {
                eprintln!("relay consumer: {errors} errors, {untimed} events without a time");
            }
            let seen = std::mem::take(&mut *seen.lock().unwrap());
            let mut all: Vec<i64> = seen.iter().map(|&(_, ms)| ms).collect();
            all.sort_unstable();
            let mut by_topic = vec![Vec::new(); topics.len()];
            for (topic, ms) in seen {
                by_topic[topic].push(ms);
            }
            for latencies in &mut by_topic {
                latencies.sort_unstable();
            }
            (all, by_topic)
        });
        Self { stop, task }
    }

    async fn stop(self) -> (Vec<i64>, Vec<Vec<i64>>) {
        // What the relay still had in flight arrives first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// When the event's outbox row was written, in ms since the epoch: the
/// record timestamp (the relay sets it to the row's `created_at`), or, when
/// the broker hands back none, the CloudEvent's `time` (the same instant,
/// written into the payload by the service).
fn committed_at(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<i64> {
    if let Some(at) = message.timestamp().to_millis().filter(|&at| at > 0) {
        return Some(at);
    }
    let payload: serde_json::Value = serde_json::from_slice(message.payload()?).ok()?;
    let time = payload.get("time")?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|at| at.timestamp_millis())
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

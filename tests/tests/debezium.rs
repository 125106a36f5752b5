//! The Debezium relay for real: Kafka Connect's worker with Debezium's MySQL
//! connector and Outbox Event Router (the production connector file, see
//! `debezium/README.md`) tails a scratch MariaDB and publishes to the local
//! broker. Start it with `scripts/debezium.sh up`, then
//! `source .stack/env; source .stack/debezium/env`; without
//! `DEBEZIUM_DATABASE_URL` every test here is skipped (and says so).
//!
//! * the wire contract: topic, key, value bytes, `id` / `eventType` /
//!   `traceparent` headers (null value when the row has none), record
//!   timestamp = `created_at`, partition = Kafka's murmur2 of the key;
//! * byte identity: the same rows relayed by Debezium and by the embedded
//!   relay give the same partition, key, value, headers and timestamp — for
//!   written rows, and for a payment's life run by the service in debezium
//!   mode (placed, confirmed, partially canceled, refund requested); and
//!   the check fails for an embedded relay on librdkafka's default
//!   partitioner;
//! * `kill -9` of the Connect JVM while rows are written: nothing is lost,
//!   every redelivered copy carries the same `id` and bytes, per-aggregate
//!   order holds;
//! * commit → consumer latency (printed p50 / p99).
//!
//! The tests share the scratch database and the JVM, so they run one at a
//! time (a lock), whatever the test harness's thread count.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone as _, Utc};
use payment_application::{Commit, OutboxMessage, PaymentRepository as _};
use payment_e2e::orders::{place_order, wait_status};
use payment_e2e::toss::{Reconciler, TossWorld};
use payment_e2e::{brokers, kafka};
use payment_infra::mariadb::{self, MariaDbPaymentRepository};
use payment_infra::outbox::{OutboxRelay, RelaySettings};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::ClientConfig;
use serde_json::json;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::MySqlPool;
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;

/// Partitions of the topics Connect creates (`topic.creation.default.partitions`).
const PARTITIONS: i32 = 3;
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

struct Stack {
    pool: MySqlPool,
    /// `scripts/debezium.sh`, to restart Connect after a kill.
    script: PathBuf,
    /// The Connect JVM's pid file.
    pid_file: PathBuf,
}

/// The Debezium stack from the environment, its database migrated with the
/// service's migrations; `None` (and a message) when it is not up.
async fn stack(test: &str) -> Option<Stack> {
    let Ok(url) = std::env::var("DEBEZIUM_DATABASE_URL") else {
        // The README's test command starts Debezium: there a skip would be a
        // silent hole in CI, so it fails instead.
        assert!(
            std::env::var_os("PAYMENT_TEST_REQUIRE_DEBEZIUM").is_none(),
            "{test}: PAYMENT_TEST_REQUIRE_DEBEZIUM is set but the Debezium stack is not up"
        );
        eprintln!(
            "SKIPPED {test}: the Debezium stack is not up (DEBEZIUM_DATABASE_URL unset). Run \
             `scripts/debezium.sh up && source .stack/env && source .stack/debezium/env`."
        );
        return None;
    };
    let pool = MySqlPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .expect("connect to the scratch MariaDB of scripts/debezium.sh");
    mariadb::migrate(&pool)
        .await
        .expect("migrate the scratch database");
    Some(Stack {
        pool,
        script: std::env::var("DEBEZIUM_SCRIPT")
            .expect("DEBEZIUM_SCRIPT (from .stack/debezium/env)")
            .into(),
        pid_file: std::env::var("DEBEZIUM_CONNECT_PID_FILE")
            .expect("DEBEZIUM_CONNECT_PID_FILE (from .stack/debezium/env)")
            .into(),
    })
}

/// A row as the service writes it; `created_at` has microseconds (the
/// column is DATETIME(6)), to check how both relays turn it into a record
/// timestamp.
fn message(topic: &str, aggregate: &str, n: usize, traceparent: bool) -> OutboxMessage {
    let id = Uuid::now_v7();
    OutboxMessage {
        id,
        topic: topic.to_owned(),
        key: aggregate.to_owned(),
        event_type: if n.is_multiple_of(2) {
            "PaymentCreatedEvent".into()
        } else {
            "PaymentCompletedEvent".into()
        },
        payload: json!({
            "specversion": "1.0", "id": id, "subject": aggregate,
            "data": { "n": n, "note": "ü 한글 \"quoted\"" },
        }),
        traceparent: traceparent.then(|| TRACEPARENT.to_owned()),
        created_at: Utc::now(),
    }
}

async fn write_outbox(pool: &MySqlPool, messages: Vec<OutboxMessage>) {
    MariaDbPaymentRepository::new(pool.clone())
        .commit(Commit {
            outbox: messages,
            ..Commit::default()
        })
        .await
        .expect("commit outbox rows");
}

/// A consumed record, with what the test helpers' `Received` flattens:
/// null header values and the record timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp_ms: Option<i64>,
}

impl Record {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_deref())
            .map(|v| String::from_utf8(v.to_vec()).expect("UTF-8 header"))
    }

    fn id(&self) -> String {
        self.header("id").expect("id header")
    }
}

fn consumer(topics: &[String]) -> StreamConsumer {
    let group = format!("debezium-it-{}", Uuid::now_v7().simple());
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "10")
        // Connect creates the topic with its first record: see it soon
        // (the default re-checks a missing topic only every 5 minutes).
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()
        .expect("consumer");
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).expect("subscribe");
    consumer
}

fn record(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    Record {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
        timestamp_ms: message.timestamp().to_millis(),
    }
}

/// Reads `topic` from the beginning until `done` holds or `timeout` passes.
async fn read_until(
    topics: &[String],
    timeout: Duration,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer = consumer(topics);
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while !done(&records) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if let Ok(Ok(message)) =
            tokio::time::timeout(left.min(Duration::from_millis(500)), consumer.recv()).await
        {
            records.push(record(&message));
        }
    }
    records
}

fn distinct_ids(records: &[Record]) -> HashSet<String> {
    records.iter().map(Record::id).collect()
}

/// Kafka's `Utils.murmur2` (the Java producer's partitioner for keyed
/// records, and librdkafka's `murmur2_random`).
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h = SEED ^ u32::try_from(data.len()).unwrap();
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().unwrap());
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, byte) in rest.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// The partition Kafka's Java producer picks for a key.
fn java_partition(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

/// `created_at` as a record timestamp: milliseconds, microseconds dropped
/// (what Debezium's router does with a DATETIME(6) timestamp field).
fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// The stored row, as the relays read it (payload bytes as MariaDB holds them).
async fn stored_payload(pool: &MySqlPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT payload FROM outbox WHERE id = ?")
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .expect("outbox row")
}

#[test]
fn murmur2_matches_kafka() {
    // Reference values from Kafka's UtilsTest.testMurmur2.
    let cases: [(&[u8], i32); 6] = [
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];
    for (input, expected) in cases {
        assert_eq!(
            murmur2(input),
            expected,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn debezium_publishes_each_outbox_row_as_the_contract_says() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(stack) = stack("debezium_publishes_each_outbox_row_as_the_contract_says").await else {
        return;
    };
    let topic = kafka::unique_topic("debezium.contract");
    let messages: Vec<OutboxMessage> = (0..12)
        .map(|n| message(&topic, &format!("pay-{}", n % 6), n, n % 3 != 0))
        .collect();
    write_outbox(&stack.pool, messages.clone()).await;

    let records = read_until(std::slice::from_ref(&topic), Duration::from_secs(60), |r| {
        r.len() >= messages.len()
    })
    .await;
    assert_eq!(
        records.len(),
        messages.len(),
        "records on {topic}: {records:#?}"
    );
    let by_id: HashMap<String, &Record> = records.iter().map(|r| (r.id(), r)).collect();
    for m in &messages {
        let r = by_id
            .get(&m.id.to_string())
            .unwrap_or_else(|| panic!("no record for {}", m.id));
        assert_eq!(r.key.as_deref(), Some(m.key.as_bytes()), "key");
        assert_eq!(
            r.value.as_deref(),
            Some(stored_payload(&stack.pool, m.id).await.as_bytes()),
            "value = the payload bytes"
        );
        assert_eq!(
            r.headers,
            vec![
                ("id".to_owned(), Some(m.id.to_string().into_bytes())),
                (
                    "eventType".to_owned(),
                    Some(m.event_type.clone().into_bytes())
                ),
                (
                    "traceparent".to_owned(),
                    m.traceparent.clone().map(String::into_bytes)
                ),
            ],
            "headers (a row without traceparent: the header with a null value)"
        );
        assert_eq!(
            r.timestamp_ms,
            Some(millis(m.created_at)),
            "timestamp = created_at"
        );
        assert_eq!(
            r.partition,
            java_partition(&m.key, PARTITIONS),
            "murmur2 partition"
        );
    }
    // Per aggregate, the log order is the commit order.
    for aggregate in (0..6).map(|n| format!("pay-{n}")) {
        let written: Vec<String> = messages
            .iter()
            .filter(|m| m.key == aggregate)
            .map(|m| m.id.to_string())
            .collect();
        let mut logged: Vec<&Record> = records
            .iter()
            .filter(|r| r.key.as_deref() == Some(aggregate.as_bytes()))
            .collect();
        logged.sort_by_key(|r| r.offset);
        let logged: Vec<String> = logged.iter().map(|r| r.id()).collect();
        assert_eq!(logged, written, "order of {aggregate}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_relays_put_the_same_bytes_on_the_wire() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(stack) = stack("both_relays_put_the_same_bytes_on_the_wire").await else {
        return;
    };
    // The embedded relay claims every row in the table: leave only ours
    // (Debezium drops the DELETE events).
    sqlx::query("DELETE FROM outbox")
        .execute(&stack.pool)
        .await
        .unwrap();
    let topic = kafka::unique_topic("debezium.identity");
    // Enough distinct keys that two partitioners cannot agree by chance.
    let messages: Vec<OutboxMessage> = (0..24)
        .map(|n| message(&topic, &format!("pay-{}", Uuid::now_v7()), n, n % 4 != 0))
        .collect();
    write_outbox(&stack.pool, messages.clone()).await;

    // First Debezium's copies...
    let debezium = read_until(std::slice::from_ref(&topic), Duration::from_secs(60), |r| {
        r.len() >= messages.len()
    })
    .await;
    assert_eq!(debezium.len(), messages.len(), "Debezium's records");
    // ...then the embedded relay publishes (and deletes) the same rows.
    relay_embedded(&stack.pool, messages.len()).await;
    let all = read_until(std::slice::from_ref(&topic), Duration::from_secs(60), |r| {
        r.len() >= 2 * messages.len()
    })
    .await;
    assert_same_on_the_wire(&debezium, all, messages.len());
}

/// Runs the embedded relay (the service's, with the service's producer
/// settings) over the table until it has published `rows` rows.
async fn relay_embedded(pool: &MySqlPool, rows: usize) {
    relay_embedded_with(pool, rows, kafka::producer()).await;
}

async fn relay_embedded_with(
    pool: &MySqlPool,
    rows: usize,
    producer: rdkafka::producer::FutureProducer,
) {
    let relay = OutboxRelay::new(
        pool.clone(),
        producer,
        RelaySettings {
            batch_size: 200,
            poll_interval: Duration::from_millis(50),
        },
        Arc::new(Notify::new()),
    );
    let mut published = 0;
    for _ in 0..20 {
        published += relay.relay_once().await.expect("embedded relay round");
        if published >= rows {
            break;
        }
    }
    assert_eq!(published, rows, "rows the embedded relay published");
}

/// `all` holds each of `events` events twice: once from Debezium (the
/// records in `debezium`) and once from the embedded relay. Both copies must
/// be the same on the wire: topic, partition, key, value, headers, timestamp.
fn assert_same_on_the_wire(debezium: &[Record], all: Vec<Record>, events: usize) {
    let differences = wire_differences(debezium, all, events);
    assert!(
        differences.is_empty(),
        "the relays differ on {} of {events} events:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// What differs between the two copies of each event (see
/// `assert_same_on_the_wire`), one line per event and field.
fn wire_differences(debezium: &[Record], all: Vec<Record>, events: usize) -> Vec<String> {
    assert_eq!(all.len(), 2 * events, "records from both relays");
    let from_debezium: HashSet<(String, i32, i64)> = debezium
        .iter()
        .map(|r| (r.topic.clone(), r.partition, r.offset))
        .collect();
    let mut by_id: BTreeMap<String, (Option<Record>, Option<Record>)> = BTreeMap::new();
    for r in all {
        let slot = by_id.entry(r.id()).or_default();
        if from_debezium.contains(&(r.topic.clone(), r.partition, r.offset)) {
            slot.0 = Some(r);
        } else {
            slot.1 = Some(r);
        }
    }
    assert_eq!(by_id.len(), events, "distinct event ids");
    let mut differences = Vec::new();
    for (id, pair) in &by_id {
        let (Some(d), Some(e)) = pair else {
            differences.push(format!("{id}: only one relay published it: {pair:?}"));
            continue;
        };
        let same = [
            ("topic", d.topic == e.topic),
            ("partition", d.partition == e.partition),
            ("key", d.key == e.key),
            ("value", d.value == e.value),
            ("headers", d.headers == e.headers),
            ("timestamp", d.timestamp_ms == e.timestamp_ms),
        ];
        for (name, same) in same {
            if !same {
                differences.push(format!("{id}: {name}: debezium {d:?} / embedded {e:?}"));
            }
        }
    }
    differences
}

fn connect_pid(stack: &Stack) -> i32 {
    std::fs::read_to_string(&stack.pid_file)
        .expect("Connect pid file")
        .trim()
        .parse()
        .expect("pid")
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_connect_jvm_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(stack) = stack("kill_9_of_the_connect_jvm_loses_nothing").await else {
        return;
    };
    let topic = kafka::unique_topic("debezium.kill9");
    let aggregates: Vec<String> = (0..8).map(|n| format!("pay-{n}")).collect();

    // A writer commits a batch of 5 every 50 ms until it is told to stop —
    // before the kill, while Connect is dead and after its restart — and
    // answers what it wrote. (A writer of a fixed length could be done
    // before a slow Connect had published enough to kill it mid-stream.)
    let pool = stack.pool.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (topic, aggregates, stop) = (topic.clone(), aggregates.clone(), Arc::clone(&stop));
        async move {
            let mut written = Vec::new();
            for b in 0..2_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let batch: Vec<OutboxMessage> = (0..5)
                    .map(|i| {
                        let n = b * 5 + i;
                        message(&topic, &aggregates[n % aggregates.len()], n, true)
                    })
                    .collect();
                write_outbox(&pool, batch.clone()).await;
                written.extend(batch);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            written
        }
    });

    // Kill once Connect has published a part of the stream, and has had time
    // to flush its offsets once (offset.flush.interval.ms = 1000): before the
    // first flush a restart starts from the binlog's end (snapshot.mode
    // no_data; see debezium/README.md).
    let consumer = consumer(std::slice::from_ref(&topic));
    let mut records = Vec::new();
    let mut first_at = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            records.push(record(&message));
            first_at.get_or_insert_with(Instant::now);
        }
        if records.len() >= 60
            && first_at.is_some_and(|at| at.elapsed() > Duration::from_millis(1500))
        {
            break;
        }
    }
    assert!(
        records.len() >= 60,
        "Connect published {} records before the kill",
        records.len()
    );
    assert!(!writer.is_finished(), "the writer stopped before the kill");
    let pid = connect_pid(&stack);
    let killed_after = records.len();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("killed Connect (pid {pid}) after {killed_after} records");

    // Rows written while it is down, then the project's script restarts it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let script = stack.script.clone();
    let restarted = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script)
            .arg("up")
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(restarted.success(), "scripts/debezium.sh up after the kill");
    // Rows after the restart too, then the writer stops.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let expected = writer.await.unwrap();

    let want: HashSet<String> = expected.iter().map(|m| m.id.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !want.is_subset(&distinct_ids(&records)) && Instant::now() < deadline {
        if let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            records.push(record(&message));
        }
    }
    let seen = distinct_ids(&records);
    let lost: Vec<&String> = want.difference(&seen).collect();
    assert!(
        lost.is_empty(),
        "{} events lost after kill -9: {lost:?}",
        lost.len()
    );

    // Duplicates are the same event: same id, same bytes, same headers.
    let mut first: HashMap<String, &Record> = HashMap::new();
    let mut duplicates = 0;
    for r in &records {
        if let Some(original) = first.get(&r.id()) {
            duplicates += 1;
            assert_eq!(
                (
                    &original.key,
                    &original.value,
                    &original.headers,
                    original.timestamp_ms
                ),
                (&r.key, &r.value, &r.headers, r.timestamp_ms),
                "a redelivered copy of {} differs",
                r.id()
            );
        } else {
            first.insert(r.id(), r);
        }
    }
    // Per aggregate, first deliveries keep the commit order.
    for aggregate in &aggregates {
        let written: Vec<String> = expected
            .iter()
            .filter(|m| &m.key == aggregate)
            .map(|m| m.id.to_string())
            .collect();
        let mut logged: Vec<&Record> = records
            .iter()
            .filter(|r| r.key.as_deref() == Some(aggregate.as_bytes()))
            .collect();
        logged.sort_by_key(|r| r.offset);
        let mut order = Vec::new();
        for r in logged {
            if !order.contains(&r.id()) {
                order.push(r.id());
            }
        }
        assert_eq!(order, written, "first-delivery order of {aggregate}");
    }
    eprintln!(
        "kill -9: {} events, none lost, {duplicates} redelivered (same id and bytes)",
        expected.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_to_consumer_latency() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(stack) = stack("commit_to_consumer_latency").await else {
        return;
    };
    let topic = kafka::unique_topic("debezium.latency");
    kafka::create_topics(std::slice::from_ref(&topic)).await;
    let consumer = consumer(std::slice::from_ref(&topic));
    // Joined and assigned before the first row is written.
    let joined = Instant::now();
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        assert!(
            joined.elapsed() < Duration::from_secs(30),
            "consumer never got its partitions"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }

    const ROWS: usize = 200;
    let mut committed: HashMap<String, Instant> = HashMap::new();
    let received: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Arc::default();
    let reader = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while received.lock().unwrap().len() < ROWS && Instant::now() < deadline {
                if let Ok(Ok(message)) =
                    tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await
                {
                    let at = Instant::now();
                    let id = record(&message).id();
                    received.lock().unwrap().entry(id).or_insert(at);
                }
            }
        })
    };
    for n in 0..ROWS {
        let m = message(&topic, &format!("pay-{}", n % 10), n, true);
        let id = m.id.to_string();
        write_outbox(&stack.pool, vec![m]).await;
        committed.insert(id, Instant::now());
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    reader.await.unwrap();
    let received = received.lock().unwrap();
    let mut latencies: Vec<Duration> = committed
        .iter()
        .filter_map(|(id, at)| {
            received
                .get(id)
                .map(|got| got.saturating_duration_since(*at))
        })
        .collect();
    assert_eq!(latencies.len(), ROWS, "every row reached the consumer");
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    eprintln!(
        "debezium commit->consumer over {ROWS} single-row commits: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.9),
        p(0.99),
        latencies[latencies.len() - 1]
    );
    assert!(p(0.99) < Duration::from_secs(5), "p99 {:?}", p(0.99));
}

/// The timestamp rule both relays must follow: `created_at` in
/// milliseconds, the microseconds dropped (not rounded).
#[test]
fn record_timestamps_drop_microseconds() {
    let at = Utc.timestamp_opt(1_767_323_045, 678_901_000).unwrap();
    assert_eq!(millis(at), 1_767_323_045_678);
}

/// Issue 11 item 3: one payment's life — order placed, confirmed, partially
/// canceled over HTTP, the rest refunded by an `OrderRefundRequested`
/// message — with the service in debezium mode (it only writes outbox rows),
/// relayed by Debezium; then the embedded relay relays the same rows. Every
/// event must be the same on the wire from both.
#[tokio::test(flavor = "multi_thread")]
async fn a_payment_scenario_is_byte_identical_from_both_relays() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(stack) = stack("a_payment_scenario_is_byte_identical_from_both_relays").await else {
        return;
    };
    sqlx::query("DELETE FROM outbox")
        .execute(&stack.pool)
        .await
        .unwrap();
    // The service reads its settings from the environment first; this test
    // binary starts no other service.
    std::env::set_var("PAYMENT__OUTBOX__RELAY", "debezium");
    let url = std::env::var("DEBEZIUM_DATABASE_URL").unwrap();
    let w = TossWorld::start(
        MySqlPoolOptions::new(),
        url.parse::<MySqlConnectOptions>().unwrap(),
        Reconciler::Off,
        5_000,
    )
    .await;
    let order = format!("order-cdc-{}", Uuid::now_v7().simple());
    let payment_id = place_order(&w.topics, &w.pool, &order, 10_000).await;
    assert_eq!(
        w.confirm(&format!("tgen_{order}"), &order, 10_000)
            .await
            .status(),
        200
    );
    let partial = w
        .cancel(
            &payment_id,
            Some(&format!("cancel-{order}")),
            &json!({ "cancelReason": "one item returned", "cancelAmount": 3000 }),
        )
        .await;
    assert_eq!(partial.status(), 200, "partial cancel");
    let refund = json!({
        "id": format!("refund-{order}"), "source": "/order-service", "specversion": "1.0",
        "type": "OrderRefundRequested", "subject": order,
        "data": { "orderId": order, "reason": "returned" },
    });
    kafka::publish(
        &kafka::producer(),
        &w.topics.order_refund_requested,
        &order,
        refund.to_string().as_bytes(),
        &[],
    )
    .await;
    wait_status(&w.pool, &order, "CANCELED", Duration::from_secs(60)).await;
    w.app.stop().await.expect("service stops cleanly");
    std::env::remove_var("PAYMENT__OUTBOX__RELAY");

    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT aggregatetype, type FROM outbox ORDER BY seq")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
    let types: Vec<&str> = rows.iter().map(|(_, t)| t.as_str()).collect();
    assert!(
        rows.len() >= 4,
        "outbox rows left for Debezium (the service must not relay or delete them in debezium mode): {types:?}"
    );
    let topics = vec![
        w.topics.payment_created.clone(),
        w.topics.payment_completed.clone(),
        w.topics.payment_failed.clone(),
        w.topics.payment_canceled.clone(),
    ];
    let debezium = read_until(&topics, Duration::from_secs(60), |r| r.len() >= rows.len()).await;
    assert_eq!(
        debezium.len(),
        rows.len(),
        "Debezium's records for {types:?}"
    );
    relay_embedded(&stack.pool, rows.len()).await;
    let all = read_until(&topics, Duration::from_secs(60), |r| {
        r.len() >= 2 * rows.len()
    })
    .await;
    assert_same_on_the_wire(&debezium, all, rows.len());
    eprintln!(
        "scenario: {} events ({types:?}) identical from both relays",
        rows.len()
    );
}

/// The identity check has teeth: an embedded relay on librdkafka's default
/// partitioner (`consistent_random`, CRC32 — what the service used before
/// issue 11) puts some aggregates on other partitions than Connect does.
#[tokio::test(flavor = "multi_thread")]
async fn the_identity_check_catches_librdkafkas_default_partitioner() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(stack) = stack("the_identity_check_catches_librdkafkas_default_partitioner").await
    else {
        return;
    };
    sqlx::query("DELETE FROM outbox")
        .execute(&stack.pool)
        .await
        .unwrap();
    let topic = kafka::unique_topic("debezium.crc32");
    let messages: Vec<OutboxMessage> = (0..24)
        .map(|n| message(&topic, &format!("pay-{}", Uuid::now_v7()), n, true))
        .collect();
    write_outbox(&stack.pool, messages.clone()).await;
    let debezium = read_until(std::slice::from_ref(&topic), Duration::from_secs(60), |r| {
        r.len() >= messages.len()
    })
    .await;
    assert_eq!(debezium.len(), messages.len(), "Debezium's records");
    let crc32: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "consistent_random")
        .create()
        .expect("producer");
    relay_embedded_with(&stack.pool, messages.len(), crc32).await;
    let all = read_until(std::slice::from_ref(&topic), Duration::from_secs(60), |r| {
        r.len() >= 2 * messages.len()
    })
    .await;
    let differences = wire_differences(&debezium, all, messages.len());
    assert!(
        differences.iter().any(|d| d.contains(": partition:")),
        "expected partition differences with consistent_random, got: {differences:?}"
    );
    assert!(
        differences.iter().all(|d| d.contains(": partition:")),
        "only the partition may differ: {differences:?}"
    );
}

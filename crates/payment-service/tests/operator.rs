//! The operator commands of the binary against a real MariaDB (and the
//! broker, for `outbox replay`): `rebuild-projection` folds 50,000 events
//! back into exactly the live projection, `--verify` finds a row changed by
//! hand, `history` and `outbox stats` read what is there, `reconcile`
//! settles one payment, `outbox replay` republishes relayed messages byte
//! for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use payment_application::integration::{payment_completed, payment_created};
use payment_application::{Append, Causation, Commit, PaymentRepository as _, Topics};
use payment_domain::{
    execute, Currency, Money, OrderId, Payment, PaymentCommand, PaymentEvent, PaymentId,
    PaymentKey, PaymentTransaction, TransactionId, TransactionKind, UserId,
};
use payment_infra::kafka::KafkaSettings;
use payment_infra::mariadb::{self, MariaDbPaymentRepository};
use payment_infra::outbox::{OutboxRelay, RelaySettings};
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::message::Headers as _;
use rdkafka::Message as _;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{ConnectOptions as _, MySqlPool};

const BIN: &str = env!("CARGO_BIN_EXE_payment-service");

/// Commands that need no broker get an address where none listens.
fn command(db: &MySqlConnectOptions, args: &[&str]) -> Output {
    command_with(db, "127.0.0.1:1", args)
}

fn command_with(db: &MySqlConnectOptions, brokers: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PAYMENT__DATABASE__URL", db.to_url_lossy().to_string())
        .env("PAYMENT__KAFKA__BROKERS", brokers)
        .env("PAYMENT__GATEWAY", "fake")
        .env("PAYMENT__AUTH__DISABLED", "true")
        .env("PAYMENT__LOG__FORMAT", "pretty")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn won(amount: u64) -> Money {
    Money::from_json(&serde_json::json!(amount), Currency::Krw).unwrap()
}

/// Executes `commands` on `state`: the state and the events.
fn decide(state: Option<&Payment>, commands: &[PaymentCommand]) -> (Payment, Vec<PaymentEvent>) {
    let mut state = state.cloned();
    let mut events = Vec::new();
    for command in commands {
        let (next, new) = execute(state.as_ref(), command).unwrap();
        events.extend(new);
        state = Some(next);
    }
    (state.unwrap(), events)
}

async fn commit(
    repository: &MariaDbPaymentRepository,
    before: Option<&Payment>,
    commands: &[PaymentCommand],
) -> Payment {
    let (state, events) = decide(before, commands);
    repository
        .commit(Commit {
            append: Some(Append {
                expected_version: before.map_or(0, Payment::version),
                events,
                state: state.clone(),
                occurred_at: Utc::now(),
            }),
            ..Commit::default()
        })
        .await
        .unwrap();
    state
}

/// One payment's life in two commits, five events: created, confirmation
/// started, approved; then a partial cancel and the rest.
async fn live_payment(repository: &MariaDbPaymentRepository, i: usize) {
    let created = commit(
        repository,
        None,
        &[
            PaymentCommand::Create {
                payment_id: PaymentId::new(),
                order_id: OrderId::parse(format!("order-{i:06}")).unwrap(),
                user_id: UserId::parse(format!("user-{}", i % 97)).unwrap(),
                amount: won(10_000 + i as u64),
                created_at: Utc::now(),
            },
            PaymentCommand::StartConfirmation {
                payment_key: PaymentKey::parse(format!("tgen_{i}")).unwrap(),
                amount: won(10_000 + i as u64),
                transaction_id: TransactionId::new(),
            },
            PaymentCommand::Approve {
                payment_key: PaymentKey::parse(format!("tgen_{i}")).unwrap(),
                approved_amount: won(10_000 + i as u64),
                method: Some("카드".into()),
                approved_at: Utc::now(),
            },
        ],
    )
    .await;
    commit(
        repository,
        Some(&created),
        &[
            PaymentCommand::Cancel {
                amount: Some(won(1_000)),
                reason: "partial".into(),
                transaction_key: Some(format!("c1-{i}")),
            },
            PaymentCommand::Cancel {
                amount: None,
                reason: "the rest".into(),
                transaction_key: Some(format!("c2-{i}")),
            },
        ],
    )
    .await;
}

/// Every projection row, every column, in id order.
async fn projection(pool: &MySqlPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT CONCAT_WS('|', payment_id, order_id, user_id, amount, balance_amount, currency, \
         status, IFNULL(payment_key, '-'), IFNULL(method, '-'), IFNULL(approved_at, '-'), \
         IFNULL(failure_code, '-'), IFNULL(failure_message, '-'), version, created_at, updated_at) \
         FROM payments ORDER BY payment_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn the_projection_rebuilt_from_50_000_events_equals_the_live_one_and_verify_finds_a_hand_edit(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const PAYMENTS: usize = 10_000; // five events each
    let pool = pool_options
        .max_connections(10)
        .connect_with(db.clone())
        .await
        .unwrap();
    mariadb::migrate(&pool).await.unwrap();
    let repository = Arc::new(MariaDbPaymentRepository::new(pool.clone()));
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let repository = Arc::clone(&repository);
            tokio::spawn(async move {
                for i in (writer..PAYMENTS).step_by(8) {
                    live_payment(&repository, i).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 50_000);
    let live = projection(&pool).await;

    let verified = command(&db, &["rebuild-projection", "--verify"]);
    assert!(
        verified.status.success(),
        "{}{}",
        stdout(&verified),
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(
        stdout(&verified).contains("10000 equal, 0 differ"),
        "{}",
        stdout(&verified)
    );

    sqlx::query("DELETE FROM payments")
        .execute(&pool)
        .await
        .unwrap();
    let rebuilt = command(&db, &["rebuild-projection"]);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    println!("{}", stdout(&rebuilt)); // the rate, for the record
    assert!(
        stdout(&rebuilt).contains("(10000 rewritten)"),
        "{}",
        stdout(&rebuilt)
    );
    assert_eq!(
        projection(&pool).await,
        live,
        "rebuilt = live, column for column"
    );

    let edited: String =
        sqlx::query_scalar("SELECT payment_id FROM payments ORDER BY order_id LIMIT 1 OFFSET 4321")
            .fetch_one(&pool)
            .await
            .unwrap();
    sqlx::query("UPDATE payments SET balance_amount = 1, status = 'DONE' WHERE payment_id = ?")
        .bind(&edited)
        .execute(&pool)
        .await
        .unwrap();
    let found = command(&db, &["rebuild-projection", "--verify"]);
    assert!(!found.status.success(), "a difference fails --verify");
    let report = stdout(&found);
    assert!(report.contains("1 differ"), "{report}");
    assert!(
        report.contains(&format!("{edited}: balance_amount, status differ")),
        "{report}"
    );
    let one = command(&db, &["rebuild-projection", "--payment", &edited]);
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    assert_eq!(projection(&pool).await, live, "the one row repaired");

    let history = command(&db, &["history", &edited]);
    assert!(history.status.success());
    let history = stdout(&history);
    for expected in [
        "PaymentCreated",
        "ConfirmationStarted",
        "PaymentApproved",
        "PaymentCanceled",
        "CANCELED",
    ] {
        assert!(history.contains(expected), "{expected} in {history}");
    }
    let stats = command(&db, &["outbox", "stats"]);
    assert!(stats.status.success());
    assert!(stdout(&stats).contains("the outbox is empty"));
}

/// A migrated database and a new topic every integration event goes to.
async fn migrated_with_one_topic(
    pool_options: MySqlPoolOptions,
    db: &MySqlConnectOptions,
) -> (MySqlPool, String, Topics) {
    let pool = pool_options.connect_with(db.clone()).await.unwrap();
    mariadb::migrate(&pool).await.unwrap();
    let topic = format!("it.replay.{}", uuid::Uuid::now_v7().simple());
    kafka()
        .ensure_topics(std::slice::from_ref(&topic), 1, 1)
        .await
        .unwrap();
    let topics = Topics {
        payment_created: topic.clone(),
        payment_completed: topic.clone(),
        payment_failed: topic.clone(),
        payment_canceled: topic.clone(),
        payment_cancel_failed: topic.clone(),
    };
    (pool, topic, topics)
}

fn kafka() -> KafkaSettings {
    KafkaSettings {
        brokers: std::env::var("PAYMENT__KAFKA__BROKERS")
            .unwrap_or_else(|_| "127.0.0.1:19092".into()),
        client_id: "operator-test".into(),
        group_id: "operator-test".into(),
        session_timeout: Duration::from_secs(3),
        debug: None,
    }
}

/// A Kafka record as a consumer sees it, but for its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: Option<i64>,
}

impl Record {
    fn id(&self) -> String {
        self.headers
            .iter()
            .find(|(key, _)| key == "id")
            .and_then(|(_, value)| value.clone())
            .map(|value| String::from_utf8(value).unwrap())
            .unwrap()
    }
}

/// Every record of `topic` from the start, read until `expected` came and
/// two seconds more passed (or 30 seconds).
/// Returns once `topic` (one partition) holds a record, read from its high
/// watermark: no consumer group to join, so it answers within milliseconds
/// of the first publish (30 s at most).
async fn first_record(topic: &str) {
    let consumer: BaseConsumer = kafka()
        .client_config()
        .set(
            "group.id",
            format!("first-{}", uuid::Uuid::now_v7().simple()),
        )
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((_, high)) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(1)) {
            if high > 0 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "a first record within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn records(topic: &str, expected: usize) -> Vec<Record> {
    let consumer: StreamConsumer = kafka()
        .client_config()
        .set(
            "group.id",
            format!("reader-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut enough_at: Option<Instant> = None;
    while Instant::now() < deadline
        && enough_at.is_none_or(|at| at.elapsed() < Duration::from_secs(2))
    {
        if let Ok(Ok(message)) =
            tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await
        {
            let headers = message.headers().map_or_else(Vec::new, |headers| {
                headers
                    .iter()
                    .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
                    .collect()
            });
            received.push(Record {
                key: message.key().unwrap_or_default().to_vec(),
                value: message.payload().unwrap_or_default().to_vec(),
                headers,
                timestamp: message.timestamp().to_millis(),
            });
        }
        if received.len() >= expected && enough_at.is_none() {
            enough_at = Some(Instant::now());
        }
    }
    received
}

/// A new payment announced on `topics.payment_created` at `at`, and, when
/// `approve`, approved and announced on `payment_completed` in a second
/// commit with a trace context.
async fn announced_payment(
    repository: &MariaDbPaymentRepository,
    topics: &Topics,
    i: usize,
    at: DateTime<Utc>,
    approve: bool,
) -> PaymentId {
    let payment_id = PaymentId::new();
    let (created, events) = decide(
        None,
        &[PaymentCommand::Create {
            payment_id,
            order_id: OrderId::parse(format!("replay-{i}")).unwrap(),
            user_id: UserId::parse("user-replay").unwrap(),
            amount: won(5_000 + i as u64),
            created_at: at,
        }],
    );
    let causation = Causation {
        causation_id: Some(format!("order-placed-{i}")),
        ..Causation::default()
    };
    repository
        .commit(Commit {
            append: Some(Append {
                expected_version: 0,
                events,
                state: created.clone(),
                occurred_at: at,
            }),
            outbox: vec![payment_created(topics, &created, &causation, at)],
            ..Commit::default()
        })
        .await
        .unwrap();
    if approve {
        let key = PaymentKey::parse(format!("tgen_replay_{i}")).unwrap();
        let (approved, events) = decide(
            Some(&created),
            &[
                PaymentCommand::StartConfirmation {
                    payment_key: key.clone(),
                    amount: created.amount(),
                    transaction_id: TransactionId::new(),
                },
                PaymentCommand::Approve {
                    payment_key: key,
                    approved_amount: created.amount(),
                    method: Some("카드".into()),
                    approved_at: at,
                },
            ],
        );
        let traced = Causation {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            ..causation
        };
        repository
            .commit(Commit {
                append: Some(Append {
                    expected_version: created.version(),
                    events,
                    state: approved.clone(),
                    occurred_at: at,
                }),
                outbox: vec![payment_completed(topics, &approved, &traced, at)],
                ..Commit::default()
            })
            .await
            .unwrap();
    }
    payment_id
}

#[sqlx::test(migrations = false)]
async fn outbox_replay_republishes_relayed_messages_byte_for_byte_from_since(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let (pool, topic, topics) = migrated_with_one_topic(pool_options, &db).await;
    let repository = MariaDbPaymentRepository::new(pool.clone());
    let now = Utc::now();
    let since = now - chrono::Duration::seconds(10);
    // One payment before --since, two after (one of them approved too).
    announced_payment(
        &repository,
        &topics,
        1,
        now - chrono::Duration::seconds(20),
        true,
    )
    .await;
    announced_payment(&repository, &topics, 2, now, false).await;
    announced_payment(&repository, &topics, 3, now, true).await;

    // The embedded relay publishes them and deletes their outbox rows.
    let relay = OutboxRelay::new(
        pool.clone(),
        kafka().producer().unwrap(),
        RelaySettings::default(),
        Arc::new(tokio::sync::Notify::new()),
    );
    while relay.relay_once().await.unwrap() > 0 {}
    let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(waiting, 0, "the outbox is empty: replay reads elsewhere");
    let originals = records(&topic, 5).await;
    assert_eq!(originals.len(), 5, "{originals:#?}");

    let brokers = kafka().brokers;
    let since_arg = since.to_rfc3339_opts(SecondsFormat::Micros, true);
    let replay = command_with(&db, &brokers, &["outbox", "replay", "--since", &since_arg]);
    let report = stdout(&replay);
    assert!(
        replay.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(report.contains("republished 3 messages"), "{report}");

    let after = records(&topic, 8).await;
    assert_eq!(after.len(), 8, "three more: {after:#?}");
    assert_eq!(&after[..5], &originals[..], "the originals are untouched");
    let replayed = &after[5..];
    let by_id: HashMap<String, &Record> = originals.iter().map(|r| (r.id(), r)).collect();
    for record in replayed {
        assert_eq!(
            Some(&record),
            by_id.get(&record.id()),
            "the same key, value bytes, headers and timestamp"
        );
    }
    let before_since =
        |r: &&Record| String::from_utf8_lossy(&r.value).contains(r#""orderId":"replay-1""#);
    let mut replayed_ids: Vec<String> = replayed.iter().map(Record::id).collect();
    let mut expected_ids: Vec<String> = originals
        .iter()
        .filter(|r| !before_since(r))
        .map(Record::id)
        .collect();
    replayed_ids.sort();
    expected_ids.sort();
    assert_eq!(
        replayed_ids, expected_ids,
        "those committed since --since, nothing before"
    );
    let traceparent = (
        "traceparent".to_owned(),
        Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec()),
    );
    assert!(
        replayed.iter().any(|r| r.headers.contains(&traceparent)),
        "the trace context travels again"
    );

    // One event by id (the first payment's, before any --since), and an
    // id the log never had.
    let first = originals.iter().find(before_since).unwrap();
    let unknown = uuid::Uuid::now_v7().to_string();
    let one = command_with(
        &db,
        &brokers,
        &[
            "outbox",
            "replay",
            "--event-id",
            &first.id(),
            "--event-id",
            &unknown,
        ],
    );
    let report = stdout(&one);
    assert!(
        !one.status.success(),
        "an id not in the log fails: {report}"
    );
    assert!(report.contains("republished 1 messages"), "{report}");
    assert!(report.contains(&unknown), "{report}");
    let last = records(&topic, 9).await;
    assert_eq!(last.len(), 9);
    assert_eq!(&last[8], first);
}

/// A payment whose confirm was sent and never answered: IN_PROGRESS with
/// an UNKNOWN approval, as a gateway timeout leaves it.
async fn unknown_approval(
    repository: &MariaDbPaymentRepository,
    order: &str,
    amount: u64,
) -> PaymentId {
    let payment_id = PaymentId::new();
    let approval = PaymentTransaction::request(
        payment_id,
        TransactionKind::Approval,
        won(amount),
        Utc::now(),
    );
    let (state, events) = decide(
        None,
        &[
            PaymentCommand::Create {
                payment_id,
                order_id: OrderId::parse(order).unwrap(),
                user_id: UserId::parse("user-reconcile").unwrap(),
                amount: won(amount),
                created_at: Utc::now(),
            },
            PaymentCommand::StartConfirmation {
                payment_key: PaymentKey::parse(format!("tgen_{order}")).unwrap(),
                amount: won(amount),
                transaction_id: approval.id(),
            },
        ],
    );
    repository
        .commit(Commit {
            append: Some(Append {
                expected_version: 0,
                events,
                state,
                occurred_at: Utc::now(),
            }),
            transactions: vec![approval],
            ..Commit::default()
        })
        .await
        .unwrap();
    payment_id
}

async fn status_of(pool: &MySqlPool, payment_id: PaymentId) -> String {
    sqlx::query_scalar("SELECT status FROM payments WHERE payment_id = ?")
        .bind(payment_id.to_string())
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn reconcile_settles_one_payment_and_outbox_stats_shows_what_it_announced(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let pool = pool_options.connect_with(db.clone()).await.unwrap();
    mariadb::migrate(&pool).await.unwrap();
    let repository = MariaDbPaymentRepository::new(pool.clone());
    // The fake gateway holds none of them: reconcile re-sends the pending
    // approval with its own key; the fake approves, or declines an amount
    // ending in 999.
    let approved = unknown_approval(&repository, "reconcile-1", 7_000).await;
    let declined = unknown_approval(&repository, "reconcile-2", 7_999).await;
    let untouched = unknown_approval(&repository, "reconcile-3", 7_000).await;

    let empty = command(&db, &["outbox", "stats"]);
    assert!(
        stdout(&empty).contains("the outbox is empty"),
        "{}",
        stdout(&empty)
    );

    for (payment, settled) in [(approved, "Settled(Done)"), (declined, "Settled(Aborted)")] {
        let output = command(&db, &["reconcile", &payment.to_string()]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            stdout(&output).trim(),
            format!("payment {payment}: {settled}")
        );
    }
    assert_eq!(status_of(&pool, approved).await, "DONE");
    assert_eq!(status_of(&pool, declined).await, "ABORTED");
    assert_eq!(
        status_of(&pool, untouched).await,
        "IN_PROGRESS",
        "only the one asked for"
    );
    let again = command(&db, &["reconcile", &approved.to_string()]);
    assert_eq!(
        stdout(&again).trim(),
        format!("payment {approved}: NothingToDo")
    );

    // No relay runs: the settlements' events wait in the outbox.
    let stats = command(&db, &["outbox", "stats"]);
    assert!(stats.status.success());
    let report = stdout(&stats);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 2, "{report}");
    assert!(
        lines[0].starts_with("koosco.commerce.payment.completed: 1 waiting, oldest 20"),
        "{report}"
    );
    assert!(
        lines[1].starts_with("koosco.commerce.payment.failed: 1 waiting, oldest 20"),
        "{report}"
    );
}

#[sqlx::test(migrations = false)]
async fn outbox_replay_stops_between_batches_on_sigterm_and_says_how_far_it_got(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const MESSAGES: usize = 3_000;
    let (pool, topic, topics) = migrated_with_one_topic(pool_options, &db).await;
    let (payment, _) = decide(
        None,
        &[PaymentCommand::Create {
            payment_id: PaymentId::new(),
            order_id: OrderId::parse("replay-stop").unwrap(),
            user_id: UserId::parse("user-replay").unwrap(),
            amount: won(1_000),
            created_at: Utc::now(),
        }],
    );
    let since = Utc::now() - chrono::Duration::seconds(1);
    let outbox = (0..MESSAGES)
        .map(|_| payment_created(&topics, &payment, &Causation::default(), Utc::now()))
        .collect();
    MariaDbPaymentRepository::new(pool.clone())
        .commit(Commit {
            outbox,
            ..Commit::default()
        })
        .await
        .unwrap();

    // One message per batch: each waits for its ack, so the run lasts
    // seconds, and the signal goes once the first message is out.
    let since_arg = since.to_rfc3339_opts(SecondsFormat::Micros, true);
    let child = Command::new(BIN)
        .args(["outbox", "replay", "--since", &since_arg, "--batch", "1"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PAYMENT__DATABASE__URL", db.to_url_lossy().to_string())
        .env("PAYMENT__KAFKA__BROKERS", kafka().brokers)
        .env("PAYMENT__GATEWAY", "fake")
        .env("PAYMENT__LOG__FORMAT", "pretty")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    first_record(&topic).await;
    let signal = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signal.success());
    let output = child.wait_with_output().unwrap();
    let report = stdout(&output);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains("interrupted (Ctrl-C or SIGTERM)"),
        "{report}"
    );
    let published: usize = report
        .lines()
        .find_map(|line| line.strip_prefix("republished "))
        .and_then(|rest| rest.split_once(' '))
        .map(|(count, _)| count.parse().unwrap())
        .unwrap_or_else(|| panic!("a summary first: {report}"));
    assert!(
        (1..MESSAGES).contains(&published),
        "stopped part way: {report}"
    );
    // Whole batches only: what it counted is what the topic got.
    assert_eq!(records(&topic, published).await.len(), published);
}

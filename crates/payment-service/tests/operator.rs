//! The operator commands of the binary against a real MariaDB:
//! `rebuild-projection` folds 50,000 events back into exactly the live
//! projection, `--verify` finds a row changed by hand, `history` and
//! `outbox stats` read what is there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};
use std::sync::Arc;

use chrono::Utc;
use payment_application::{Append, Commit, PaymentRepository as _};
use payment_domain::{
    execute, Currency, Money, OrderId, Payment, PaymentCommand, PaymentEvent, PaymentId,
    PaymentKey, TransactionId, UserId,
};
use payment_infra::mariadb::{self, MariaDbPaymentRepository};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{ConnectOptions as _, MySqlPool};

const BIN: &str = env!("CARGO_BIN_EXE_payment-service");

fn command(db: &MySqlConnectOptions, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PAYMENT__DATABASE__URL", db.to_url_lossy().to_string())
        .env("PAYMENT__KAFKA__BROKERS", "127.0.0.1:1")
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

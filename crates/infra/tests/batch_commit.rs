//! `commit_all` against a real MariaDB: many commands' commits in ONE
//! transaction (one multi-row statement per table), all of them or none,
//! and a refusal that names the commit at fault.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use payment_application::{
    Append, Commit, InboxEntry, OutboxMessage, PaymentQueries as _, PaymentRepository as _,
    StoreError,
};
use payment_domain::{
    execute, Currency, Money, OrderId, Payment, PaymentCommand, PaymentId, UserId,
};
use payment_infra::mariadb::MariaDbPaymentRepository;
use rust_decimal::Decimal;
use sqlx::MySqlPool;

fn create(order: &str, won: i64) -> PaymentCommand {
    PaymentCommand::Create {
        payment_id: PaymentId::new(),
        order_id: OrderId::parse(order).unwrap(),
        user_id: UserId::parse("user-1").unwrap(),
        amount: Money::new(Decimal::from(won), Currency::Krw).unwrap(),
        created_at: Utc::now(),
    }
}

/// A placed order's commit: the new payment, its announcement and the
/// message's inbox record.
fn placed(message_id: &str, order: &str, won: i64) -> Commit {
    let (state, events) = execute(None, &create(order, won)).unwrap();
    let announced = OutboxMessage {
        id: uuid::Uuid::now_v7(),
        topic: "koosco.commerce.payment.created".into(),
        key: state.id().to_string(),
        event_type: "PaymentCreatedEvent".into(),
        payload: serde_json::json!({ "data": { "orderId": order } }),
        traceparent: None,
        created_at: Utc::now(),
    };
    Commit {
        append: Some(Append {
            expected_version: 0,
            events,
            state,
            occurred_at: Utc::now(),
        }),
        transactions: Vec::new(),
        outbox: vec![announced],
        inbox: Some(InboxEntry {
            consumer: "order.placed".into(),
            message_id: message_id.into(),
        }),
    }
}

fn state(commit: &Commit) -> Payment {
    commit.append.as_ref().unwrap().state.clone()
}

async fn count(pool: &MySqlPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn a_batch_writes_every_commit_in_one_transaction_outbox_in_order(pool: MySqlPool) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    let first = placed("m1", "order-batch-1", 1_000);
    repo.commit(first.clone()).await.unwrap();
    // A change to an existing payment rides along with new ones.
    let expire = {
        let before = state(&first);
        let (after, events) = execute(
            Some(&before),
            &PaymentCommand::Expire {
                expired_at: Utc::now(),
            },
        )
        .unwrap();
        Commit {
            append: Some(Append {
                expected_version: before.version(),
                events,
                state: after,
                occurred_at: Utc::now(),
            }),
            ..Commit::default()
        }
    };
    let batch: Vec<Commit> = (2..=50)
        .map(|n| placed(&format!("m{n}"), &format!("order-batch-{n}"), n * 100))
        .chain([expire.clone()])
        .collect();
    repo.commit_all(batch.clone()).await.unwrap();

    assert_eq!(count(&pool, "payments").await, 50);
    assert_eq!(count(&pool, "payment_events").await, 51);
    assert_eq!(count(&pool, "inbox").await, 50);
    for commit in &batch {
        let expected = state(commit);
        let stored = repo.payment(expected.id()).await.unwrap().unwrap();
        assert_eq!(stored, expected);
    }
    let keys: Vec<String> = sqlx::query_scalar("SELECT aggregateid FROM outbox ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    let expected: Vec<String> = [&first]
        .into_iter()
        .chain(&batch)
        .flat_map(|c| c.outbox.iter().map(|m| m.key.clone()))
        .collect();
    assert_eq!(keys, expected, "outbox rows in commit order");
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn a_batch_with_one_bad_commit_writes_nothing_and_names_it(pool: MySqlPool) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    let seen = placed("m-seen", "order-seen", 1_000);
    repo.commit(seen.clone()).await.unwrap();
    let before = count(&pool, "payment_events").await;

    // A message handled before.
    let batch = vec![
        placed("m-a", "order-a", 1_000),
        Commit {
            inbox: seen.inbox.clone(),
            ..Commit::default()
        },
    ];
    let error = repo.commit_all(batch).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::AlreadyProcessed(entry) if entry.message_id == "m-seen"),
        "{error:?}"
    );

    // A second payment for an order that has one.
    let batch = vec![
        placed("m-b", "order-b", 1_000),
        placed("m-c", "order-seen", 1_000),
    ];
    let error = repo.commit_all(batch).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::DuplicateOrder(order) if order.as_str() == "order-seen"),
        "{error:?}"
    );

    // A stale version.
    let stale = {
        let current = state(&seen);
        let (after, events) = execute(
            Some(&current),
            &PaymentCommand::Expire {
                expired_at: Utc::now(),
            },
        )
        .unwrap();
        repo.commit(Commit {
            append: Some(Append {
                expected_version: current.version(),
                events: events.clone(),
                state: after.clone(),
                occurred_at: Utc::now(),
            }),
            ..Commit::default()
        })
        .await
        .unwrap();
        Commit {
            append: Some(Append {
                expected_version: current.version(),
                events,
                state: after,
                occurred_at: Utc::now(),
            }),
            ..Commit::default()
        }
    };
    let expected_id = state(&seen).id();
    let error = repo
        .commit_all(vec![placed("m-d", "order-d", 1_000), stale])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { payment_id, .. } if *payment_id == expected_id),
        "{error:?}"
    );

    assert_eq!(count(&pool, "payments").await, 1, "nothing of the batches");
    assert_eq!(count(&pool, "payment_events").await, before + 1);
    assert_eq!(count(&pool, "inbox").await, 1);
    assert_eq!(count(&pool, "outbox").await, 1);
}

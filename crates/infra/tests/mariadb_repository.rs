//! The MariaDB repository against a real MariaDB: each test gets a fresh
//! database (sqlx::test creates and drops it) with the embedded migrations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use chrono::Utc;
use payment_application::{
    Append, Classify as _, Commit, InboxEntry, OutboxMessage, PaymentQueries, PaymentRef,
    PaymentRepository, StoreError,
};
use payment_domain::{
    execute, Currency, Money, OrderId, Payment, PaymentCommand, PaymentId, PaymentKey,
    PaymentStatus, PaymentTransaction, TransactionKind, TransactionStatus, UserId,
};
use payment_infra::mariadb::MariaDbPaymentRepository;
use rust_decimal::Decimal;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::MySqlPool;
use tokio::sync::Barrier;

fn krw(won: i64) -> Money {
    Money::new(Decimal::from(won), Currency::Krw).unwrap()
}

fn create_command(order: &str, won: i64) -> PaymentCommand {
    PaymentCommand::Create {
        payment_id: PaymentId::new(),
        order_id: OrderId::parse(order).unwrap(),
        user_id: UserId::parse("user-1").unwrap(),
        amount: krw(won),
        created_at: Utc::now(),
    }
}

/// The commit that turns `command` into events on top of `state`.
fn decided(state: Option<&Payment>, command: &PaymentCommand) -> Commit {
    let (next, events) = execute(state, command).unwrap();
    Commit {
        append: Some(Append {
            expected_version: state.map_or(0, Payment::version),
            events,
            state: next,
            occurred_at: Utc::now(),
        }),
        ..Commit::default()
    }
}

fn outbox_for(payment: &Payment, event_type: &str) -> OutboxMessage {
    OutboxMessage {
        id: uuid::Uuid::now_v7(),
        topic: "koosco.commerce.payment.created".into(),
        key: payment.id().to_string(),
        event_type: event_type.into(),
        payload: serde_json::json!({ "id": "x", "data": { "orderId": payment.order_id().as_str() } }),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        created_at: Utc::now(),
    }
}

async fn count(pool: &MySqlPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A payment taken to DONE through the repository.
async fn done_payment(repo: &MariaDbPaymentRepository, order: &str, won: i64) -> Payment {
    let created = decided(None, &create_command(order, won));
    repo.commit(created.clone()).await.unwrap();
    let mut payment = created.append.unwrap().state;
    let key = PaymentKey::parse("tgen_race").unwrap();
    for command in [
        PaymentCommand::StartConfirmation {
            payment_key: key.clone(),
            amount: krw(won),
            transaction_id: payment_domain::TransactionId::new(),
        },
        PaymentCommand::Approve {
            payment_key: key.clone(),
            approved_amount: krw(won),
            method: Some("CARD".into()),
            approved_at: Utc::now(),
        },
    ] {
        let commit = decided(Some(&payment), &command);
        repo.commit(commit.clone()).await.unwrap();
        payment = commit.append.unwrap().state;
    }
    payment
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn one_commit_writes_events_projection_transactions_outbox_and_inbox(pool: MySqlPool) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    let mut commit = decided(None, &create_command("order-commit-1", 15_000));
    let payment = commit.append.as_ref().unwrap().state.clone();
    let transaction = PaymentTransaction::request(
        payment.id(),
        TransactionKind::Approval,
        payment.amount(),
        Utc::now(),
    );
    commit.transactions = vec![transaction.clone()];
    commit.outbox = vec![outbox_for(&payment, "PaymentCreatedEvent")];
    commit.inbox = Some(InboxEntry {
        consumer: "koosco.commerce.order.placed".into(),
        message_id: "evt-1".into(),
    });

    repo.commit(commit).await.unwrap();

    assert_eq!(
        repo.payment(payment.id()).await.unwrap(),
        Some(payment.clone())
    );
    let (status, balance, version): (String, Decimal, u64) =
        sqlx::query_as("SELECT status, balance_amount, version FROM payments WHERE payment_id = ?")
            .bind(payment.id().to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), balance, version),
        ("READY", Decimal::from(15_000), 1)
    );
    // ascii_bin columns come back as bytes.
    let (tx_status, key): (String, Vec<u8>) = sqlx::query_as(
        "SELECT status, idempotency_key FROM payment_transactions WHERE transaction_id = ?",
    )
    .bind(transaction.id().to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tx_status, "UNKNOWN");
    assert_eq!(key, transaction.idempotency_key().as_bytes());
    let (topic, aggregate, event_type): (String, String, String) =
        sqlx::query_as("SELECT aggregatetype, aggregateid, type FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(topic, "koosco.commerce.payment.created");
    assert_eq!(aggregate, payment.id().to_string());
    assert_eq!(event_type, "PaymentCreatedEvent");
    assert_eq!(count(&pool, "inbox").await, 1);
    assert_eq!(
        repo.find_by_order(payment.order_id()).await.unwrap(),
        Some(payment)
    );
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn the_audit_trail_lists_every_event_in_order(pool: MySqlPool) {
    let repo = MariaDbPaymentRepository::new(pool);
    let payment = done_payment(&repo, "order-trail-1", 9_000).await;
    let trail = repo.events(payment.id()).await.unwrap();
    let types: Vec<_> = trail.iter().map(|e| e.event.event_type()).collect();
    assert_eq!(
        types,
        ["PaymentCreated", "ConfirmationStarted", "PaymentApproved"]
    );
    assert_eq!(
        trail.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        repo.payment(payment.id()).await.unwrap().unwrap().status(),
        PaymentStatus::Done
    );
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn twenty_racing_writers_keep_the_stream_contiguous_and_lose_nothing(
    _pool: MySqlPoolOptions,
    options: MySqlConnectOptions,
) {
    const WRITERS: usize = 20;
    let pool = MySqlPoolOptions::new()
        .max_connections(WRITERS as u32 + 2)
        .connect_with(options)
        .await
        .unwrap();
    let repo = MariaDbPaymentRepository::new(pool.clone());
    let payment = done_payment(&repo, "order-race-1", 10_000).await;
    let start = Arc::new(Barrier::new(WRITERS));

    let writers = (0..WRITERS).map(|_| {
        let repo = repo.clone();
        let start = Arc::clone(&start);
        let id = payment.id();
        tokio::spawn(async move {
            let cancel = PaymentCommand::Cancel {
                amount: Some(krw(100)),
                reason: "race".into(),
                transaction_key: None,
            };
            // Everyone decides on the same version first: exactly one can win.
            let mut state = repo.payment(id).await.unwrap().unwrap();
            start.wait().await;
            let mut conflicts = 0_u32;
            loop {
                match repo.commit(decided(Some(&state), &cancel)).await {
                    Ok(()) => return conflicts,
                    Err(StoreError::Conflict { payment_id, .. }) => {
                        assert_eq!(payment_id, id);
                        conflicts += 1;
                        state = repo.payment(id).await.unwrap().unwrap();
                    }
                    Err(other) => panic!("unexpected error: {other:?}"),
                }
            }
        })
    });
    let conflicts: Vec<u32> = futures::future::try_join_all(writers).await.unwrap();

    let losers_of_first_round = conflicts.iter().filter(|&&c| c > 0).count();
    assert_eq!(
        losers_of_first_round,
        WRITERS - 1,
        "exactly one writer wins each version"
    );
    let trail = repo.events(payment.id()).await.unwrap();
    let versions: Vec<u64> = trail.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=3 + WRITERS as u64).collect::<Vec<_>>());
    let cancels = trail
        .iter()
        .filter(|e| e.event.event_type() == "PaymentCanceled")
        .count();
    assert_eq!(cancels, WRITERS);
    let final_state = repo.payment(payment.id()).await.unwrap().unwrap();
    assert_eq!(final_state.balance(), krw(10_000 - 100 * WRITERS as i64));
    let (projected_version, projected_balance): (u64, Decimal) =
        sqlx::query_as("SELECT version, balance_amount FROM payments WHERE payment_id = ?")
            .bind(payment.id().to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(projected_version, final_state.version());
    assert_eq!(projected_balance, final_state.balance().amount());
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn a_stale_version_gets_a_typed_conflict_and_writes_nothing(pool: MySqlPool) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    let payment = done_payment(&repo, "order-stale-1", 5_000).await;
    let cancel = PaymentCommand::Cancel {
        amount: Some(krw(1_000)),
        reason: "first".into(),
        transaction_key: None,
    };
    repo.commit(decided(Some(&payment), &cancel)).await.unwrap();

    // Decided on the old state (version 3) although version 4 exists.
    let mut stale = decided(Some(&payment), &cancel);
    stale.outbox = vec![outbox_for(&payment, "PaymentCanceledEvent")];
    let error = repo.commit(stale).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Conflict { payment_id, expected_version: 3 } if payment_id == payment.id()),
        "{error:?}"
    );
    assert_eq!(count(&pool, "payment_events").await, 4);
    assert_eq!(count(&pool, "outbox").await, 0);
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn a_second_payment_for_the_same_order_is_refused(pool: MySqlPool) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    repo.commit(decided(None, &create_command("order-dup-1", 1_000)))
        .await
        .unwrap();
    let error = repo
        .commit(decided(None, &create_command("order-dup-1", 1_000)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::DuplicateOrder(order) if order.as_str() == "order-dup-1"),
        "{error:?}"
    );
    assert_eq!(count(&pool, "payments").await, 1);
    assert_eq!(count(&pool, "payment_events").await, 1);
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn a_message_already_in_the_inbox_is_not_applied_again(pool: MySqlPool) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    let entry = InboxEntry {
        consumer: "koosco.commerce.order.placed".into(),
        message_id: "evt-dup".into(),
    };
    let mut first = decided(None, &create_command("order-inbox-1", 1_000));
    first.inbox = Some(entry.clone());
    repo.commit(first).await.unwrap();

    let mut again = decided(None, &create_command("order-inbox-2", 1_000));
    again.inbox = Some(entry.clone());
    let error = repo.commit(again).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::AlreadyProcessed(e) if *e == entry),
        "{error:?}"
    );
    assert_eq!(count(&pool, "payments").await, 1);
    assert_eq!(count(&pool, "inbox").await, 1);
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn a_failure_mid_transaction_leaves_no_partial_write(pool: MySqlPool) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    let mut commit = decided(None, &create_command("order-fail-1", 3_000));
    let payment = commit.append.as_ref().unwrap().state.clone();
    commit.inbox = Some(InboxEntry {
        consumer: "koosco.commerce.order.placed".into(),
        message_id: "evt-fail".into(),
    });
    commit.transactions = vec![PaymentTransaction::request(
        payment.id(),
        TransactionKind::Approval,
        payment.amount(),
        Utc::now(),
    )];
    // The second outbox row reuses the first one's id: the last statement of
    // the transaction fails after everything else was written.
    let message = outbox_for(&payment, "PaymentCreatedEvent");
    commit.outbox = vec![message.clone(), message];

    let error = repo.commit(commit).await.unwrap_err();
    assert!(matches!(error, StoreError::Unexpected(_)), "{error:?}");
    for table in [
        "inbox",
        "payment_events",
        "payments",
        "payment_transactions",
        "outbox",
    ] {
        assert_eq!(count(&pool, table).await, 0, "{table} must be empty");
    }
    assert_eq!(repo.payment(payment.id()).await.unwrap(), None);
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn a_settled_transaction_is_updated_in_place(pool: MySqlPool) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    let payment = done_payment(&repo, "order-settle-1", 2_000).await;
    let mut transaction =
        PaymentTransaction::request(payment.id(), TransactionKind::Cancel, krw(500), Utc::now());
    repo.commit(Commit {
        transactions: vec![transaction.clone()],
        ..Commit::default()
    })
    .await
    .unwrap();
    transaction
        .succeed(Some("txk_1".into()), Utc::now())
        .unwrap();
    repo.commit(Commit {
        transactions: vec![transaction.clone()],
        ..Commit::default()
    })
    .await
    .unwrap();
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, transaction_key FROM payment_transactions")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        [(
            TransactionStatus::Succeeded.as_str().to_owned(),
            Some("txk_1".to_owned())
        )]
    );
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn values_the_database_refuses_are_permanent_and_write_nothing(pool: MySqlPool) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    // A trace header longer than its column (data too long, SQLSTATE 22001).
    let mut long_trace = decided(None, &create_command("order-refused-1", 1_000));
    let payment = long_trace.append.as_ref().unwrap().state.clone();
    let mut message = outbox_for(&payment, "PaymentCreatedEvent");
    message.traceparent = Some(format!("00-{}-b7ad6b7169203331-01", "0".repeat(40)));
    long_trace.outbox = vec![message];
    // A message id that is not ASCII (incorrect string value, SQLSTATE 22007).
    let mut not_ascii = decided(None, &create_command("order-refused-2", 1_000));
    not_ascii.inbox = Some(InboxEntry {
        consumer: "koosco.commerce.order.placed".into(),
        message_id: "evt-주문".into(),
    });
    for commit in [long_trace, not_ascii] {
        let error = repo.commit(commit).await.unwrap_err();
        assert!(matches!(error, StoreError::Unexpected(_)), "{error:?}");
        assert!(error.is_permanent(), "{error:?}");
    }
    for table in ["inbox", "payment_events", "payments", "outbox"] {
        assert_eq!(count(&pool, table).await, 0, "{table} must be empty");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_a_transient_error() {
    // Nothing listens on port 9: the connection is refused.
    let pool = payment_infra::mariadb::connect_lazy(
        "mysql://root@127.0.0.1:9/payment",
        1,
        std::time::Duration::from_millis(500),
    )
    .unwrap();
    let repo = MariaDbPaymentRepository::new(pool);
    let error = repo
        .load(&PaymentRef::Id(PaymentId::new()))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(!error.is_permanent());
    let error = repo
        .commit(decided(None, &create_command("order-down-1", 1_000)))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
}

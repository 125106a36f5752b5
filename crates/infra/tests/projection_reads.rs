//! The reads of the API (`payment`, `find_by_order`) come from the
//! `payments` projection row, not from replaying the stream. Against a real
//! MariaDB: after every kind of command the row read back equals the fold of
//! the stored events (the source of truth), column by column and as a whole,
//! pending cancels included; a row written before the row kept the state is
//! still read right (from the stream).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use payment_application::{
    Append, Commit, PaymentQueries as _, PaymentRepository as _, RecordedEvent,
};
use payment_domain::{
    execute, Currency, Failure, Money, OrderId, Payment, PaymentCommand, PaymentId, PaymentKey,
    TransactionId, UserId,
};
use payment_infra::mariadb::MariaDbPaymentRepository;
use rust_decimal::Decimal;
use sqlx::MySqlPool;

fn krw(won: i64) -> Money {
    Money::new(Decimal::from(won), Currency::Krw).unwrap()
}

fn failure(code: &str) -> Failure {
    Failure {
        code: code.into(),
        message: format!("{code} happened"),
    }
}

/// The stored columns that derive from the state.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Columns {
    status: String,
    balance_amount: Decimal,
    payment_key: Option<String>,
    method: Option<String>,
    failure_code: Option<String>,
    version: u64,
}

fn columns_of(payment: &Payment) -> Columns {
    Columns {
        status: payment.status().as_str().into(),
        balance_amount: payment.balance().amount(),
        payment_key: payment.payment_key().map(|k| k.as_str().to_owned()),
        method: payment.method().map(str::to_owned),
        failure_code: payment.failure().map(|f| f.code.clone()),
        version: payment.version(),
    }
}

/// Runs `commands` one commit each and, after every one, checks that what
/// the reads answer is the fold of the events.
async fn run_and_compare(
    pool: &MySqlPool,
    repo: &MariaDbPaymentRepository,
    order: &str,
    commands: &[PaymentCommand],
) -> Payment {
    let order_id = OrderId::parse(order).unwrap();
    let create = PaymentCommand::Create {
        payment_id: PaymentId::new(),
        order_id: order_id.clone(),
        user_id: UserId::parse("user-1").unwrap(),
        amount: krw(10_000),
        created_at: Utc::now(),
    };
    let mut state: Option<Payment> = None;
    for command in std::iter::once(&create).chain(commands) {
        let (next, events) = execute(state.as_ref(), command)
            .unwrap_or_else(|e| panic!("{}: {e}", command.action()));
        repo.commit(Commit {
            append: Some(Append {
                expected_version: state.as_ref().map_or(0, Payment::version),
                events,
                state: next.clone(),
                occurred_at: Utc::now(),
            }),
            ..Commit::default()
        })
        .await
        .unwrap();
        let id = next.id();
        let events: Vec<RecordedEvent> = repo.events(id).await.unwrap();
        let fold = Payment::replay(events.iter().map(|e| &e.event)).unwrap();
        let action = command.action();
        assert_eq!(fold, next, "{action}: the decision is the fold");
        assert_eq!(
            repo.payment(id).await.unwrap(),
            Some(fold.clone()),
            "{action}"
        );
        assert_eq!(
            repo.find_by_order(&order_id).await.unwrap(),
            Some(fold.clone()),
            "{action}"
        );
        let columns: Columns = sqlx::query_as(
            "SELECT status, balance_amount, CAST(payment_key AS CHAR) AS payment_key, method, \
             failure_code, version \
             FROM payments WHERE payment_id = ?",
        )
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(columns, columns_of(&fold), "{action}");
        state = Some(next);
    }
    state.unwrap()
}

async fn sql(pool: &MySqlPool, statement: &str) {
    sqlx::query(statement).execute(pool).await.unwrap();
}

fn key() -> PaymentKey {
    PaymentKey::parse("tgen_projection").unwrap()
}

fn start() -> PaymentCommand {
    PaymentCommand::StartConfirmation {
        payment_key: key(),
        amount: krw(10_000),
        transaction_id: TransactionId::new(),
    }
}

fn approve() -> PaymentCommand {
    PaymentCommand::Approve {
        payment_key: key(),
        approved_amount: krw(10_000),
        method: Some("카드".into()),
        approved_at: Utc::now(),
    }
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn the_row_read_is_the_fold_of_the_events_after_every_command_kind(pool: MySqlPool) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    let (rejected, confirmed, escalated) = (
        TransactionId::new(),
        TransactionId::new(),
        TransactionId::new(),
    );
    let paid = run_and_compare(
        &pool,
        &repo,
        "order-projection-1",
        &[
            PaymentCommand::RecordAttemptFailure {
                failure: failure("PAY_PROCESS_CANCELED"),
            },
            start(),
            PaymentCommand::RevertConfirmation {
                failure: failure("INVALID_API_KEY"),
            },
            start(),
            approve(),
            PaymentCommand::RequestCancel {
                transaction_id: rejected,
                amount: Some(krw(1_000)),
                reason: "size".into(),
            },
            PaymentCommand::RejectCancel {
                transaction_id: rejected,
                failure: failure("NOT_CANCELABLE_AMOUNT"),
            },
            PaymentCommand::RequestCancel {
                transaction_id: confirmed,
                amount: Some(krw(2_000)),
                reason: "one item".into(),
            },
            PaymentCommand::ConfirmCancel {
                transaction_id: confirmed,
                transaction_key: Some("cancel-tx-1".into()),
            },
            PaymentCommand::Cancel {
                amount: Some(krw(3_000)),
                reason: "in the dashboard".into(),
                transaction_key: Some("cancel-tx-2".into()),
            },
            PaymentCommand::RequestCancel {
                transaction_id: escalated,
                amount: None,
                reason: "the rest".into(),
            },
            PaymentCommand::EscalateCancel {
                transaction_id: escalated,
                reason: "no answer in time".into(),
            },
        ],
    )
    .await;
    assert_eq!(paid.pending_cancels().len(), 1);
    assert!(paid.pending_cancels()[0].escalated);

    run_and_compare(
        &pool,
        &repo,
        "order-projection-2",
        &[
            start(),
            PaymentCommand::Abort {
                failure: failure("REJECT_CARD_COMPANY"),
            },
        ],
    )
    .await;
    run_and_compare(
        &pool,
        &repo,
        "order-projection-3",
        &[PaymentCommand::Expire {
            expired_at: Utc::now(),
        }],
    )
    .await;
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn the_read_is_the_rows_own_and_a_row_without_its_state_is_read_from_the_stream(
    pool: MySqlPool,
) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    let payment = run_and_compare(&pool, &repo, "order-projection-4", &[start(), approve()]).await;
    // The read is the row's: with the stream moved away it still answers.
    let read = || async { repo.payment(payment.id()).await.unwrap() };
    sql(&pool, "RENAME TABLE payment_events TO payment_events_away").await;
    assert_eq!(read().await, Some(payment.clone()));
    assert!(
        repo.events(payment.id()).await.is_err(),
        "the audit trail replays"
    );
    sql(&pool, "RENAME TABLE payment_events_away TO payment_events").await;
    // As a row written before the `state` column existed.
    sql(&pool, "UPDATE payments SET state = NULL").await;
    assert_eq!(read().await, Some(payment.clone()));
    assert_eq!(
        repo.find_by_order(payment.order_id()).await.unwrap(),
        Some(payment)
    );
    assert_eq!(repo.payment(PaymentId::new()).await.unwrap(), None);
}

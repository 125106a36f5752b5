//! The expiry against a real MariaDB: payments that cannot be expired are
//! postponed in the database and skipped by the next selection, however
//! many there are.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::Utc;
use payment_application::{
    Append, Commit, ExpirePayments, PaymentQueries as _, PaymentRepository as _, Topics,
};
use payment_domain::{
    execute, Currency, Money, OrderId, PaymentCommand, PaymentId, PaymentStatus, UserId,
};
use payment_infra::mariadb::MariaDbPaymentRepository;
use rust_decimal::Decimal;
use sqlx::{MySqlPool, Row as _};

fn topics() -> Topics {
    Topics {
        payment_created: "created".into(),
        payment_completed: "completed".into(),
        payment_failed: "failed".into(),
        payment_canceled: "canceled".into(),
        payment_cancel_failed: "cancel.failed".into(),
    }
}

/// A READY payment for `order`, last changed `age` ago.
async fn ready(
    repo: &MariaDbPaymentRepository,
    pool: &MySqlPool,
    order: &str,
    age: chrono::Duration,
) -> PaymentId {
    let create = PaymentCommand::Create {
        payment_id: PaymentId::new(),
        order_id: OrderId::parse(order).unwrap(),
        user_id: UserId::parse("user-1").unwrap(),
        amount: Money::new(Decimal::from(1_000), Currency::Krw).unwrap(),
        created_at: Utc::now() - age,
    };
    let (payment, events) = execute(None, &create).unwrap();
    repo.commit(Commit {
        append: Some(Append {
            expected_version: 0,
            events,
            state: payment.clone(),
            occurred_at: Utc::now() - age,
        }),
        ..Commit::default()
    })
    .await
    .unwrap();
    // The row's own clock, as an hour-old write would have left it.
    sqlx::query("UPDATE payments SET updated_at = ? WHERE payment_id = ?")
        .bind(Utc::now() - age)
        .bind(payment.id().to_string())
        .execute(pool)
        .await
        .unwrap();
    payment.id()
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn payments_that_cannot_be_expired_are_postponed_and_never_hold_back_the_rest(
    pool: MySqlPool,
) {
    let repo = MariaDbPaymentRepository::new(pool.clone());
    let batch = 2;
    // Three stale payments whose stream does not replay: more than a batch,
    // and older than the good one.
    let mut broken = Vec::new();
    for i in 0..3 {
        let age = chrono::Duration::hours(3) - chrono::Duration::minutes(i);
        broken.push(ready(&repo, &pool, &format!("order-broken-{i}"), age).await);
    }
    sqlx::query("UPDATE payment_events SET event_type = 'NoSuchEvent'")
        .execute(&pool)
        .await
        .unwrap();
    let good = ready(&repo, &pool, "order-good-1", chrono::Duration::hours(2)).await;
    let fresh = ready(&repo, &pool, "order-fresh-1", chrono::Duration::minutes(1)).await;
    let expiry = ExpirePayments::new(repo.clone(), topics(), Duration::from_secs(30 * 60), batch);

    let mut expired = 0;
    for _ in 0..3 {
        expired += expiry.run_once().await.unwrap();
    }
    assert_eq!(expired, 1);
    let status = |id| {
        let repo = repo.clone();
        async move { repo.payment(id).await.unwrap().unwrap().status() }
    };
    assert_eq!(status(good).await, PaymentStatus::Expired);
    assert_eq!(status(fresh).await, PaymentStatus::Ready);
    let postponed: Vec<(u32, chrono::DateTime<Utc>)> = sqlx::query_as(
        "SELECT attempts, next_attempt_at FROM payments WHERE status = 'READY' \
         AND payment_id <> ? ORDER BY updated_at",
    )
    .bind(fresh.to_string())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(postponed.len(), broken.len());
    assert!(
        postponed
            .iter()
            .all(|(attempts, next)| *attempts == 1 && *next > Utc::now()),
        "{postponed:?}"
    );
    assert_eq!(
        expiry.run_once().await.unwrap(),
        0,
        "not before the backoff"
    );

    // The selection is one range of the index, in its order.
    let plan: Vec<(Option<String>, Option<String>)> = sqlx::query(
        "EXPLAIN SELECT payment_id, attempts FROM payments \
         WHERE status = 'READY' AND updated_at < NOW(6) AND next_attempt_at <= NOW(6) \
         ORDER BY updated_at LIMIT 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get("key"), row.get("Extra")))
    .collect();
    assert_eq!(
        plan[0].0.as_deref(),
        Some("ix_payments_status_updated"),
        "{plan:?}"
    );
    assert!(
        !plan[0]
            .1
            .as_deref()
            .unwrap_or_default()
            .contains("filesort"),
        "{plan:?}"
    );
}

//! The reconciler against a real MariaDB: an outage backlog drained through
//! the real service and the fake Toss over HTTP; payments that stay
//! unsettled pushed back by a backoff kept in the database, never starving
//! the rest; a payment whose stream does not replay skipped, not halting
//! an expiry or reconcile round.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fake_toss::Scenario;
use payment_application::{
    CancelRequest, ConfirmRequest, ExpirePayments, GatewayOutcome, GatewayPayment, GatewayStatus,
    LookupFailed, PaymentGateway, PaymentQueries as _, Reconciler, ReconcilerSettings, Topics,
};
use payment_domain::{
    OrderId, PaymentCommand, PaymentId, PaymentKey, PaymentStatus, PaymentTransaction,
    TransactionKind, UserId,
};
use payment_e2e::backlog::{confirmation_started, record, unknown_approvals, won, Unknown};
use payment_e2e::kafka;
use payment_e2e::orders::order_placed;
use payment_e2e::toss::{self, TossWorld};
use payment_infra::fake_gateway::FakeGateway;
use payment_infra::mariadb::{MariaDbPaymentRepository, MIGRATOR};
use serde_json::json;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::MySqlPool;

const AMOUNT: i64 = 12_000;

fn topics() -> Topics {
    Topics {
        payment_created: "created".into(),
        payment_completed: "completed".into(),
        payment_failed: "failed".into(),
        payment_canceled: "canceled".into(),
        payment_cancel_failed: "cancel.failed".into(),
    }
}

/// The in-process fake gateway, except for two kinds of orders that stay
/// unsettled: `waiting-*`, a virtual account waiting for its deposit (Toss
/// shows WAITING_FOR_DEPOSIT), and `oddity-*`, a payment Toss shows approved
/// with our key for another amount (a contradiction left for an operator).
/// Counts lookups per order.
#[derive(Debug, Clone, Default)]
struct Stubborn {
    fake: FakeGateway,
    lookups: Arc<Mutex<HashMap<String, usize>>>,
}

impl Stubborn {
    fn lookups_of(&self, order_id: &str) -> usize {
        self.lookups
            .lock()
            .unwrap()
            .get(order_id)
            .copied()
            .unwrap_or(0)
    }

    fn at_toss(order_id: &OrderId, payment_key: PaymentKey) -> Option<GatewayPayment> {
        let (status, amount) = if order_id.as_str().starts_with("waiting-") {
            (GatewayStatus::WaitingForDeposit, AMOUNT)
        } else if order_id.as_str().starts_with("oddity-") {
            (GatewayStatus::Done, AMOUNT + 1)
        } else {
            return None;
        };
        Some(GatewayPayment {
            payment_key,
            order_id: order_id.clone(),
            status,
            total_amount: won(amount),
            balance_amount: won(amount),
            method: Some("가상계좌".into()),
            approved_at: None,
            last_transaction_key: None,
            failure: None,
            cancels: Vec::new(),
        })
    }

    fn key_of(order_id: &OrderId) -> PaymentKey {
        let (prefix, i) = order_id.as_str().rsplit_once('-').unwrap();
        PaymentKey::parse(format!("tgen_{prefix}_{i}")).unwrap()
    }
}

impl PaymentGateway for Stubborn {
    async fn confirm(&self, request: &ConfirmRequest) -> GatewayOutcome {
        match Self::at_toss(&request.order_id, request.payment_key.clone()) {
            Some(stubborn) => GatewayOutcome::Succeeded(stubborn),
            None => self.fake.confirm(request).await,
        }
    }

    async fn cancel(&self, request: &CancelRequest) -> GatewayOutcome {
        self.fake.cancel(request).await
    }

    async fn lookup_by_order(
        &self,
        order_id: &OrderId,
    ) -> Result<Option<GatewayPayment>, LookupFailed> {
        *self
            .lookups
            .lock()
            .unwrap()
            .entry(order_id.as_str().to_owned())
            .or_default() += 1;
        match Self::at_toss(order_id, Self::key_of(order_id)) {
            Some(stubborn) => Ok(Some(stubborn)),
            None => self.fake.lookup_by_order(order_id).await,
        }
    }

    async fn lookup(
        &self,
        payment_key: &PaymentKey,
    ) -> Result<Option<GatewayPayment>, LookupFailed> {
        self.fake.lookup(payment_key).await
    }
}

fn reconciler(
    pool: &MySqlPool,
    gateway: &Stubborn,
    batch: u32,
) -> Reconciler<MariaDbPaymentRepository, Stubborn> {
    Reconciler::new(
        MariaDbPaymentRepository::new(pool.clone()),
        gateway.clone(),
        topics(),
        ReconcilerSettings {
            min_age: Duration::ZERO,
            first_backoff: Duration::from_secs(3_600),
            max_backoff: Duration::from_secs(3_600),
            batch,
            ..ReconcilerSettings::default()
        },
    )
}

async fn status_of(repository: &MariaDbPaymentRepository, unknown: &Unknown) -> PaymentStatus {
    repository
        .payment(unknown.payment_id)
        .await
        .unwrap()
        .unwrap()
        .status()
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn payments_that_stay_unsettled_never_starve_the_rest(pool: MySqlPool) {
    const STUBBORN: usize = 4;
    let repository = MariaDbPaymentRepository::new(pool.clone());
    let minutes_ago = |m| Utc::now() - chrono::Duration::minutes(m);
    // The stubborn ones are the oldest: a selection of "the oldest n"
    // would see nothing else.
    let waiting =
        unknown_approvals(&repository, "waiting", STUBBORN, AMOUNT, minutes_ago(5), 4).await;
    let odd = unknown_approvals(&repository, "oddity", STUBBORN, AMOUNT, minutes_ago(4), 4).await;
    let good = unknown_approvals(&repository, "settles", 10, AMOUNT, minutes_ago(1), 4).await;
    let gateway = Stubborn::default();
    let first = reconciler(&pool, &gateway, u32::try_from(STUBBORN).unwrap());

    let mut settled = 0;
    for _ in 0..3 {
        settled += first.run_once().await.unwrap();
    }
    assert_eq!(settled, good.len());
    for payment in &good {
        assert_eq!(status_of(&repository, payment).await, PaymentStatus::Done);
    }
    for payment in waiting.iter().chain(&odd) {
        assert_eq!(
            status_of(&repository, payment).await,
            PaymentStatus::InProgress
        );
        assert_eq!(
            gateway.lookups_of(&payment.order_id),
            1,
            "{} pushed back by its backoff",
            payment.order_id
        );
    }

    // The backoff is in the database: a restarted reconciler keeps it.
    let restarted = reconciler(&pool, &gateway, 100);
    assert_eq!(restarted.run_once().await.unwrap(), 0);
    for payment in waiting.iter().chain(&odd) {
        assert_eq!(gateway.lookups_of(&payment.order_id), 1);
    }
}

/// Places `count` orders `{prefix}-{i}` and waits for their payments.
async fn place_orders(w: &TossWorld, prefix: &str, count: usize) -> Vec<String> {
    let orders: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    let messages: Vec<(String, Vec<u8>)> = orders
        .iter()
        .map(|order| {
            let amount = u64::try_from(AMOUNT).unwrap();
            (
                order.clone(),
                order_placed(&format!("evt-{order}"), order, amount),
            )
        })
        .collect();
    kafka::publish_all(&kafka::producer(), &w.topics.order_placed, &messages).await;
    wait_count(&w.pool, "READY", count).await;
    orders
}

async fn count_in(pool: &MySqlPool, status: &str) -> usize {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE status = ?")
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap();
    usize::try_from(n).unwrap()
}

async fn wait_count(pool: &MySqlPool, status: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = count_in(pool, status).await;
        if now == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} of {count} payments {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test(migrations = false)]
async fn an_outage_backlog_is_drained_each_payment_approved_once(
    pool_options: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    const PAYMENTS: usize = 60;
    let w = TossWorld::start(pool_options, db, toss::Reconciler::Fast, 500).await;
    let orders = place_orders(&w, "order-outage", PAYMENTS).await;

    // The PG is down: every confirm is answered 500, nothing is approved.
    w.toss.set_scenario(Scenario::ServerError);
    let confirms = orders.iter().enumerate().map(|(i, order)| {
        let key = format!("tgen_outage_{i}");
        let w = &w;
        async move {
            let amount = u64::try_from(AMOUNT).unwrap();
            w.confirm(&key, order, amount).await.status()
        }
    });
    let answered = futures::future::join_all(confirms).await;
    assert!(answered.iter().all(|s| s.as_u16() == 202), "{answered:?}");
    assert_eq!(count_in(&w.pool, "IN_PROGRESS").await, PAYMENTS);

    // The PG is back.
    w.toss.set_scenario(Scenario::Approve);
    wait_count(&w.pool, "DONE", PAYMENTS).await;
    let calls = w.toss.calls();
    assert_eq!(calls.confirms_approved, PAYMENTS as u64, "{calls:?}");
    for i in 0..PAYMENTS {
        let at_toss = w.toss.payment(&format!("tgen_outage_{i}")).unwrap();
        assert_eq!(at_toss["status"], "DONE");
        assert_eq!(at_toss["totalAmount"], json!(AMOUNT));
    }
    let completed = kafka::read_until(
        &w.topics.payment_completed,
        Duration::from_secs(30),
        |seen| seen.len() >= PAYMENTS,
    )
    .await;
    assert_eq!(completed.len(), PAYMENTS, "one PaymentCompletedEvent each");
    w.app.stop().await.unwrap();
}

/// Breaks a payment's first event beyond replay: valid JSON, not an event.
async fn corrupt(pool: &MySqlPool, payment_id: PaymentId) {
    let changed = sqlx::query(
        "UPDATE payment_events SET data = '{\"garbled\": true}' \
         WHERE payment_id = ? AND version = 1",
    )
    .bind(payment_id.to_string())
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 1);
}

async fn ready_payment(
    repository: &MariaDbPaymentRepository,
    order_id: &str,
    at: DateTime<Utc>,
) -> PaymentId {
    let payment_id = PaymentId::new();
    let create = PaymentCommand::Create {
        payment_id,
        order_id: OrderId::parse(order_id).unwrap(),
        user_id: UserId::parse("u-1").unwrap(),
        amount: won(AMOUNT),
        created_at: at,
    };
    record(repository, &[create], Vec::new(), at).await;
    payment_id
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn payments_that_do_not_replay_are_postponed_and_the_expiry_goes_on(pool: MySqlPool) {
    let repository = MariaDbPaymentRepository::new(pool.clone());
    let hours_ago = |h| Utc::now() - chrono::Duration::hours(h);
    // More broken payments than a batch, older than the good one: skipped
    // but left due, they would head every selection for ever.
    let batch = 2;
    for i in 0..3 {
        let at = hours_ago(4) + chrono::Duration::minutes(i);
        let broken = ready_payment(&repository, &format!("order-broken-{i}"), at).await;
        corrupt(&pool, broken).await;
    }
    let fine = ready_payment(&repository, "order-fine-1", hours_ago(2)).await;

    let expiry = ExpirePayments::new(
        repository.clone(),
        topics(),
        Duration::from_secs(1_800),
        batch,
    );
    let mut expired = 0;
    for _ in 0..3 {
        expired += expiry.run_once().await.unwrap();
    }
    assert_eq!(expired, 1);
    let expired = repository.payment(fine).await.unwrap().unwrap();
    assert_eq!(expired.status(), PaymentStatus::Expired);
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn a_payment_that_does_not_replay_is_skipped_and_the_reconciler_goes_on(pool: MySqlPool) {
    let repository = MariaDbPaymentRepository::new(pool.clone());
    let minutes_ago = |m| Utc::now() - chrono::Duration::minutes(m);
    // An approval and a cancel whose outcome is unknown, both unreadable.
    let broken_approval =
        unknown_approvals(&repository, "broken-approval", 1, AMOUNT, minutes_ago(9), 1).await;
    corrupt(&pool, broken_approval[0].payment_id).await;
    let at = minutes_ago(8);
    let mut approval =
        PaymentTransaction::request(PaymentId::new(), TransactionKind::Approval, won(AMOUNT), at);
    let cancel = PaymentTransaction::request(
        approval.payment_id(),
        TransactionKind::Cancel,
        won(AMOUNT),
        at,
    );
    let mut commands = confirmation_started(&approval, "order-broken-cancel", "tgen_broken_c");
    commands.push(PaymentCommand::Approve {
        payment_key: PaymentKey::parse("tgen_broken_c").unwrap(),
        approved_amount: won(AMOUNT),
        method: Some("카드".into()),
        approved_at: at,
    });
    commands.push(PaymentCommand::RequestCancel {
        transaction_id: cancel.id(),
        amount: None,
        reason: "returned".into(),
    });
    approval.succeed(Some("txk-approved".into()), at).unwrap();
    record(&repository, &commands, vec![approval.clone(), cancel], at).await;
    corrupt(&pool, approval.payment_id()).await;
    let fine = unknown_approvals(&repository, "fine", 3, AMOUNT, minutes_ago(1), 3).await;

    let round = reconciler(&pool, &Stubborn::default(), 100);
    assert_eq!(round.run_once().await.unwrap(), fine.len());
    for payment in &fine {
        assert_eq!(status_of(&repository, payment).await, PaymentStatus::Done);
    }
}

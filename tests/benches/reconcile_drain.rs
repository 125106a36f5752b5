//! How fast the reconciler drains an outage backlog: `BACKLOG` payments
//! IN_PROGRESS with an UNKNOWN approval (written straight through the
//! store), resolved against a PG answering at once — the in-process fake
//! gateway (`PAYMENT__GATEWAY=fake`'s), which has no record of them, so each
//! is looked up and confirmed again, as after a real outage. Prints the
//! settled/s for each concurrency in `CONCURRENCY` (default `16`, e.g.
//! `RECONCILE_CONCURRENCY=1,8,16`).
//!
//! Needs the local stack: `scripts/stack.sh up && source .stack/env &&
//! cargo bench -p payment-e2e --bench reconcile_drain`. One line per run,
//! `reconcile_drain concurrency=… settled=… seconds=… settled_per_s=…`,
//! for the bench harness to read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use chrono::Utc;
use payment_application::{Reconciler, ReconcilerSettings, Topics};
use payment_e2e::backlog::unknown_approvals;
use payment_infra::fake_gateway::FakeGateway;
use payment_infra::mariadb::{self, MariaDbPaymentRepository};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::MySqlPool;
use uuid::Uuid;

const BACKLOG: usize = 10_000;

#[tokio::main]
async fn main() {
    let concurrencies: Vec<usize> = std::env::var("RECONCILE_CONCURRENCY")
        .unwrap_or_else(|_| "16".into())
        .split(',')
        .map(|n| n.trim().parse().expect("RECONCILE_CONCURRENCY: numbers"))
        .collect();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (source .stack/env)");
    let admin = MySqlPool::connect(&base).await.unwrap();
    println!("reconciler drain: {BACKLOG} unknown approvals, in-process fake gateway");
    for concurrency in concurrencies {
        let database = format!("bench_{}", Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&admin)
            .await
            .unwrap();
        let url = format!("{}/{database}", base.rsplit_once('/').unwrap().0);
        let connections = u32::try_from(concurrency).unwrap() + 2;
        let pool = MySqlPoolOptions::new()
            .max_connections(connections)
            .connect(&url)
            .await
            .unwrap();
        mariadb::migrate(&pool).await.unwrap();
        drain(&pool, concurrency).await;
        pool.close().await;
        sqlx::query(&format!("DROP DATABASE {database}"))
            .execute(&admin)
            .await
            .unwrap();
    }
}

async fn drain(pool: &MySqlPool, concurrency: usize) {
    let repository = MariaDbPaymentRepository::new(pool.clone());
    let written = Instant::now();
    let an_outage_ago = Utc::now() - chrono::Duration::minutes(2);
    unknown_approvals(&repository, "backlog", BACKLOG, 12_000, an_outage_ago, 16).await;
    println!(
        "  backlog written in {:.1} s",
        written.elapsed().as_secs_f64()
    );

    let reconciler = Reconciler::new(
        repository,
        FakeGateway::default(),
        Topics {
            payment_created: "payment.created".into(),
            payment_completed: "payment.completed".into(),
            payment_failed: "payment.failed".into(),
            payment_canceled: "payment.canceled".into(),
            payment_cancel_failed: "payment.cancel.failed".into(),
        },
        ReconcilerSettings {
            min_age: Duration::ZERO,
            concurrency,
            ..ReconcilerSettings::default()
        },
    );
    let started = Instant::now();
    let mut settled = 0;
    while settled < BACKLOG {
        let round = reconciler.run_once().await.unwrap();
        assert!(
            round > 0,
            "a round settled nothing ({settled} of {BACKLOG})"
        );
        settled += round;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE status = 'DONE'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(usize::try_from(done).unwrap(), BACKLOG);
    #[allow(clippy::cast_precision_loss)]
    let rate = settled as f64 / seconds;
    println!(
        "reconcile_drain concurrency={concurrency} settled={settled} seconds={seconds:.2} \
         settled_per_s={rate:.0}"
    );
}

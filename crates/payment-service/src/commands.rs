//! Operator commands of the binary: `rebuild-projection`, `history`,
//! `reconcile`, `outbox stats`, `outbox replay`. Each connects to the
//! configured database (and gateway or broker) and works without a running
//! service.
//!
//! Long runs show a progress bar (on a terminal) and stop cleanly on
//! Ctrl-C or SIGTERM: the batch in hand is finished, nothing after it is
//! started, and the summary says how far it got.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use payment_application::{PaymentQueries as _, Reconciler};
use payment_domain::PaymentId;
use payment_infra::mariadb::{Folded, MariaDbPaymentRepository, ProjectionRebuild};
use payment_infra::outbox_replay::{OutboxReplay, ReplayFilter, Replayed};
use sqlx::MySqlPool;
use uuid::Uuid;

use crate::startup::{
    announced_topics, database_pool, gateway, kafka_settings, reconciler_settings, shutdown_signal,
};
use crate::Config;

/// `rebuild-projection`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct RebuildArgs {
    /// Only this payment.
    #[arg(long)]
    pub payment: Option<PaymentId>,
    /// Compare only; write nothing (exit status 1 when a row differs).
    #[arg(long)]
    pub verify: bool,
    /// Payments folded per batch (one transaction when rewriting).
    #[arg(long, default_value_t = 500)]
    pub batch: u32,
}

/// What a rebuild found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RebuildSummary {
    pub payments: u64,
    pub events: u64,
    pub differing: u64,
    pub rewritten: u64,
    pub unreplayable: u64,
    /// Stopped by Ctrl-C before the end.
    pub interrupted: bool,
}

/// `outbox replay`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Republish the messages committed at or after this time (RFC 3339,
    /// e.g. 2026-12-02T09:00:00Z).
    #[arg(long, required_unless_present = "event_id")]
    pub since: Option<DateTime<Utc>>,
    /// ... and before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Only this event (its CloudEvent `id`, the `id` header); repeatable.
    #[arg(long = "event-id", value_name = "ID")]
    pub event_id: Vec<Uuid>,
    /// Only the messages to this topic; repeatable.
    #[arg(long, value_name = "TOPIC")]
    pub topic: Vec<String>,
    /// Messages read and published per batch.
    #[arg(long, default_value_t = 500)]
    pub batch: u32,
}

/// How many differing payments the summary lists one by one.
const LISTED: usize = 20;

/// Set by Ctrl-C or SIGTERM; checked between batches.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    tokio::spawn(async move {
        shutdown_signal().await;
        set.store(true, Ordering::SeqCst);
    });
    flag
}

/// A progress bar counting `unit`s (drawn on a terminal only).
fn progress(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Folds every payment's events (or one payment's) and compares the fold
/// with the `payments` row; rewrites the rows that differ unless `verify`.
///
/// # Errors
/// When the database fails; with `verify`, when a row differs (after the
/// summary is printed).
pub async fn rebuild_projection(config: &Config, args: &RebuildArgs) -> anyhow::Result<()> {
    let pool = database_pool(config)?;
    let rebuild = ProjectionRebuild::new(pool.clone());
    let interrupted = interrupt_flag();
    let started = Instant::now();
    let total = match args.payment {
        Some(_) => 0,
        None => rebuild.event_count().await?,
    };
    let bar = progress(total, "events");
    let mut summary = RebuildSummary::default();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        if interrupted.load(Ordering::SeqCst) {
            summary.interrupted = true;
            break;
        }
        let ids = match args.payment {
            Some(id) if after.is_none() => vec![id],
            Some(_) => Vec::new(),
            None => rebuild.next_payments(after, args.batch.max(1)).await?,
        };
        let Some(last) = ids.last().copied() else {
            break;
        };
        after = Some(last);
        let folded = rebuild.fold(&ids).await?;
        for one in &folded {
            summary.payments += 1;
            summary.events += one.events;
            if let Err(reason) = &one.payment {
                summary.unreplayable += 1;
                if listed.len() < LISTED {
                    listed.push(format!("{}: does not replay: {reason}", one.payment_id));
                }
            } else if !one.differences.is_empty() {
                summary.differing += 1;
                if listed.len() < LISTED {
                    listed.push(describe(one));
                }
            }
            bar.inc(one.events);
        }
        if !args.verify {
            summary.rewritten += rebuild.rewrite(&folded).await?;
        }
    }
    bar.finish_and_clear();
    pool.close().await;
    let seconds = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)] // a rate for people to read
    let rate = summary.events as f64 / seconds.max(f64::EPSILON);
    println!(
        "{} {} payments ({} events) in {seconds:.1} s ({rate:.0} events/s): {} equal, {} differ{}, {} do not replay{}",
        if args.verify { "verified" } else { "rebuilt" },
        summary.payments,
        summary.events,
        summary.payments - summary.differing - summary.unreplayable,
        summary.differing,
        if args.verify {
            String::new()
        } else {
            format!(" ({} rewritten)", summary.rewritten)
        },
        summary.unreplayable,
        if summary.interrupted {
            " — interrupted (Ctrl-C or SIGTERM), the rest was not examined"
        } else {
            ""
        },
    );
    for line in &listed {
        println!("  {line}");
    }
    if args.verify && summary.differing + summary.unreplayable > 0 {
        anyhow::bail!(
            "{} payments do not match their events",
            summary.differing + summary.unreplayable
        );
    }
    Ok(())
}

fn describe(folded: &Folded) -> String {
    let status = folded
        .payment
        .as_ref()
        .map(|p| format!("{} v{}", p.status(), p.version()))
        .unwrap_or_default();
    format!(
        "{}: {} differ (events say {status})",
        folded.payment_id,
        folded.differences.join(", ")
    )
}

/// Prints a payment's events and gateway transactions.
///
/// # Errors
/// When the database fails or the payment does not exist.
pub async fn history(config: &Config, payment_id: PaymentId) -> anyhow::Result<()> {
    let pool = database_pool(config)?;
    let repository = MariaDbPaymentRepository::new(pool.clone());
    let payment = repository
        .payment(payment_id)
        .await?
        .with_context(|| format!("no payment {payment_id}"))?;
    println!(
        "payment {payment_id}  order {}  {}  {} ({} still cancelable)  v{}",
        payment.order_id(),
        payment.status(),
        payment.amount(),
        payment.balance(),
        payment.version()
    );
    println!("events:");
    for recorded in repository.events(payment_id).await? {
        let event = serde_json::to_value(&recorded.event).context("event as JSON")?;
        println!(
            "  v{:<3} {}  {:<22} {}",
            recorded.version,
            recorded
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            recorded.event.event_type(),
            event.get("data").unwrap_or(&event)
        );
    }
    println!("gateway transactions:");
    for transaction in repository.transactions(payment_id).await? {
        println!(
            "  {} {:<8} {:<9} {}  requested {}{}{}{}",
            transaction.id(),
            transaction.kind().as_str(),
            transaction.status().as_str(),
            transaction.amount(),
            transaction
                .requested_at()
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            transaction
                .completed_at()
                .map(|t| format!(
                    "  completed {}",
                    t.to_rfc3339_opts(SecondsFormat::Millis, true)
                ))
                .unwrap_or_default(),
            transaction
                .transaction_key()
                .map(|k| format!("  key {k}"))
                .unwrap_or_default(),
            transaction
                .failure_code()
                .map(|c| format!("  failed {c}"))
                .unwrap_or_default(),
        );
    }
    pool.close().await;
    Ok(())
}

/// Settles one payment now: the reconciler's pass for it (lookup at the
/// gateway, the pending approval re-sent with its own key if the gateway
/// has not decided), without waiting for its backoff; then each of its
/// cancels whose outcome is unknown, escalated ones included (those only
/// looked up at the gateway, never sent again).
///
/// # Errors
/// When the payment does not exist or an answer cannot be recorded.
pub async fn reconcile(config: &Config, payment_id: PaymentId) -> anyhow::Result<()> {
    let pool = database_pool(config)?;
    let reconciler = Reconciler::new(
        MariaDbPaymentRepository::new(pool.clone()),
        gateway(config)?,
        announced_topics(config),
        reconciler_settings(config),
    );
    let outcome = reconciler.reconcile(payment_id).await;
    let cancels = match &outcome {
        Ok(_) => reconciler.reconcile_cancels(payment_id).await,
        Err(_) => Ok(Vec::new()),
    };
    pool.close().await;
    println!("payment {payment_id}: {:?}", outcome?);
    let mut failed = None;
    for (transaction_id, resolved) in cancels? {
        match resolved {
            Ok(resolved) => println!("cancel {transaction_id}: {resolved:?}"),
            Err(error) => {
                println!("cancel {transaction_id}: not settled: {error}");
                failed = Some(error);
            }
        }
    }
    failed.map_or(Ok(()), |error| Err(error.into()))
}

/// Prints what waits in the outbox, per topic.
///
/// # Errors
/// When the database fails.
pub async fn outbox_stats(config: &Config) -> anyhow::Result<()> {
    let pool = database_pool(config)?;
    let stats = waiting(&pool).await;
    pool.close().await;
    let stats = stats?;
    if stats.is_empty() {
        println!("the outbox is empty");
    }
    for (topic, rows, oldest) in stats {
        println!(
            "{topic}: {rows} waiting, oldest {}",
            oldest.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
    }
    Ok(())
}

async fn waiting(
    pool: &MySqlPool,
) -> anyhow::Result<Vec<(String, i64, chrono::DateTime<chrono::Utc>)>> {
    sqlx::query_as(
        "SELECT aggregatetype, COUNT(*), MIN(created_at) FROM outbox \
         GROUP BY aggregatetype ORDER BY aggregatetype",
    )
    .fetch_all(pool)
    .await
    .context("read outbox")
}

/// Republishes logged outbox messages (`outbox_log`) exactly as they were
/// first published, in commit order, a batch at a time, with a progress
/// bar; stops between batches on Ctrl-C or SIGTERM and prints a summary.
///
/// # Errors
/// When the database or the broker fails (the summary says how far it
/// got), or an asked-for event id is not in the log.
pub async fn outbox_replay(config: &Config, args: &ReplayArgs) -> anyhow::Result<()> {
    let pool = database_pool(config)?;
    let replay = OutboxReplay::new(pool.clone(), kafka_settings(config).producer()?);
    let outcome = replaying(&replay, args).await;
    pool.close().await;
    let summary = outcome?;
    summary.print();
    if let Some(unacked) = &summary.unacked {
        anyhow::bail!(
            "the broker did not ack event {} (log seq {}) to {}; the replay stopped there",
            unacked.id,
            unacked.seq,
            unacked.topic
        );
    }
    if !summary.missing.is_empty() {
        anyhow::bail!(
            "{} event ids are not in the outbox log",
            summary.missing.len()
        );
    }
    Ok(())
}

/// What a replay did.
#[derive(Debug, Default)]
struct ReplaySummary {
    published: u64,
    by_topic: BTreeMap<String, u64>,
    seconds: f64,
    /// Asked-for ids the log does not hold.
    missing: Vec<Uuid>,
    /// Since when the log holds every message, and how many events of the
    /// window precede that.
    predating: Option<(DateTime<Utc>, u64)>,
    unacked: Option<Replayed>,
    interrupted: bool,
}

async fn replaying(replay: &OutboxReplay, args: &ReplayArgs) -> anyhow::Result<ReplaySummary> {
    let interrupted = interrupt_flag();
    let started = Instant::now();
    let mut filter = ReplayFilter {
        since: args.since,
        until: args.until,
        event_ids: args.event_id.clone(),
        topics: args.topic.clone(),
        through_seq: None,
    };
    // What is logged from now on is the relay's to publish, not ours.
    filter.through_seq = Some(replay.last_seq().await?);
    let mut summary = ReplaySummary {
        missing: replay.missing(&args.event_id).await?,
        predating: match args.since {
            Some(since) => replay.predating(since, args.until).await?,
            None => None,
        },
        ..ReplaySummary::default()
    };
    let bar = progress(replay.count(&filter).await?, "messages");
    let mut after = replay.start(&filter).await?;
    loop {
        if interrupted.load(Ordering::SeqCst) {
            summary.interrupted = true;
            break;
        }
        let batch = replay
            .replay_batch(&filter, after, args.batch.max(1))
            .await?;
        let Some(last) = batch.last_seq else {
            break;
        };
        after = last;
        for published in &batch.published {
            summary.published += 1;
            *summary.by_topic.entry(published.topic.clone()).or_default() += 1;
        }
        bar.inc(batch.published.len() as u64);
        if batch.unacked.is_some() {
            summary.unacked = batch.unacked;
            break;
        }
    }
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

impl ReplaySummary {
    fn print(&self) {
        #[allow(clippy::cast_precision_loss)] // a rate for people to read
        let rate = self.published as f64 / self.seconds.max(f64::EPSILON);
        println!(
            "republished {} messages in {:.1} s ({rate:.0}/s){}",
            self.published,
            self.seconds,
            if self.interrupted {
                " — interrupted (Ctrl-C or SIGTERM) after a whole batch; the rest was not \
                 republished (running it again republishes from the start: consumers \
                 deduplicate on the event id)"
            } else {
                ""
            }
        );
        for (topic, count) in &self.by_topic {
            println!("  {topic}: {count}");
        }
        if let Some((logged_since, events)) = self.predating.filter(|(_, events)| *events > 0) {
            println!(
                "skipped: {events} payment events committed before the outbox log holds every \
                 message ({}: logging began, or older messages passed its retention); their \
                 messages cannot be republished",
                logged_since.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
        for id in &self.missing {
            println!("not in the outbox log: {id}");
        }
    }
}

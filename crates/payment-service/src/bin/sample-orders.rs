//! `sample-orders`: publishes sample `OrderPlacedEvent`s (CloudEvents JSON,
//! as the order service sends them) so the order → payment flow can be
//! watched by hand.
//!
//! ```sh
//! source .stack/env
//! cargo run -p payment-service --bin sample-orders -- --count 3 --amount 15000
//! cargo run -p payment-service --bin sample-orders -- --count 1 --repeat 3   # duplicates
//! ```

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{SecondsFormat, Utc};
use clap::Parser;
use payment_infra::kafka::KafkaSettings;
use rdkafka::producer::FutureRecord;
use serde_json::json;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(name = "sample-orders", about = "Publish sample OrderPlacedEvents")]
struct Args {
    #[arg(
        long,
        env = "PAYMENT__KAFKA__BROKERS",
        default_value = "127.0.0.1:19092"
    )]
    brokers: String,
    #[arg(
        long,
        env = "PAYMENT__TOPICS__ORDER_PLACED",
        default_value = "koosco.commerce.order.placed"
    )]
    topic: String,
    /// How many orders.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Each order's amount.
    #[arg(long, default_value = "15000")]
    amount: String,
    #[arg(long, default_value = "KRW")]
    currency: String,
    /// Send every event this many times (same event id: the service must
    /// create one payment).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sample-orders: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let producer = KafkaSettings {
        brokers: args.brokers.clone(),
        client_id: "sample-orders".into(),
        group_id: String::new(),
        session_timeout: Duration::from_secs(10),
        debug: None,
    }
    .producer()?;
    let amount: serde_json::Number = args.amount.parse().context("--amount must be a number")?;
    for _ in 0..args.count {
        let event_id = Uuid::now_v7();
        let order_id = format!("order-{}", event_id.simple());
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let event = json!({
            "id": event_id,
            "source": "/order-service",
            "specversion": "1.0",
            "type": "OrderPlacedEvent",
            "time": now,
            "subject": order_id,
            "datacontenttype": "application/json",
            "data": {
                "orderId": order_id,
                "userId": "sample-user",
                "amount": amount,
                "currency": args.currency,
                "occurredAt": now,
            },
        })
        .to_string();
        for _ in 0..args.repeat {
            producer
                .send(
                    FutureRecord::to(&args.topic).key(&order_id).payload(&event),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(error, _)| error)
                .with_context(|| format!("publish to {}", args.topic))?;
        }
        println!(
            "{order_id}\tevent {event_id}\t{} {}\t×{}",
            args.amount, args.currency, args.repeat
        );
    }
    Ok(())
}

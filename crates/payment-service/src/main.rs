//! `payment-service serve | migrate` and the operator commands
//! (`rebuild-projection`, `history`, `reconcile`, `outbox stats|replay`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use payment_domain::PaymentId;
use payment_service::commands::{self, RebuildArgs, ReplayArgs};
use payment_service::{startup, telemetry, Application, Config};

#[derive(Debug, Parser)]
#[command(
    name = "payment-service",
    version,
    about = "Payments through Toss, events through Kafka"
)]
struct Cli {
    /// A TOML file layered between the defaults and the PAYMENT__… environment.
    #[arg(long, global = true, env = "PAYMENT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: HTTP, consumers, outbox relay (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print a bearer token signed with auth.hs256_secret (local development).
    DevToken {
        /// The user (`sub`).
        #[arg(long, default_value = "dev-user")]
        sub: String,
        /// Space-separated scopes, e.g. `payments:admin`.
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 8 * 3_600)]
        ttl_secs: u64,
    },
    /// Fold the events and compare with (`--verify`) or rewrite the `payments` projection.
    RebuildProjection(RebuildArgs),
    /// One payment's events and gateway transactions, human-readable.
    History {
        /// The payment id.
        payment: PaymentId,
    },
    /// Settle one payment now, as the reconciler would (lookup, then the same-key retry).
    Reconcile {
        /// The payment id.
        payment: PaymentId,
    },
    /// The outbox.
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// What waits to be published, per topic.
    Stats,
    /// Republish integration events, byte for byte, from the outbox log.
    ///
    /// Every message the service commits to the outbox is also kept in the
    /// outbox log, which outlives the relay. `replay` sends the chosen ones
    /// again exactly as they were first published: the same topic, key,
    /// value bytes, headers (id, eventType, traceparent) and timestamp, each
    /// key's in commit order. This is safe: consumers deduplicate on the
    /// event id, so a republished event is a redelivery to them. Events
    /// committed before the outbox log existed cannot be republished; they
    /// are counted as skipped. Ctrl-C or SIGTERM stops it between batches.
    Replay(ReplayArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("payment-service: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(&config.log);
    match run(cli.command, &config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "payment-service failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: &Config) -> anyhow::Result<()> {
    match command {
        Command::DevToken {
            sub,
            scope,
            ttl_secs,
        } => {
            println!("{}", dev_token(config, sub, scope, ttl_secs)?);
            Ok(())
        }
        Command::Serve => {
            Application::build(config)
                .await?
                .run_until_stopped(startup::shutdown_signal())
                .await
        }
        Command::Migrate => {
            let pool = startup::database_pool(config)?;
            payment_infra::mariadb::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::RebuildProjection(args) => commands::rebuild_projection(config, &args).await,
        Command::History { payment } => commands::history(config, payment).await,
        Command::Reconcile { payment } => commands::reconcile(config, payment).await,
        Command::Outbox(OutboxCommand::Stats) => commands::outbox_stats(config).await,
        Command::Outbox(OutboxCommand::Replay(args)) => {
            commands::outbox_replay(config, &args).await
        }
    }
}

/// A token the service configured by `config` accepts: HS256 only (public
/// keys verify, they cannot sign).
fn dev_token(
    config: &Config,
    sub: String,
    scope: Option<String>,
    ttl_secs: u64,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use secrecy::ExposeSecret as _;

    let secret =
        config.auth.hs256_secret.as_ref().context(
            "dev-token signs with auth.hs256_secret (PAYMENT__AUTH__HS256_SECRET): set it",
        )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_secs();
    let claims = payment_api::Claims {
        sub,
        scope,
        exp: now + ttl_secs,
        iss: config.auth.issuer.clone(),
        aud: config.auth.audience.clone(),
    };
    Ok(payment_api::hs256_token(
        secret.expose_secret().as_bytes(),
        &claims,
    )?)
}

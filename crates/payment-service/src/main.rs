//! `payment-service serve | migrate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    }
}

//! `with-containers COMMAND [ARG…]`: runs COMMAND (e.g. `cargo test -p
//! payment-e2e`) against a MariaDB and a broker started by testcontainers
//! (`payment_e2e::containers`), then removes them and exits with COMMAND's
//! status. `scripts/test-containers.sh` is the usual way in.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use payment_e2e::containers::{Images, Infra};
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let program = args
        .next()
        .context("usage: with-containers COMMAND [ARG…]")?;
    let images = Images::from_env();
    let started = Instant::now();
    let infra = Infra::start(&images).await?;
    eprintln!(
        "with-containers: {} at {}, {} at {} (up in {:.1} s)",
        images.mariadb,
        infra.database_url,
        images.kafka,
        infra.brokers,
        started.elapsed().as_secs_f64()
    );
    let outcome = run(Command::new(program)
        .args(args)
        .envs(infra.env())
        // The scratch database and Connect of scripts/debezium.sh relay to
        // the local stack's broker, not to this one: those tests skip.
        .env_remove("DEBEZIUM_DATABASE_URL"))
    .await;
    let removed = infra.remove().await;
    let code = outcome?;
    removed?;
    Ok(ExitCode::from(code))
}

/// Runs `command` to its end; an interrupt or termination stops it (the
/// containers are removed after it either way). Its exit code.
async fn run(command: &mut Command) -> anyhow::Result<u8> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut child = command.spawn().context("start the command")?;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status
                .code()
                .and_then(|code| u8::try_from(code).ok())
                .unwrap_or(1));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = interrupt.recv() => child.kill()?,
            _ = terminate.recv() => child.kill()?,
        }
    }
}

//! `fake-toss`: the fake Toss Payments API as a process, for local runs and
//! for tests that live in another process (they steer it through the
//! `/__fake/...` routes).
//!
//! ```text
//! fake-toss [--addr 127.0.0.1:18080] [--secret-key test_sk_fake]
//! ```
//!
//! Flags win over the environment (`FAKE_TOSS_ADDR`, `FAKE_TOSS_SECRET_KEY`),
//! which wins over the defaults. One line per request goes to stderr. Ctrl-C
//! or SIGTERM stops it gracefully.

use std::net::SocketAddr;
use std::process::ExitCode;

use fake_toss::{FakeConfig, FakeToss};

const DEFAULT_ADDR: &str = "127.0.0.1:18080";

const USAGE: &str = "\
usage: fake-toss [--addr IP:PORT] [--secret-key KEY]

A local stand-in for the Toss Payments API (confirm, cancel, lookups).

  --addr IP:PORT     where to listen (env FAKE_TOSS_ADDR; default 127.0.0.1:18080)
  --secret-key KEY   the one secret key accepted (env FAKE_TOSS_SECRET_KEY;
                     default test_sk_fake)
  -h, --help         this text

Test control (no auth): PUT/GET /__fake/scenario, GET /__fake/calls,
POST /__fake/reset, GET /__fake/health, POST /__fake/payments/{paymentKey}/cancel.";

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Serve(FakeConfig),
    Help,
}

fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let mut addr = env("FAKE_TOSS_ADDR");
    let mut secret_key = env("FAKE_TOSS_SECRET_KEY");
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--addr" => &mut addr,
            "--secret-key" => &mut secret_key,
            other => return Err(format!("unknown argument {other:?}")),
        };
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        *slot = Some(value);
    }
    let addr = addr.unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("--addr {addr:?} is not IP:PORT: {e}"))?;
    let secret_key = secret_key.unwrap_or_else(|| FakeConfig::DEFAULT_SECRET_KEY.to_owned());
    if secret_key.is_empty() {
        return Err("--secret-key must not be empty".to_owned());
    }
    Ok(Command::Serve(FakeConfig::new(secret_key).with_addr(addr)))
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(Command::Serve(config)) => config,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("fake-toss: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let secret_key = config.secret_key.clone();
    let fake = match FakeToss::start(config) {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("fake-toss: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    fake.set_request_observer(|r| {
        eprintln!(
            "fake-toss: {} {} -> {} ({} ms)",
            r.method,
            r.path,
            r.status,
            r.elapsed.as_millis()
        );
    });
    eprintln!(
        "fake-toss: listening on {} (secret key {secret_key}); Ctrl-C to stop",
        fake.base_url()
    );
    wait_for_stop_signal().await;
    eprintln!("fake-toss: stopping");
    fake.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_stop_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("fake-toss: cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                eprintln!("fake-toss: cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn serve(command: Command) -> FakeConfig {
        match command {
            Command::Serve(config) => config,
            Command::Help => panic!("expected Serve"),
        }
    }

    #[test]
    fn defaults_apply_without_flags_or_env() {
        let config = serve(parse(args(&[]), |_| None).unwrap());
        assert_eq!(config.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(config.secret_key, "test_sk_fake");
    }

    #[test]
    fn flags_win_over_env() {
        let env = |name: &str| match name {
            "FAKE_TOSS_ADDR" => Some("127.0.0.1:1000".to_owned()),
            "FAKE_TOSS_SECRET_KEY" => Some("test_sk_env".to_owned()),
            _ => None,
        };
        let from_env = serve(parse(args(&[]), env).unwrap());
        assert_eq!(from_env.addr.to_string(), "127.0.0.1:1000");
        assert_eq!(from_env.secret_key, "test_sk_env");
        let from_flags = serve(
            parse(
                args(&["--addr", "127.0.0.1:2000", "--secret-key=test_sk_flag"]),
                env,
            )
            .unwrap(),
        );
        assert_eq!(from_flags.addr.to_string(), "127.0.0.1:2000");
        assert_eq!(from_flags.secret_key, "test_sk_flag");
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(args(&["--addr"]), |_| None).is_err());
        assert!(parse(args(&["--addr", "nowhere"]), |_| None).is_err());
        assert!(parse(args(&["--port", "1"]), |_| None).is_err());
        assert!(parse(args(&["--secret-key", ""]), |_| None).is_err());
        assert_eq!(parse(args(&["--help"]), |_| None), Ok(Command::Help));
    }
}

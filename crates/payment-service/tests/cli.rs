//! The `payment-service` binary as operators run it: `migrate`, `serve`
//! until SIGTERM, and a refusal to start on bad configuration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::ConnectOptions as _;

const BIN: &str = env!("CARGO_BIN_EXE_payment-service");

fn brokers() -> String {
    std::env::var("PAYMENT__KAFKA__BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn service(db: &MySqlConnectOptions) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PAYMENT__DATABASE__URL", db.to_url_lossy().to_string())
        .env("PAYMENT__KAFKA__BROKERS", brokers())
        .env("PAYMENT__GATEWAY", "fake")
        .env(
            "PAYMENT__AUTH__HS256_SECRET",
            "cli-test-hs256-secret-of-32-bytes",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[sqlx::test(migrations = false)]
async fn migrate_creates_the_schema_and_exits_zero(
    pool: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let output = service(&db).arg("migrate").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pool = pool.connect_with(db).await.unwrap();
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(applied, i64::try_from(payment_infra_migrations()).unwrap());
}

fn payment_infra_migrations() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "sql")
        })
        .count()
}

#[sqlx::test(migrations = false)]
async fn serve_becomes_ready_and_stops_cleanly_on_sigterm(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let port = free_port();
    let mut child = service(&db)
        .arg("serve")
        .env("PAYMENT__HTTP__ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http
            .get(format!("http://127.0.0.1:{port}/health/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "service never became ready");
        assert!(child.try_wait().unwrap().is_none(), "service exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "service ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let output = Command::new(BIN)
        .env_clear()
        .env("PAYMENT__KAFKA__BROKERS", brokers())
        .env("PAYMENT__DATABASE__URL", "postgres://nope")
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PAYMENT__DATABASE__URL"), "{stderr}");
}

/// The binary with a configuration that loads but names no reachable database.
fn offline() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PAYMENT__KAFKA__BROKERS", brokers())
        .env("PAYMENT__DATABASE__URL", "mysql://nobody@127.0.0.1:1/none")
        .env("PAYMENT__GATEWAY", "fake")
        .env("PAYMENT__LOG__FORMAT", "pretty");
    command
}

#[test]
fn serve_without_a_token_key_is_refused_before_anything_starts() {
    let output = offline().arg("serve").output().unwrap();
    assert!(!output.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("PAYMENT__AUTH__HS256_SECRET"), "{said}");
    assert!(said.contains("PAYMENT__AUTH__PUBLIC_KEYS_FILE"), "{said}");
}

#[test]
fn dev_token_prints_a_token_of_the_configured_secret() {
    let output = offline()
        .env(
            "PAYMENT__AUTH__HS256_SECRET",
            "cli-test-hs256-secret-of-32-bytes",
        )
        .args(["dev-token", "--sub", "alice", "--scope", "payments:admin"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
}

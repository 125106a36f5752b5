//! HTTP idempotency keys in `idempotency_keys`: the claim is an INSERT, so
//! of two requests racing with one key exactly one runs; the other sees the
//! row (in flight, or the answer to replay). A claim left in flight longer
//! than the lease (its request died with the process) is taken over by the
//! next request with the same key and body — safe because the requests
//! guarded here are idempotent themselves (a cancel's transaction id derives
//! from the key).

use chrono::{DateTime, Utc};
use payment_application::{IdempotencyKeys, KeyClaim, StoreError};
use sqlx::MySqlPool;

use super::errors::{classify, store_error, DbFailure, SqlContext as _};

#[derive(Debug, Clone)]
pub struct MariaDbIdempotencyKeys {
    pool: MySqlPool,
    lease: std::time::Duration,
}

impl MariaDbIdempotencyKeys {
    /// `lease`: how long an in-flight claim is honoured before it is taken over.
    #[must_use]
    pub const fn new(pool: MySqlPool, lease: std::time::Duration) -> Self {
        Self { pool, lease }
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: String,
    status: String,
    response_status: Option<u16>,
    response_body: Option<Vec<u8>>,
}

impl IdempotencyKeys for MariaDbIdempotencyKeys {
    async fn claim(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<KeyClaim, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, idempotency_key, request_hash, status, created_at) \
             VALUES (?, ?, ?, 'IN_FLIGHT', ?)",
        )
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(Utc::now())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => return Ok(KeyClaim::Claimed),
            Err(error) if matches!(classify(&error), DbFailure::Duplicate(_)) => {}
            Err(error) => return Err(store_error(error, "claim idempotency key")),
        }
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.lease).unwrap_or_default();
        let taken_over = sqlx::query(
            "UPDATE idempotency_keys SET created_at = ? WHERE scope = ? AND idempotency_key = ? \
             AND status = 'IN_FLIGHT' AND request_hash = ? AND created_at < ?",
        )
        .bind(now)
        .bind(scope)
        .bind(key)
        .bind(fingerprint)
        .bind(now - lease)
        .execute(&self.pool)
        .await
        .store_context("take over a stale idempotency key")?;
        if taken_over.rows_affected() == 1 {
            tracing::warn!(
                scope,
                "idempotency key left in flight past its lease: taken over"
            );
            return Ok(KeyClaim::Claimed);
        }
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT request_hash, status, response_status, response_body FROM idempotency_keys \
             WHERE scope = ? AND idempotency_key = ?",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .store_context("read idempotency key")?;
        Ok(match row {
            // Released between our insert and our read: the client may retry.
            None => KeyClaim::InFlight,
            Some(row) if row.request_hash != fingerprint => KeyClaim::Mismatch,
            Some(KeyRow {
                status,
                response_status: Some(code),
                response_body: Some(body),
                ..
            }) if status == "COMPLETED" => KeyClaim::Replay { status: code, body },
            Some(_) => KeyClaim::InFlight,
        })
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = 'COMPLETED', response_status = ?, response_body = ?, \
             completed_at = ? WHERE scope = ? AND idempotency_key = ?",
        )
        .bind(status)
        .bind(body)
        .bind(Utc::now())
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await
        .store_context("complete idempotency key")?;
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = ? AND idempotency_key = ? AND status = 'IN_FLIGHT'")
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await
            .store_context("release idempotency key")?;
        Ok(())
    }

    async fn prune(&self, created_before: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ? LIMIT 10000")
            .bind(created_before)
            .execute(&self.pool)
            .await
            .store_context("prune idempotency keys")?;
        Ok(done.rows_affected())
    }
}

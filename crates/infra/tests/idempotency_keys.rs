//! HTTP idempotency keys on a real MariaDB.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{Duration, Utc};
use payment_application::{IdempotencyKeys as _, KeyClaim};
use payment_infra::mariadb::MariaDbIdempotencyKeys;
use sqlx::MySqlPool;

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn a_key_is_claimed_once_replayed_guarded_released_and_pruned(pool: MySqlPool) {
    let keys = MariaDbIdempotencyKeys::new(pool, std::time::Duration::from_secs(3_600));
    assert_eq!(
        keys.claim("cancel:p1", "k1", "hash-a").await.unwrap(),
        KeyClaim::Claimed
    );
    assert_eq!(
        keys.claim("cancel:p1", "k1", "hash-a").await.unwrap(),
        KeyClaim::InFlight
    );
    assert_eq!(
        keys.claim("cancel:p1", "k1", "hash-b").await.unwrap(),
        KeyClaim::Mismatch
    );
    assert_eq!(
        keys.claim("cancel:p2", "k1", "hash-b").await.unwrap(),
        KeyClaim::Claimed,
        "keys are scoped"
    );

    keys.complete("cancel:p1", "k1", 200, b"{\"status\":\"DONE\"}")
        .await
        .unwrap();
    assert_eq!(
        keys.claim("cancel:p1", "k1", "hash-a").await.unwrap(),
        KeyClaim::Replay {
            status: 200,
            body: b"{\"status\":\"DONE\"}".to_vec()
        }
    );

    keys.release("cancel:p2", "k1").await.unwrap();
    assert_eq!(
        keys.claim("cancel:p2", "k1", "hash-c").await.unwrap(),
        KeyClaim::Claimed,
        "a released key is free"
    );
    keys.release("cancel:p1", "k1").await.unwrap();
    assert!(
        matches!(
            keys.claim("cancel:p1", "k1", "hash-a").await.unwrap(),
            KeyClaim::Replay { .. }
        ),
        "completed keys are not released"
    );

    assert_eq!(
        keys.prune(Utc::now() - Duration::hours(1)).await.unwrap(),
        0,
        "young keys stay"
    );
    assert_eq!(
        keys.prune(Utc::now() + Duration::seconds(1)).await.unwrap(),
        2
    );
    assert_eq!(
        keys.claim("cancel:p1", "k1", "hash-z").await.unwrap(),
        KeyClaim::Claimed,
        "a pruned key is new again"
    );
}

#[sqlx::test(migrator = "payment_infra::mariadb::MIGRATOR")]
async fn a_claim_left_in_flight_past_its_lease_is_taken_over_by_the_same_request_only(
    pool: MySqlPool,
) {
    let keys = MariaDbIdempotencyKeys::new(pool, std::time::Duration::ZERO);
    assert_eq!(
        keys.claim("cancel:p1", "k1", "hash-a").await.unwrap(),
        KeyClaim::Claimed
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        keys.claim("cancel:p1", "k1", "hash-b").await.unwrap(),
        KeyClaim::Mismatch,
        "never by another body"
    );
    assert_eq!(
        keys.claim("cancel:p1", "k1", "hash-a").await.unwrap(),
        KeyClaim::Claimed,
        "the dead claim is taken over"
    );
    keys.complete("cancel:p1", "k1", 200, b"{}").await.unwrap();
    assert!(
        matches!(
            keys.claim("cancel:p1", "k1", "hash-a").await.unwrap(),
            KeyClaim::Replay { .. }
        ),
        "answers are never taken over"
    );
}

//! The booking saga's [`Bookings`] on MariaDB (`saga_bookings`).

use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;
use payment_application::{Booking, Bookings, OutboxMessage, StoreError};
use payment_domain::{OrderId, PaymentId};
use sqlx::MySqlPool;
use tokio::sync::Notify;

use super::errors::SqlContext as _;
use super::repository::insert_outbox;

/// Cheap to clone (it holds a pool).
#[derive(Debug, Clone)]
pub struct MariaDbBookings {
    pool: MySqlPool,
    outbox_committed: Option<Arc<Notify>>,
}

impl MariaDbBookings {
    #[must_use]
    pub const fn new(pool: MySqlPool) -> Self {
        Self {
            pool,
            outbox_committed: None,
        }
    }

    /// Notifies `signal` after every answer written, so the embedded relay
    /// publishes it at once.
    #[must_use]
    pub fn notifying(mut self, signal: Arc<Notify>) -> Self {
        self.outbox_committed = Some(signal);
        self
    }
}

type BookingRow = (String, String, String, String, String, Option<String>);

fn booking(row: BookingRow) -> Result<Booking, StoreError> {
    let (booking_id, payment_id, order_id, saga_id, request_id, traceparent) = row;
    Ok(Booking {
        booking_id,
        payment_id: payment_id
            .parse::<PaymentId>()
            .context("saga_bookings.payment_id")
            .map_err(StoreError::Unexpected)?,
        order_id: OrderId::parse(order_id)
            .context("saga_bookings.order_id")
            .map_err(StoreError::Unexpected)?,
        saga_id,
        request_id,
        traceparent,
    })
}

/// `booking_id` and `order_id` are `ascii_bin` (binary to the driver): read as text.
const COLUMNS: &str = "CAST(b.booking_id AS CHAR), b.payment_id, CAST(b.order_id AS CHAR), \
     b.saga_id, b.request_id, b.traceparent";

impl Bookings for MariaDbBookings {
    async fn record(&self, new: &Booking) -> Result<Booking, StoreError> {
        sqlx::query(
            "INSERT IGNORE INTO saga_bookings (booking_id, payment_id, order_id, saga_id, \
             request_id, traceparent, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&new.booking_id)
        .bind(new.payment_id.to_string())
        .bind(new.order_id.as_str())
        .bind(&new.saga_id)
        .bind(&new.request_id)
        .bind(new.traceparent.as_deref())
        .bind(Utc::now())
        .execute(&self.pool)
        .await
        .store_context("record booking")?;
        let row: BookingRow = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM saga_bookings b WHERE b.booking_id = ?"
        ))
        .bind(&new.booking_id)
        .fetch_one(&self.pool)
        .await
        .store_context("read booking")?;
        booking(row)
    }

    async fn unanswered(&self, limit: u32) -> Result<Vec<Booking>, StoreError> {
        let rows: Vec<BookingRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM saga_bookings b JOIN payments p ON p.payment_id = b.payment_id \
             WHERE b.answered_at IS NULL AND p.status NOT IN ('READY', 'IN_PROGRESS') \
             ORDER BY b.created_at LIMIT ?"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .store_context("list unanswered bookings")?;
        rows.into_iter().map(booking).collect()
    }

    async fn answer(&self, booking_id: &str, reply: &OutboxMessage) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.store_context("begin transaction")?;
        let marked = sqlx::query(
            "UPDATE saga_bookings SET answered_at = ? WHERE booking_id = ? AND answered_at IS NULL",
        )
        .bind(Utc::now())
        .bind(booking_id)
        .execute(&mut *tx)
        .await
        .store_context("mark booking answered")?;
        if marked.rows_affected() == 0 {
            return Ok(false); // answered before; the transaction rolls back
        }
        insert_outbox(&mut tx, reply)
            .await
            .store_context("write saga reply")?;
        tx.commit().await.store_context("commit transaction")?;
        if let Some(signal) = &self.outbox_committed {
            signal.notify_one();
        }
        Ok(true)
    }
}

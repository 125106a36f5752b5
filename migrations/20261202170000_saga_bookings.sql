-- The booking saga's requests: one row per booking (the saga's unique key on
-- the booking; the payment's order_id is derived from booking_id, so
-- UNIQUE(order_id) on payments guards the same thing from the other side).
-- The row keeps what the saga's reply needs and the payment cannot carry:
-- the booking id as the orchestrator spelled it, its saga id (the reply's
-- correlationid) and the request's id (its causationid). answered_at is set
-- in the same transaction that writes the reply to the outbox, so a settled
-- payment is answered exactly once, whoever settled it.
CREATE TABLE saga_bookings (
    booking_id   VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    payment_id   CHAR(36) CHARACTER SET ascii NOT NULL,
    order_id     VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    saga_id      VARCHAR(255) NOT NULL,
    request_id   VARCHAR(255) NOT NULL,
    traceparent  VARCHAR(55) CHARACTER SET ascii NULL,
    created_at   DATETIME(6) NOT NULL,
    answered_at  DATETIME(6) NULL,
    CONSTRAINT uq_saga_bookings_payment UNIQUE (payment_id),
    CONSTRAINT uq_saga_bookings_order UNIQUE (order_id),
    KEY ix_saga_bookings_unanswered (answered_at, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The payment store: event stream, projection, gateway transactions, outbox,
-- inbox and HTTP idempotency keys. One command writes all of them in one
-- transaction (see crates/infra/src/mariadb/repository.rs).
--
-- Collations: text is utf8mb4_unicode_ci; identifiers whose case matters
-- (order ids, payment keys, message ids, idempotency keys) are ascii_bin so
-- "Order-1" and "order-1" stay two orders. JSON is LONGTEXT + JSON_VALID
-- rather than MariaDB's JSON alias, whose utf8mb4_bin collation makes
-- drivers see the text as bytes.

-- The source of truth: every payment's events, in order.
-- PRIMARY KEY (payment_id, version) is the optimistic-concurrency guard: two
-- writers deciding on the same version cannot both append.
CREATE TABLE payment_events (
    payment_id  CHAR(36) CHARACTER SET ascii NOT NULL,
    version     BIGINT UNSIGNED NOT NULL,
    event_type  VARCHAR(64) CHARACTER SET ascii NOT NULL,
    data        LONGTEXT NOT NULL CHECK (JSON_VALID(data)),
    occurred_at DATETIME(6) NOT NULL,
    PRIMARY KEY (payment_id, version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Current state, for queries; always rebuildable from payment_events.
CREATE TABLE payments (
    payment_id     CHAR(36) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    order_id       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id        VARCHAR(64) NOT NULL,
    amount         DECIMAL(19, 4) NOT NULL,
    balance_amount DECIMAL(19, 4) NOT NULL,
    currency       CHAR(3) CHARACTER SET ascii NOT NULL,
    status         VARCHAR(20) CHARACTER SET ascii NOT NULL,
    payment_key    VARCHAR(200) CHARACTER SET ascii COLLATE ascii_bin NULL,
    method         VARCHAR(50) NULL,
    approved_at    DATETIME(6) NULL,
    failure_code   VARCHAR(100) NULL,
    failure_message VARCHAR(1000) NULL,
    version        BIGINT UNSIGNED NOT NULL,
    created_at     DATETIME(6) NOT NULL,
    updated_at     DATETIME(6) NOT NULL,
    CONSTRAINT uq_payments_order_id UNIQUE (order_id),
    KEY ix_payments_status_created (status, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- One row per gateway interaction (APPROVAL | CANCEL), written before the
-- gateway is called; idempotency_key is what the gateway sees on every retry.
CREATE TABLE payment_transactions (
    transaction_id  CHAR(36) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    payment_id      CHAR(36) CHARACTER SET ascii NOT NULL,
    kind            VARCHAR(16) CHARACTER SET ascii NOT NULL,
    amount          DECIMAL(19, 4) NOT NULL,
    currency        CHAR(3) CHARACTER SET ascii NOT NULL,
    status          VARCHAR(16) CHARACTER SET ascii NOT NULL,
    idempotency_key VARCHAR(300) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    transaction_key VARCHAR(200) NULL,
    failure_code    VARCHAR(100) NULL,
    requested_at    DATETIME(6) NOT NULL,
    completed_at    DATETIME(6) NULL,
    CONSTRAINT uq_payment_transactions_idempotency_key UNIQUE (idempotency_key),
    KEY ix_payment_transactions_payment (payment_id, requested_at),
    KEY ix_payment_transactions_status (status, requested_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Integration events waiting to reach Kafka. Column names follow Debezium's
-- Outbox Event Router (id, aggregatetype, aggregateid, type, payload); seq
-- gives the embedded relay a strict commit order to claim rows in.
CREATE TABLE outbox (
    seq           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    id            CHAR(36) CHARACTER SET ascii NOT NULL,
    aggregatetype VARCHAR(255) NOT NULL,
    aggregateid   VARCHAR(255) NOT NULL,
    type          VARCHAR(255) NOT NULL,
    payload       LONGTEXT NOT NULL CHECK (JSON_VALID(payload)),
    traceparent   VARCHAR(55) CHARACTER SET ascii NULL,
    created_at    DATETIME(6) NOT NULL,
    CONSTRAINT uq_outbox_id UNIQUE (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Messages already handled, per consumer: written in the same transaction
-- as their effect, so a redelivery is recognised and never applied twice.
CREATE TABLE inbox (
    consumer     VARCHAR(255) NOT NULL,
    message_id   VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    processed_at DATETIME(6) NOT NULL,
    PRIMARY KEY (consumer, message_id),
    KEY ix_inbox_processed_at (processed_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- HTTP Idempotency-Key records (Stripe/IETF semantics): the request's
-- fingerprint and, once finished, the exact response to replay.
CREATE TABLE idempotency_keys (
    scope           VARCHAR(100) NOT NULL,
    idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    request_hash    CHAR(64) CHARACTER SET ascii NOT NULL,
    status          VARCHAR(16) CHARACTER SET ascii NOT NULL,
    response_status SMALLINT UNSIGNED NULL,
    response_body   LONGBLOB NULL,
    created_at      DATETIME(6) NOT NULL,
    completed_at    DATETIME(6) NULL,
    PRIMARY KEY (scope, idempotency_key),
    KEY ix_idempotency_keys_created_at (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

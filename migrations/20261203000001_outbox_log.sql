-- Every integration event ever written to the outbox, kept: the outbox row
-- is gone once relayed (the embedded relay deletes it after the broker's
-- ack; in debezium mode the pruner deletes it by age), and the message
-- cannot be derived again from payment_events (its id is drawn at commit
-- time, its correlation/causation/traceparent come from the request, and
-- the saga's answers are no payment event). The repository writes each
-- message here in the same transaction and with the same values as its
-- outbox row, so `payment-service outbox replay` republishes exactly what
-- was published: same topic, key, value bytes, headers and timestamp.
-- Append-only, never read by the service itself.
CREATE TABLE outbox_log (
    seq           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    id            CHAR(36) CHARACTER SET ascii NOT NULL,
    aggregatetype VARCHAR(255) NOT NULL,
    aggregateid   VARCHAR(255) NOT NULL,
    type          VARCHAR(255) NOT NULL,
    payload       LONGTEXT NOT NULL,
    traceparent   VARCHAR(55) CHARACTER SET ascii NULL,
    created_at    DATETIME(6) NOT NULL,
    CONSTRAINT uq_outbox_log_id UNIQUE (id),
    KEY ix_outbox_log_created_at (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- What still waits in the outbox is logged too; earlier messages are gone.
INSERT INTO outbox_log (id, aggregatetype, aggregateid, type, payload, traceparent, created_at)
SELECT id, aggregatetype, aggregateid, type, payload, traceparent, created_at
FROM outbox ORDER BY seq;

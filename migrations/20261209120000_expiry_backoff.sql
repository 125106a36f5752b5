-- The expiry's backoff, kept with the payment it is about, as the
-- reconciler's is kept with each gateway transaction: a READY payment that
-- cannot be expired (its stream does not replay, the store refuses the
-- write) is postponed to next_attempt_at, each attempt counted, instead of
-- staying at the head of the expiry's selection and holding back every
-- payment behind it. The expiry selects one range of
-- ix_payments_status_updated:
--   WHERE status = 'READY' AND updated_at < now - ttl
--     AND next_attempt_at <= now          (checked in the index)
--   ORDER BY updated_at LIMIT n
-- A payment is due until postponed (the default is long past); no writer
-- of the projection needs to know the columns.
ALTER TABLE payments
    ADD COLUMN attempts INT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00.000000';

CREATE INDEX ix_payments_status_updated
    ON payments (status, updated_at, next_attempt_at);

-- The reconciler's backoff, kept with the gateway interaction it is about
-- (it was a map in each process's memory: lost on restart, never pruned).
-- An UNKNOWN transaction is due for another look at next_attempt_at; each
-- look that settles nothing counts an attempt and pushes it back, so
-- payments that legitimately stay unsettled (a virtual account waiting for
-- its deposit, a contradiction left for an operator) never crowd out the
-- rest. The reconciler selects one range of ix_payment_transactions_due:
--   WHERE status = 'UNKNOWN' AND kind = ? AND next_attempt_at <= now
--   ORDER BY next_attempt_at LIMIT n
-- A new transaction is due at once (next_attempt_at = requested_at; the
-- default, in UTC like every session of the service, only serves writers
-- that leave the column out).
ALTER TABLE payment_transactions
    ADD COLUMN attempts INT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6);

UPDATE payment_transactions SET next_attempt_at = requested_at;

CREATE INDEX ix_payment_transactions_due
    ON payment_transactions (status, kind, next_attempt_at);

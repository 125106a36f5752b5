-- The folded state of each payment, kept in its projection row (the
-- domain's Payment as JSON, pending cancels included, which have no column
-- of their own): GET /api/v1/payments/{id} and by order read this one row
-- instead of replaying payment_events. Written by every commit with the
-- rest of the row. NULL for rows written before this migration: their
-- reads replay the stream until the next command on them fills it.
ALTER TABLE payments
    ADD COLUMN state LONGTEXT NULL CHECK (state IS NULL OR JSON_VALID(state));

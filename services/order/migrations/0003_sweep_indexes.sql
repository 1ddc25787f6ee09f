-- What the recovery sweep and the idempotency answer look up, indexed so that their cost does
-- not grow with the number of orders ever placed. Both indexes are partial: they hold only the
-- rows still open, so they stay small and each finished order leaves them.
--
-- Storing an answer (`UPDATE idempotency_keys ... WHERE order_id = $1 AND response_status IS
-- NULL`) scanned the whole table once per order; the sweep scanned both tables every run.
CREATE INDEX idempotency_keys_unanswered ON idempotency_keys (order_id) WHERE response_status IS NULL;
CREATE INDEX orders_unfinished ON orders (updated_at) WHERE status NOT IN ('confirmed', 'failed');
-- Only the sweep filtered on status, and it now uses orders_unfinished; this index cost a write
-- at every change of status.
DROP INDEX orders_open;

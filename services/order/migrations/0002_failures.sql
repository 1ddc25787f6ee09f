-- A failure is recorded before compensation runs, so that a compensation finished later (by
-- the recovery sweep) ends the order with the failure the client was told about.
ALTER TABLE orders ADD COLUMN failure_status BIGINT;
ALTER TABLE orders ADD COLUMN failure_code TEXT;

-- The claim on an order: which worker (a live checkout or a recovery sweep, on any replica)
-- works on it, and until when. A worker takes it with one conditional UPDATE, renews it while
-- it works and clears it when done; a claim whose holder died runs out at `claimed_until`.
-- Timestamps are the stored RFC 3339 text, so text order is time order.
ALTER TABLE orders ADD COLUMN claimed_by TEXT;
ALTER TABLE orders ADD COLUMN claimed_until TEXT;

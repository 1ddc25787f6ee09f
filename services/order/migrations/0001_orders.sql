-- Orders and their lines, and the idempotency keys that make a retried POST safe.
CREATE TABLE orders (
    order_id       TEXT PRIMARY KEY,
    customer_id    TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'reserved', 'paid', 'confirmed', 'failed')),
    total_cents    BIGINT NOT NULL DEFAULT 0,
    card_brand     TEXT,
    card_last4     TEXT,
    failure_reason TEXT,
    trace_id       TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE INDEX orders_open ON orders (status);

CREATE TABLE order_items (
    order_id         TEXT NOT NULL REFERENCES orders (order_id),
    sku              TEXT NOT NULL,
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, sku)
);

-- The fingerprint is the request without its card number; the response is stored once the
-- saga has finished, so a repeated key replays it.
CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    fingerprint     TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    response_status BIGINT,
    response_body   TEXT,
    created_at      TEXT NOT NULL
);

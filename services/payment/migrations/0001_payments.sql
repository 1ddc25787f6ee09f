-- One payment per order. Of the card, only its brand and last four digits are kept.
CREATE TABLE payments (
    payment_id     TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL UNIQUE,
    status         TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'refunded')),
    amount_cents   BIGINT NOT NULL CHECK (amount_cents >= 0),
    card_brand     TEXT NOT NULL,
    card_last4     TEXT NOT NULL,
    decline_reason TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

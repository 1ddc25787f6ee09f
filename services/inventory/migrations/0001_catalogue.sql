-- Products and their stock; a reservation holds stock for one order until it is committed
-- (sold) or released (given back).
CREATE TABLE products (
    sku         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    stock       BIGINT NOT NULL CHECK (stock >= 0)
);

CREATE TABLE reservations (
    order_id    TEXT PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN ('reserved', 'committed', 'released')),
    total_cents BIGINT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE reservation_items (
    order_id         TEXT NOT NULL REFERENCES reservations (order_id),
    sku              TEXT NOT NULL REFERENCES products (sku),
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, sku)
);

INSERT INTO products (sku, name, price_cents, stock) VALUES
    ('TRAIL-MUG', 'Trail mug, enamel, 350 ml', 1450, 120),
    ('TRAIL-TEE', 'Trail T-shirt, organic cotton', 2900, 80),
    ('TRAIL-CAP', 'Trail cap', 2200, 60),
    ('TRAIL-BOTTLE', 'Insulated bottle, 750 ml', 3400, 40),
    ('TRAIL-LAMP', 'Head lamp, 400 lumen', 4900, 25),
    ('TRAIL-MAP', 'Trail map, limited print', 1200, 3);

//! The inventory database: products, stock and reservations.

use ordertrail_shared::api::{OrderLine, PricedLine, Product, Reservation, ReservationStatus};
use ordertrail_shared::db::{Database, Sql, Transaction, now, retry_transaction};
use sqlx::{FromRow as _, Row};

use crate::error::ApiError;

const LIST_PRODUCTS: Sql = Sql {
    operation: "SELECT",
    collection: "products",
    text: "SELECT sku, name, price_cents, stock FROM products ORDER BY sku",
};
const CLAIM_RESERVATION: Sql = Sql {
    operation: "INSERT",
    collection: "reservations",
    text: "INSERT INTO reservations (order_id, status, total_cents, created_at) VALUES ($1, 'reserved', 0, $2) ON CONFLICT (order_id) DO NOTHING",
};
const PRICE_OF: Sql = Sql {
    operation: "SELECT",
    collection: "products",
    text: "SELECT price_cents, stock FROM products WHERE sku = $1",
};
const TAKE_STOCK: Sql = Sql {
    operation: "UPDATE",
    collection: "products",
    text: "UPDATE products SET stock = stock - $1 WHERE sku = $2 AND stock >= $1",
};
const INSERT_ITEM: Sql = Sql {
    operation: "INSERT",
    collection: "reservation_items",
    text: "INSERT INTO reservation_items (order_id, sku, quantity, unit_price_cents) VALUES ($1, $2, $3, $4)",
};
const SET_TOTAL: Sql = Sql {
    operation: "UPDATE",
    collection: "reservations",
    text: "UPDATE reservations SET total_cents = $1 WHERE order_id = $2",
};
const GET_RESERVATION: Sql = Sql {
    operation: "SELECT",
    collection: "reservations",
    text: "SELECT status, total_cents FROM reservations WHERE order_id = $1",
};
const GET_ITEMS: Sql = Sql {
    operation: "SELECT",
    collection: "reservation_items",
    text: "SELECT sku, quantity, unit_price_cents FROM reservation_items WHERE order_id = $1 ORDER BY sku",
};
const SET_STATUS: Sql = Sql {
    operation: "UPDATE",
    collection: "reservations",
    text: "UPDATE reservations SET status = $1 WHERE order_id = $2 AND status = 'reserved'",
};
const RELEASE_UNRESERVED: Sql = Sql {
    operation: "INSERT",
    collection: "reservations",
    text: "INSERT INTO reservations (order_id, status, total_cents, created_at) VALUES ($1, 'released', 0, $2) ON CONFLICT (order_id) DO NOTHING",
};
const RETURN_STOCK: Sql = Sql {
    operation: "UPDATE",
    collection: "products",
    text: "UPDATE products SET stock = stock + $1 WHERE sku = $2",
};
const RAISE_STOCK: Sql = Sql {
    operation: "UPDATE",
    collection: "products",
    text: "UPDATE products SET stock = stock + $1 WHERE sku = $2 AND stock + $1 <= $3",
};
const STOCK_LEVELS: Sql = Sql {
    operation: "SELECT",
    collection: "products",
    text: "SELECT sku, stock FROM products ORDER BY sku LIMIT $1",
};
const GET_PRODUCT: Sql = Sql {
    operation: "SELECT",
    collection: "products",
    text: "SELECT sku, name, price_cents, stock FROM products WHERE sku = $1",
};

/// The most units of one product a restock may leave in stock: restocking in a loop can never
/// grow a count without bound.
pub const MAX_STOCK: i64 = 1_000_000;

/// Products, stock and reservations, over SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
}

impl Store {
    /// A store over `db`, already migrated.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The database, for health checks.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The whole catalogue, by SKU.
    pub async fn products(&self) -> Result<Vec<Product>, ApiError> {
        Ok(self.db.query(&LIST_PRODUCTS).fetch_all_as().await?)
    }

    /// The stock of the first `limit` products by SKU, for the stock gauge. No span: it runs
    /// once per metric export, and a trace each time would bury the real ones.
    pub async fn stock_levels(&self, limit: i64) -> Result<Vec<(String, i64)>, ApiError> {
        let rows = self
            .db
            .query(&STOCK_LEVELS)
            .bind(limit)
            .without_span()
            .fetch_all()
            .await?;
        let levels = rows
            .iter()
            .map(|row| Ok((row.try_get("sku")?, row.try_get("stock")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(levels)
    }

    /// Adds each line's quantity to its product's stock, all or nothing, and returns those
    /// products as they are now, by SKU. An unknown product, or a stock that would pass
    /// [`MAX_STOCK`], changes nothing.
    pub async fn restock(&self, lines: &[OrderLine]) -> Result<Vec<Product>, ApiError> {
        retry_transaction(|| self.try_restock(lines)).await
    }

    async fn try_restock(&self, lines: &[OrderLine]) -> Result<Vec<Product>, ApiError> {
        let mut tx = self.db.begin().await?;
        // In SKU order, as a reserve and a release lock them (see `try_reserve`).
        let mut lines: Vec<&OrderLine> = lines.iter().collect();
        lines.sort_by(|a, b| in_lock_order(&a.sku, &b.sku));
        let mut products = Vec::with_capacity(lines.len());
        for line in lines {
            // The write comes first, so that SQLite's write lock is taken at once.
            let raised = tx
                .query(&RAISE_STOCK)
                .bind(line.quantity)
                .bind(&line.sku)
                .bind(MAX_STOCK)
                .execute()
                .await?;
            let row = tx
                .query(&GET_PRODUCT)
                .bind(&line.sku)
                .fetch_optional()
                .await?
                .ok_or_else(|| ApiError::UnknownProduct(line.sku.clone()))?;
            let product = Product::from_row(&row)?;
            if raised == 0 {
                // Dropping the transaction rolls back the lines already raised.
                return Err(ApiError::Invalid(format!(
                    "{} has {} in stock: {} more would pass the limit of {MAX_STOCK}",
                    product.sku, product.stock, line.quantity
                )));
            }
            products.push(product);
        }
        tx.commit().await?;
        Ok(products)
    }

    /// Holds stock for every line of `order_id`, all or nothing. A second call for the same
    /// order returns the first reservation unchanged.
    pub async fn reserve(
        &self,
        order_id: &str,
        lines: &[OrderLine],
    ) -> Result<(Reservation, bool), ApiError> {
        retry_transaction(|| self.try_reserve(order_id, lines)).await
    }

    async fn try_reserve(
        &self,
        order_id: &str,
        lines: &[OrderLine],
    ) -> Result<(Reservation, bool), ApiError> {
        let mut tx = self.db.begin().await?;
        // Writing first takes SQLite's write lock at once, so concurrent reservations queue
        // instead of failing on a lock upgrade; the conflict also makes the call idempotent.
        let claimed = tx
            .query(&CLAIM_RESERVATION)
            .bind(order_id)
            .bind(now())
            .execute()
            .await?;
        if claimed == 0 {
            tx.rollback().await?;
            let existing = self.reservation(order_id).await?;
            return Ok((existing, false));
        }
        // Product rows are locked in SKU order, as a release locks them, so that two
        // transactions over the same products never wait for each other in a circle.
        let mut lines: Vec<&OrderLine> = lines.iter().collect();
        lines.sort_by(|a, b| in_lock_order(&a.sku, &b.sku));
        let mut items = Vec::with_capacity(lines.len());
        for line in lines {
            items.push(self.take_stock(&mut tx, order_id, line).await?);
        }
        let total_cents = items.iter().map(|i| i.quantity * i.unit_price_cents).sum();
        tx.query(&SET_TOTAL)
            .bind(total_cents)
            .bind(order_id)
            .execute()
            .await?;
        tx.commit().await?;
        Ok((
            Reservation {
                order_id: order_id.to_owned(),
                status: ReservationStatus::Reserved,
                items,
                total_cents,
            },
            true,
        ))
    }

    async fn take_stock(
        &self,
        tx: &mut Transaction<'_>,
        order_id: &str,
        line: &OrderLine,
    ) -> Result<PricedLine, ApiError> {
        let row = tx
            .query(&PRICE_OF)
            .bind(&line.sku)
            .fetch_optional()
            .await?
            .ok_or_else(|| ApiError::UnknownProduct(line.sku.clone()))?;
        let unit_price_cents: i64 = row.try_get("price_cents")?;
        let available: i64 = row.try_get("stock")?;
        let taken = tx
            .query(&TAKE_STOCK)
            .bind(line.quantity)
            .bind(&line.sku)
            .execute()
            .await?;
        if taken == 0 {
            return Err(ApiError::OutOfStock {
                sku: line.sku.clone(),
                requested: line.quantity,
                available,
            });
        }
        tx.query(&INSERT_ITEM)
            .bind(order_id)
            .bind(&line.sku)
            .bind(line.quantity)
            .bind(unit_price_cents)
            .execute()
            .await?;
        Ok(PricedLine {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price_cents,
        })
    }

    /// The reservation of `order_id`.
    pub async fn reservation(&self, order_id: &str) -> Result<Reservation, ApiError> {
        let row = self
            .db
            .query(&GET_RESERVATION)
            .bind(order_id)
            .fetch_optional()
            .await?
            .ok_or_else(|| ApiError::NoReservation(order_id.to_owned()))?;
        let status: String = row.try_get("status")?;
        let items = self
            .db
            .query(&GET_ITEMS)
            .bind(order_id)
            .fetch_all_as()
            .await?;
        Ok(Reservation {
            order_id: order_id.to_owned(),
            status: ReservationStatus::parse(&status).ok_or_else(|| {
                sqlx::Error::Decode(format!("reservation status {status}").into())
            })?,
            items,
            total_cents: row.try_get("total_cents")?,
        })
    }

    /// Marks the reservation sold. Committing a committed reservation is a no-op; committing a
    /// released one is a conflict.
    pub async fn commit(&self, order_id: &str) -> Result<Reservation, ApiError> {
        retry_transaction(|| self.finish(order_id, ReservationStatus::Committed)).await
    }

    /// Puts the reserved stock back. Releasing a released reservation is a no-op; releasing a
    /// committed one is a conflict; releasing an order with no reservation records it released,
    /// so a late reserve for it takes nothing.
    pub async fn release(&self, order_id: &str) -> Result<Reservation, ApiError> {
        retry_transaction(|| self.finish(order_id, ReservationStatus::Released)).await
    }

    async fn finish(&self, order_id: &str, to: ReservationStatus) -> Result<Reservation, ApiError> {
        let mut tx = self.db.begin().await?;
        let changed = tx
            .query(&SET_STATUS)
            .bind(to.as_str())
            .bind(order_id)
            .execute()
            .await?;
        if changed == 1 && to == ReservationStatus::Released {
            self.return_stock(&mut tx, order_id).await?;
        } else if changed == 0 && to == ReservationStatus::Released {
            // Releasing what was never reserved leaves a released reservation behind, so that a
            // reserve still on its way (its caller gave up waiting) finds the order given up
            // instead of holding stock for it forever.
            let recorded = tx
                .query(&RELEASE_UNRESERVED)
                .bind(order_id)
                .bind(now())
                .execute()
                .await?;
            if recorded == 0 {
                // The order has a reservation after all. If it was committed between the two
                // statements it is still `reserved`: release it now.
                tx.commit().await?;
                if self.reservation(order_id).await?.status == ReservationStatus::Reserved {
                    return Box::pin(self.finish(order_id, to)).await;
                }
                return self.finished(order_id, to).await;
            }
        }
        tx.commit().await?;
        self.finished(order_id, to).await
    }

    /// Gives back the stock `order_id` holds, one line at a time in SKU order: a single UPDATE
    /// over all the lines would lock the product rows in whatever order its plan visits them,
    /// and deadlock with a reserve or another release on PostgreSQL.
    async fn return_stock(&self, tx: &mut Transaction<'_>, order_id: &str) -> Result<(), ApiError> {
        let mut items = tx
            .query(&GET_ITEMS)
            .bind(order_id)
            .fetch_all()
            .await?
            .iter()
            .map(|row| Ok((row.try_get("sku")?, row.try_get("quantity")?)))
            .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?;
        items.sort_by(|(a, _), (b, _)| in_lock_order(a, b));
        for (sku, quantity) in items {
            tx.query(&RETURN_STOCK)
                .bind(quantity)
                .bind(sku)
                .execute()
                .await?;
        }
        Ok(())
    }

    /// The reservation of `order_id`, which must now be `to`.
    async fn finished(
        &self,
        order_id: &str,
        to: ReservationStatus,
    ) -> Result<Reservation, ApiError> {
        let reservation = self.reservation(order_id).await?;
        if reservation.status != to {
            return Err(ApiError::Conflict {
                order_id: order_id.to_owned(),
                status: reservation.status.as_str().to_owned(),
            });
        }
        Ok(reservation)
    }
}

/// The one order every transaction locks product rows in: by SKU, compared as Rust compares
/// strings (bytes). Not the database's `ORDER BY`, whose collation may order some SKUs
/// differently (PostgreSQL's locales skip punctuation at first).
fn in_lock_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.cmp(b)
}

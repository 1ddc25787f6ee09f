//! The payments database. It has no column that could hold a card number: [`Store::insert`]
//! takes a [`MaskedCard`], which is all a `CardNumber` gives away.

use ordertrail_shared::api::{Payment, PaymentStatus};
use ordertrail_shared::card::MaskedCard;
use ordertrail_shared::db::{Database, Sql, now};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::ApiError;

const INSERT_PAYMENT: Sql = Sql {
    operation: "INSERT",
    collection: "payments",
    text: "INSERT INTO payments (payment_id, order_id, status, amount_cents, card_brand, card_last4, decline_reason, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (order_id) DO NOTHING",
};
const GET_PAYMENT: Sql = Sql {
    operation: "SELECT",
    collection: "payments",
    text: "SELECT payment_id, order_id, status, amount_cents, card_brand, card_last4, decline_reason FROM payments WHERE order_id = $1",
};
const REFUND_UNCHARGED: Sql = Sql {
    operation: "INSERT",
    collection: "payments",
    text: "INSERT INTO payments (payment_id, order_id, status, amount_cents, card_brand, card_last4, decline_reason, created_at, updated_at) VALUES ($1, $2, 'refunded', 0, '', '', NULL, $3, $3) ON CONFLICT (order_id) DO NOTHING",
};
const REFUND: Sql = Sql {
    operation: "UPDATE",
    collection: "payments",
    text: "UPDATE payments SET status = 'refunded', updated_at = $1 WHERE order_id = $2 AND status = 'captured'",
};

/// Payments over SQLite or PostgreSQL.
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

    /// Records `payment` unless its order already has one. Returns the payment on record and
    /// whether it is the one just inserted.
    pub async fn insert(&self, payment: &Payment) -> Result<(Payment, bool), ApiError> {
        let MaskedCard { brand, last4 } = &payment.card;
        let inserted = self
            .db
            .query(&INSERT_PAYMENT)
            .bind(&payment.payment_id)
            .bind(&payment.order_id)
            .bind(payment.status.as_str())
            .bind(payment.amount_cents)
            .bind(brand)
            .bind(last4)
            .bind(payment.decline_reason.as_deref())
            .bind(now())
            .execute()
            .await?;
        if inserted == 1 {
            return Ok((payment.clone(), true));
        }
        Ok((self.get(&payment.order_id).await?, false))
    }

    /// The payment of `order_id`.
    pub async fn get(&self, order_id: &str) -> Result<Payment, ApiError> {
        let row = self
            .db
            .query(&GET_PAYMENT)
            .bind(order_id)
            .fetch_optional()
            .await?
            .ok_or_else(|| ApiError::NotFound(order_id.to_owned()))?;
        Ok(payment(&row)?)
    }

    /// Refunds a captured payment; refunding a refunded one is a no-op, refunding a declined one
    /// is a conflict, and refunding an order never charged records it refunded.
    pub async fn refund(&self, order_id: &str) -> Result<(Payment, bool), ApiError> {
        let mut refunded = self.refund_captured(order_id).await?;
        if !refunded {
            // Refunding an order never charged records it refunded, so that a charge still on
            // its way (its caller gave up waiting) finds the order given up and takes nothing.
            let recorded = self
                .db
                .query(&REFUND_UNCHARGED)
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(order_id)
                .bind(now())
                .execute()
                .await?;
            if recorded == 0 {
                // A charge landed between the two statements: refund it.
                refunded = self.refund_captured(order_id).await?;
            }
        }
        let payment = self.get(order_id).await?;
        if payment.status == PaymentStatus::Declined {
            return Err(ApiError::NotRefundable {
                order_id: order_id.to_owned(),
                status: "declined".into(),
            });
        }
        Ok((payment, refunded))
    }

    async fn refund_captured(&self, order_id: &str) -> Result<bool, sqlx::Error> {
        let changed = self
            .db
            .query(&REFUND)
            .bind(now())
            .bind(order_id)
            .execute()
            .await?;
        Ok(changed == 1)
    }
}

fn payment(row: &AnyRow) -> Result<Payment, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Payment {
        payment_id: row.try_get("payment_id")?,
        order_id: row.try_get("order_id")?,
        status: PaymentStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("payment status {status}").into()))?,
        amount_cents: row.try_get("amount_cents")?,
        card: MaskedCard {
            brand: row.try_get("card_brand")?,
            last4: row.try_get("card_last4")?,
        },
        decline_reason: row.try_get("decline_reason")?,
    })
}

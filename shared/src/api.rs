//! The wire contracts between the services: the bodies of every internal call.
//!
//! Each type is defined once, here, so that caller and callee cannot drift apart. Money is
//! always integer cents.

use serde::{Deserialize, Serialize};

use crate::card::{MaskedCard, PaymentCard};

/// A product in the catalogue (`GET /products` on inventory, `GET /api/products` on gateway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Stock keeping unit, the product's id.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Unit price in cents.
    pub price_cents: i64,
    /// Units in stock and not reserved.
    pub stock: i64,
}

/// One line of an order: a product and how many.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product.
    pub sku: String,
    /// How many, at least 1.
    pub quantity: i64,
}

/// A priced line, as reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    /// The product.
    pub sku: String,
    /// How many.
    pub quantity: i64,
    /// The unit price when reserved, in cents.
    pub unit_price_cents: i64,
}

/// `POST /reservations` on inventory: hold stock for an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// The order the stock is held for; one reservation per order.
    pub order_id: String,
    /// What to hold.
    pub items: Vec<OrderLine>,
}

/// A reservation's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// Stock is held.
    Reserved,
    /// Stock is sold.
    Committed,
    /// Stock is back on the shelf.
    Released,
}

impl ReservationStatus {
    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Committed => "committed",
            Self::Released => "released",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Reserved, Self::Committed, Self::Released]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A reservation, as inventory returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservation {
    /// The order it belongs to.
    pub order_id: String,
    /// Its state.
    pub status: ReservationStatus,
    /// The priced lines.
    pub items: Vec<PricedLine>,
    /// Sum of quantity × unit price, in cents.
    pub total_cents: i64,
}

/// `POST /payments` on payment: charge a card for an order, once.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The order; a second charge for the same order returns the first result.
    pub order_id: String,
    /// Amount in cents.
    pub amount_cents: i64,
    /// The card. It travels only in this request and is never kept.
    pub card: PaymentCard,
}

/// A payment's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// The money is taken.
    Captured,
    /// The card was declined.
    Declined,
    /// The money was given back.
    Refunded,
}

impl PaymentStatus {
    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Captured => "captured",
            Self::Declined => "declined",
            Self::Refunded => "refunded",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Captured, Self::Declined, Self::Refunded]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A payment, as payment returns it (also in the body of a 402 decline).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    /// Payment id.
    pub payment_id: String,
    /// The order paid for.
    pub order_id: String,
    /// Captured or declined.
    pub status: PaymentStatus,
    /// Amount in cents.
    pub amount_cents: i64,
    /// Brand and last four digits: all that is kept of the card.
    pub card: MaskedCard,
    /// Why a declined payment was declined, e.g. `card_declined`, `insufficient_funds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline_reason: Option<String>,
}

/// `POST /api/orders` on gateway and `POST /orders` on order: place an order.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// Who orders.
    pub customer_id: String,
    /// What, at least one line.
    pub items: Vec<OrderLine>,
    /// How it is paid.
    pub payment: PaymentCard,
}

/// The most lines one order may have.
pub const MAX_LINES: usize = 100;
/// The most units of one product in one order.
pub const MAX_QUANTITY: i64 = 1000;
/// The longest SKU, and the longest customer id.
pub const MAX_ID_LEN: usize = 64;

impl PlaceOrder {
    /// Checks what the types cannot: a customer id and SKUs of at most [`MAX_ID_LEN`]
    /// letters, digits and `-_.:@`, from 1 to [`MAX_LINES`] lines, quantities from 1 to
    /// [`MAX_QUANTITY`] and no product twice. The card was validated when the body was read.
    pub fn validate(&self) -> Result<(), String> {
        validate_id("customer_id", &self.customer_id)?;
        validate_lines(&self.items)
    }
}

/// From 1 to [`MAX_LINES`] lines, each with a valid SKU and a quantity from 1 to
/// [`MAX_QUANTITY`], no product twice. The messages quote a SKU only once it is known to be
/// harmless.
pub fn validate_lines(lines: &[OrderLine]) -> Result<(), String> {
    if lines.is_empty() {
        return Err("items must not be empty".into());
    }
    if lines.len() > MAX_LINES {
        return Err(format!("an order may have at most {MAX_LINES} lines"));
    }
    let mut seen = std::collections::HashSet::new();
    for line in lines {
        validate_id("sku", &line.sku)?;
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(format!(
                "quantity of {} must be between 1 and {MAX_QUANTITY}",
                line.sku
            ));
        }
        if !seen.insert(&line.sku) {
            return Err(format!("{} appears twice", line.sku));
        }
    }
    Ok(())
}

/// 1 to [`MAX_ID_LEN`] ASCII letters, digits and `-_.:@`: such an id is safe to store, log
/// and quote in an error.
fn validate_id(field: &str, id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@');
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(allowed) {
        return Err(format!(
            "{field} must be 1 to {MAX_ID_LEN} letters, digits or -_.:@"
        ));
    }
    Ok(())
}

/// An order's state. `Confirmed` and `Failed` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created; stock not yet held.
    Pending,
    /// Stock held; not yet paid.
    Reserved,
    /// Paid; stock not yet committed.
    Paid,
    /// Done.
    Confirmed,
    /// Did not go through; see `failure_reason`.
    Failed,
}

impl OrderStatus {
    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Reserved => "reserved",
            Self::Paid => "paid",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Reserved,
            Self::Paid,
            Self::Confirmed,
            Self::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// True for `confirmed` and `failed`.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Confirmed | Self::Failed)
    }
}

/// An order, as order and gateway return it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    /// Order id.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// Where the saga got to.
    pub status: OrderStatus,
    /// Total in cents (0 until stock is reserved and priced).
    pub total_cents: i64,
    /// The lines, priced once reserved.
    pub items: Vec<PricedLine>,
    /// Brand and last four digits of the card used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<MaskedCard>,
    /// Why a failed order failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The trace of the request that placed the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

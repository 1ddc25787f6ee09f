//! The wire contracts between the services: the bodies of every internal call.
//!
//! Each type is defined once, here, so that caller and callee cannot drift apart. Money is
//! always integer cents.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::card::{MaskedCard, PaymentCard};
use crate::problem::Problem;

/// A product in the catalogue (`GET /products` on inventory, `GET /api/products` on gateway);
/// read from a row with these columns as `Product::from_row` (inventory's `products`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
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

/// A priced line, as reserved; read from a row with these columns as `PricedLine::from_row`
/// (inventory's `reservation_items`, order's `order_items`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
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

/// `POST /api/orders` on gateway and `POST /orders` on order: place an order, as sent. A
/// handler parses it into a [`ValidOrder`] before anything else.
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

/// A [`PlaceOrder`] that keeps every rule its types cannot, parsed once with
/// `ValidOrder::try_from(request)`: a value that exists is a valid order. It serializes to the
/// same JSON as the request it came from, so the gateway forwards it as it is.
#[derive(Debug, Serialize)]
pub struct ValidOrder {
    /// Who orders.
    pub customer_id: CustomerId,
    /// What.
    pub items: OrderLines,
    /// How it is paid: the card was validated when the body was read.
    pub payment: PaymentCard,
}

impl TryFrom<PlaceOrder> for ValidOrder {
    type Error = InvalidOrder;

    /// The customer id is checked first, then the lines.
    fn try_from(request: PlaceOrder) -> Result<Self, InvalidOrder> {
        Ok(Self {
            customer_id: CustomerId::try_from(request.customer_id)?,
            items: OrderLines::try_from(request.items)?,
            payment: request.payment,
        })
    }
}

/// A customer id: 1 to [`MAX_ID_LEN`] ASCII letters, digits and `-_.:@`, so it is safe to
/// store, log and quote in an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomerId(String);

impl TryFrom<String> for CustomerId {
    type Error = InvalidOrder;

    fn try_from(id: String) -> Result<Self, InvalidOrder> {
        check_id("customer_id", &id)?;
        Ok(Self(id))
    }
}

impl CustomerId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CustomerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// From 1 to [`MAX_LINES`] lines, each with a SKU as safe as a [`CustomerId`] and a quantity
/// from 1 to [`MAX_QUANTITY`], no product twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderLines(Vec<OrderLine>);

impl TryFrom<Vec<OrderLine>> for OrderLines {
    type Error = InvalidOrder;

    /// The lines are checked in order, each SKU before its quantity, so that an error quotes
    /// a SKU only once it is known to be harmless.
    fn try_from(lines: Vec<OrderLine>) -> Result<Self, InvalidOrder> {
        if lines.is_empty() {
            return Err(InvalidOrder::NoLines);
        }
        if lines.len() > MAX_LINES {
            return Err(InvalidOrder::TooManyLines);
        }
        let mut seen = std::collections::HashSet::new();
        for line in &lines {
            check_id("sku", &line.sku)?;
            if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                return Err(InvalidOrder::Quantity {
                    sku: line.sku.clone(),
                });
            }
            if !seen.insert(&line.sku) {
                return Err(InvalidOrder::Repeated {
                    sku: line.sku.clone(),
                });
            }
        }
        Ok(Self(lines))
    }
}

impl OrderLines {
    /// The lines.
    pub fn as_slice(&self) -> &[OrderLine] {
        &self.0
    }

    /// The lines, for a request that carries them (a [`ReserveRequest`]).
    pub fn into_inner(self) -> Vec<OrderLine> {
        self.0
    }
}

impl AsRef<[OrderLine]> for OrderLines {
    fn as_ref(&self) -> &[OrderLine] {
        &self.0
    }
}

/// The rule an order (or a list of lines) breaks; every service answers it `422`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOrder {
    /// A customer id or a SKU that is empty, too long, or holds other characters.
    #[error("{field} must be 1 to {MAX_ID_LEN} letters, digits or -_.:@")]
    Id {
        /// `customer_id` or `sku`.
        field: &'static str,
    },
    /// No lines.
    #[error("items must not be empty")]
    NoLines,
    /// More than [`MAX_LINES`] lines.
    #[error("an order may have at most {MAX_LINES} lines")]
    TooManyLines,
    /// A quantity below 1 or above [`MAX_QUANTITY`].
    #[error("quantity of {sku} must be between 1 and {MAX_QUANTITY}")]
    Quantity {
        /// The line's product, a valid SKU.
        sku: String,
    },
    /// A product on two lines.
    #[error("{sku} appears twice")]
    Repeated {
        /// The product, a valid SKU.
        sku: String,
    },
}

impl From<InvalidOrder> for Problem {
    fn from(invalid: InvalidOrder) -> Self {
        Problem::from_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid request",
            &invalid,
        )
    }
}

/// 1 to [`MAX_ID_LEN`] ASCII letters, digits and `-_.:@`: such an id is safe to store, log
/// and quote in an error.
fn check_id(field: &'static str, id: &str) -> Result<(), InvalidOrder> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@');
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(allowed) {
        return Err(InvalidOrder::Id { field });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: i64) -> OrderLine {
        OrderLine {
            sku: sku.into(),
            quantity,
        }
    }

    fn order(customer_id: &str, items: Vec<OrderLine>) -> PlaceOrder {
        let body = serde_json::json!({
            "customer_id": customer_id,
            "items": items,
            "payment": {"card_number": "4242424242424242", "expiry": "12/30", "cvc": "123"},
        });
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_valid_order_serializes_as_the_request_it_was_parsed_from() {
        let request = order("c-1", vec![line("TRAIL-MUG", 2), line("A:b.c@d_e", 1000)]);
        let sent = serde_json::to_value(&request).unwrap();
        let valid = ValidOrder::try_from(request).unwrap();
        assert_eq!(valid.customer_id.as_str(), "c-1");
        assert_eq!(valid.items.as_slice().len(), 2);
        assert_eq!(serde_json::to_value(&valid).unwrap(), sent);
    }

    #[test]
    fn each_broken_rule_is_told_with_its_message_and_the_customer_id_comes_first() {
        let id = "x".repeat(MAX_ID_LEN);
        let many: Vec<_> = (0..=MAX_LINES)
            .map(|i| line(&format!("S-{i}"), 1))
            .collect();
        let cases = [
            (
                order("", vec![line("M", 1)]),
                "customer_id must be 1 to 64 letters, digits or -_.:@",
            ),
            (
                order(&format!("{id}x"), vec![]),
                "customer_id must be 1 to 64 letters, digits or -_.:@",
            ),
            (
                order("c 1", vec![line("M", 1)]),
                "customer_id must be 1 to 64 letters, digits or -_.:@",
            ),
            (order(&id, vec![]), "items must not be empty"),
            (order("c", many), "an order may have at most 100 lines"),
            (
                order("c", vec![line("M\n", 0)]),
                "sku must be 1 to 64 letters, digits or -_.:@",
            ),
            (
                order("c", vec![line("M", 0)]),
                "quantity of M must be between 1 and 1000",
            ),
            (
                order("c", vec![line("M", 1001)]),
                "quantity of M must be between 1 and 1000",
            ),
            (
                order("c", vec![line("M", 1), line("N", 1), line("M", 2)]),
                "M appears twice",
            ),
        ];
        for (request, message) in cases {
            let invalid = ValidOrder::try_from(request).unwrap_err();
            assert_eq!(invalid.to_string(), message);
            let problem = Problem::from(invalid);
            assert_eq!(
                (problem.status, problem.title.as_str()),
                (422, "invalid request")
            );
        }
    }
}

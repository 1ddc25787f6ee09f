//! Idempotency of `POST /orders`: the request's [`Fingerprint`], and the [`Answer`] kept for
//! its `Idempotency-Key` (the key itself is `shared::idempotency::IdempotencyKey`, parsed once
//! from the headers; the store claims it with the order).
//!
//! Only a final answer (the order confirmed or failed) is kept, by the request or later by the
//! recovery sweep, so that a replay never contradicts the order's final state; until then a
//! retry gets `409`.

use axum::http::StatusCode;
use ordertrail_shared::api::ValidOrder;
use ordertrail_shared::problem::Problem;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::domain::Outcome;
use crate::store::{Claim, Store};

/// The request as the idempotency check compares it: a SHA-256 of the customer, the lines in
/// SKU order and the card's brand, last four and expiry. The stored fingerprint must not hold
/// card data (expiry, last four) in clear, and never holds the number or CVC at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of `order`.
    pub fn of(order: &ValidOrder) -> Self {
        let mut items = order.items.as_slice().to_vec();
        items.sort_by(|a, b| a.sku.cmp(&b.sku));
        let canonical = json!({
            "customer_id": order.customer_id.as_str(),
            "items": items,
            "card": order.payment.card_number.masked(),
            "expiry": order.payment.expiry,
        });
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        Self(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The digest as 64 lowercase hex digits, as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The answer to a checkout: `201` with the confirmed order, `202` with a paid order whose
/// stock is still to be committed, or the problem of a failed one.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: String,
    /// True when the order is confirmed or failed: only such an answer is kept.
    pub is_final: bool,
}

impl Answer {
    /// The answer to `outcome`.
    pub fn to(outcome: &Outcome) -> Self {
        let (status, body) = match outcome {
            Outcome::Confirmed(order) => (StatusCode::CREATED, json!(order)),
            Outcome::Pending(order) => (StatusCode::ACCEPTED, json!(order)),
            Outcome::Failed { order, failure } => {
                let problem = Problem::new(failure.status, "checkout failed")
                    .with_type(format!("/problems/{}", failure.code.replace('_', "-")))
                    .with_detail(failure.detail.as_str())
                    .with("order_id", order.order_id.as_str())
                    .with("order_status", order.status.as_str())
                    .with("reason", failure.code.as_str());
                (problem.status_code(), json!(problem))
            }
        };
        Self {
            status,
            body: body.to_string(),
            is_final: outcome.is_final(),
        }
    }

    /// Keeps this answer for the idempotency key the request that created the order under
    /// `claim` claimed (if any), when it is final, none is kept yet and the claim is held; true
    /// when it kept it (`Store::save_response`).
    pub async fn keep(&self, store: &Store, claim: &Claim) -> Result<bool, sqlx::Error> {
        if !self.is_final {
            return Ok(false);
        }
        store
            .save_response(claim, self.status.as_u16(), &self.body)
            .await
    }
}

#[cfg(test)]
mod tests {
    use ordertrail_shared::api::PlaceOrder;

    use super::*;

    #[test]
    fn a_fingerprint_ignores_the_order_of_lines_and_has_not_changed() {
        let order = |items: &str| {
            let body = format!(
                r#"{{"customer_id":"c-1","items":{items},"payment":{{"card_number":"4242424242424242","expiry":"12/30","cvc":"123"}}}}"#
            );
            let request: PlaceOrder = serde_json::from_str(&body).unwrap();
            ValidOrder::try_from(request).unwrap()
        };
        let mug_and_cap =
            order(r#"[{"sku":"TRAIL-MUG","quantity":2},{"sku":"A-CAP","quantity":1}]"#);
        let cap_and_mug =
            order(r#"[{"sku":"A-CAP","quantity":1},{"sku":"TRAIL-MUG","quantity":2}]"#);
        // Fingerprints are stored: a different digest for the same request would answer a
        // client retrying across an upgrade with 422 instead of its order.
        assert_eq!(
            Fingerprint::of(&mug_and_cap).as_str(),
            "2b9ff2b538c6e9667a840ca8e98d06a3dd1c62a85e7d57ce2a0ad053fd973644"
        );
        assert_eq!(Fingerprint::of(&mug_and_cap), Fingerprint::of(&cap_and_mug));
    }
}

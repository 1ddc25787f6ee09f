//! Idempotency keys: claimed in the transaction that creates their order, then holding the
//! final answer to the request that claimed them.

use ordertrail_shared::db::{Sql, Transaction, now};
use sqlx::Row;

use super::Store;

const CLAIM_KEY: Sql = Sql {
    operation: "INSERT",
    collection: "idempotency_keys",
    text: "INSERT INTO idempotency_keys (idempotency_key, fingerprint, order_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
};
const GET_KEY: Sql = Sql {
    operation: "SELECT",
    collection: "idempotency_keys",
    text: "SELECT fingerprint, order_id, response_status, response_body FROM idempotency_keys WHERE idempotency_key = $1",
};
const SAVE_RESPONSE: Sql = Sql {
    operation: "UPDATE",
    collection: "idempotency_keys",
    text: "UPDATE idempotency_keys SET response_status = $1, response_body = $2 WHERE order_id = $3 AND response_status IS NULL AND EXISTS (SELECT 1 FROM orders WHERE orders.order_id = $3 AND orders.claimed_by = $4)",
};

const AWAITS_ANSWER: Sql = Sql {
    operation: "SELECT",
    collection: "idempotency_keys",
    text: "SELECT 1 AS due FROM idempotency_keys WHERE order_id = $1 AND response_status IS NULL",
};

/// What a claimed idempotency key says about a request.
#[derive(Debug)]
pub enum KeyClaim {
    /// The key is new and now belongs to this request (or no key was given): the order is
    /// created, and this request holds its claim.
    New(super::Claim),
    /// The key was used with the same request, which has finished: answer the same.
    Replay {
        /// The first answer's status.
        status: u16,
        /// The first answer's body.
        body: String,
    },
    /// The key was used with the same request, which has not finished yet.
    InProgress {
        /// The order the first request created.
        order_id: String,
    },
    /// The key was used with a different request.
    Mismatch,
}

impl Store {
    /// Claims `key` for the request with `fingerprint` creating `order_id`, within `tx`. False
    /// when an earlier request holds it.
    pub(super) async fn claim(
        &self,
        tx: &mut Transaction<'_>,
        key: &str,
        fingerprint: &str,
        order_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let claimed = tx
            .query(&CLAIM_KEY)
            .bind(key)
            .bind(fingerprint)
            .bind(order_id)
            .bind(now())
            .execute()
            .await?;
        Ok(claimed != 0)
    }

    /// What the earlier request that claimed `key` says about a request with `fingerprint`.
    pub(super) async fn existing_claim(
        &self,
        key: &str,
        fingerprint: &str,
    ) -> Result<KeyClaim, sqlx::Error> {
        let row = self.db.query(&GET_KEY).bind(key).fetch_one().await?;
        let stored: String = row.try_get("fingerprint")?;
        if stored != fingerprint {
            return Ok(KeyClaim::Mismatch);
        }
        let status: Option<i64> = row.try_get("response_status")?;
        let body: Option<String> = row.try_get("response_body")?;
        Ok(match (status, body) {
            (Some(status), Some(body)) => KeyClaim::Replay {
                status: status as u16,
                body,
            },
            _ => KeyClaim::InProgress {
                order_id: row.try_get("order_id")?,
            },
        })
    }

    /// Stores the answer to the request that created the order under `claim`, for the
    /// idempotency key it claimed (if any), unless one is stored already or the claim is no
    /// longer held; true when it stored it. False does not tell the three apart: an answer is
    /// kept only for a final order, which no later holder changes, and a caller that must know
    /// whether an answer was due asks [`Store::awaits_answer`] first.
    pub async fn save_response(
        &self,
        claim: &super::Claim,
        status: u16,
        body: &str,
    ) -> Result<bool, sqlx::Error> {
        let saved = self
            .db
            .query(&SAVE_RESPONSE)
            .bind(i64::from(status))
            .bind(body)
            .bind(claim.order_id())
            .bind(claim.token())
            .execute()
            .await?;
        Ok(saved != 0)
    }

    /// Whether the order `order_id` has an idempotency key with no answer kept yet. A key is
    /// claimed with its order and its answer is kept only under the order's claim, so for the
    /// holder of that claim this stays true until it keeps the answer itself, or loses the
    /// claim.
    pub async fn awaits_answer(&self, order_id: &str) -> Result<bool, sqlx::Error> {
        let due = self
            .db
            .query(&AWAITS_ANSWER)
            .bind(order_id)
            .fetch_optional()
            .await?;
        Ok(due.is_some())
    }
}

//! The order service's errors, each answered as problem+json.
//!
//! The policy per layer: the store returns database errors (`sqlx::Error`) as they come; the
//! saga and the recovery sweep return an [`Outcome`](crate::domain::Outcome) or a database
//! error, since a failed checkout is an order that ended, not an error (its answer is built by
//! `idempotency`, so the sweep can keep it too); the routes alone map to HTTP, through
//! [`ApiError`]. A 500 hides its cause from the client and logs it once.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ordertrail_shared::api::InvalidOrder;
use ordertrail_shared::idempotency::InvalidKey;
use ordertrail_shared::problem::Problem;

/// Everything an order request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: an order that breaks a rule its types cannot hold.
    #[error(transparent)]
    Invalid(#[from] InvalidOrder),
    /// 400: the `Idempotency-Key` header is malformed or repeated.
    #[error(transparent)]
    Key(#[from] InvalidKey),
    /// 422: the idempotency key was used before with a different request.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    /// 409: the first request with this idempotency key is still running.
    #[error("a request with this Idempotency-Key is still in progress for order {0}")]
    InProgress(String),
    /// 409: the checkout stopped before it finished (it lost its claim on the order, or ran
    /// past the saga's time limit); the recovery sweep finishes the order, and a retry with the
    /// key gets its answer.
    #[error("the checkout of order {0} stopped before it finished; it is finished shortly")]
    Unfinished(String),
    /// 404: no such order.
    #[error("no order {0}")]
    NotFound(String),
    /// 500: the database failed; the detail stays in the log.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    /// The problem document this error is answered with.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Invalid(invalid) => Problem::from(invalid.clone()),
            Self::Key(invalid) => Problem::from(invalid.clone()),
            Self::KeyReused => Problem::from_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency key reused",
                self,
            )
            .with_type("/problems/idempotency-key-reused"),
            Self::InProgress(order_id) => {
                Problem::from_error(StatusCode::CONFLICT, "request in progress", self)
                    .with("order_id", order_id.as_str())
            }
            Self::Unfinished(order_id) => {
                Problem::from_error(StatusCode::CONFLICT, "checkout unfinished", self)
                    .with_type("/problems/checkout-unfinished")
                    .with("order_id", order_id.as_str())
            }
            Self::NotFound(_) => {
                Problem::from_error(StatusCode::NOT_FOUND, "order not found", self)
            }
            Self::Database(err) => Problem::internal(err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

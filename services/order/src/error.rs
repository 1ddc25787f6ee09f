//! The order service's errors, each answered as problem+json.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ordertrail_shared::api::{InvalidOrder, Order, OrderStatus};
use ordertrail_shared::idempotency::InvalidKey;
use ordertrail_shared::problem::Problem;

use crate::saga::CheckoutError;

/// Everything an order request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: a request that cannot be served as sent.
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
    /// 404: no such order.
    #[error("no order {0}")]
    NotFound(String),
    /// 402, 409, 422 or 503: the checkout failed; the order is `failed`, or open while its
    /// compensation waits for a service.
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
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
            Self::KeyReused => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency key reused")
                    .with_type("/problems/idempotency-key-reused")
                    .with_detail(self.to_string())
            }
            Self::InProgress(order_id) => Problem::new(StatusCode::CONFLICT, "request in progress")
                .with_detail(self.to_string())
                .with("order_id", order_id.as_str()),
            Self::NotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "order not found").with_detail(self.to_string())
            }
            Self::Checkout(CheckoutError::Failed { order, failure }) => {
                Problem::new(failure.status, "checkout failed")
                    .with_type(format!("/problems/{}", failure.code.replace('_', "-")))
                    .with_detail(failure.detail.as_str())
                    .with("order_id", order.order_id.as_str())
                    .with("order_status", order.status.as_str())
                    .with("reason", failure.code.as_str())
            }
            // Not an error: the handler answers 202 with the order (see `checkout_answer`).
            Self::Checkout(CheckoutError::Pending(order)) => {
                Problem::new(StatusCode::ACCEPTED, "order paid, stock pending")
                    .with("order_id", order.order_id.as_str())
            }
            Self::Checkout(CheckoutError::Database(err)) | Self::Database(err) => {
                Problem::internal(err)
            }
        }
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
    /// True when the order is confirmed or failed: only such an answer is kept for an
    /// idempotency key, so that a replay never contradicts the order's final state.
    pub terminal: bool,
}

/// The [`Answer`] to a checkout's outcome.
pub fn checkout_answer(outcome: Result<Order, CheckoutError>) -> Answer {
    let (status, body, order_status) = match outcome {
        Ok(order) => (
            StatusCode::CREATED,
            serde_json::json!(order),
            Some(order.status),
        ),
        Err(CheckoutError::Pending(order)) => (
            StatusCode::ACCEPTED,
            serde_json::json!(order),
            Some(order.status),
        ),
        Err(err) => {
            let order_status = match &err {
                CheckoutError::Failed { order, .. } => Some(order.status),
                _ => None,
            };
            let problem = ApiError::from(err).problem();
            (
                problem.status_code(),
                serde_json::json!(problem),
                order_status,
            )
        }
    };
    Answer {
        status,
        body: body.to_string(),
        terminal: order_status.is_some_and(OrderStatus::is_terminal),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

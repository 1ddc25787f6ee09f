//! The order service's errors, each answered as problem+json.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ordertrail_shared::api::Order;
use ordertrail_shared::problem::Problem;

use crate::saga::CheckoutError;

/// Everything an order request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: a request that cannot be served as sent.
    #[error("{0}")]
    Invalid(String),
    /// 422: the idempotency key was used before with a different request.
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    /// 409: the first request with this idempotency key is still running.
    #[error("a request with this Idempotency-Key is still in progress for order {0}")]
    InProgress(String),
    /// 404: no such order.
    #[error("no order {0}")]
    NotFound(String),
    /// 402, 409, 422 or 503: the checkout failed; the order is `failed`.
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
            Self::Invalid(detail) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid request")
                    .with_detail(detail)
            }
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
                Problem::new(failure.status(), "checkout failed")
                    .with_type(format!("/problems/{}", failure.kind().replace('_', "-")))
                    .with_detail(failure.to_string())
                    .with("order_id", order.order_id.as_str())
                    .with("order_status", order.status.as_str())
                    .with("reason", failure.kind())
            }
            Self::Checkout(CheckoutError::Database(err)) | Self::Database(err) => {
                tracing::error!(error = err as &dyn std::error::Error, error.type = "database", "request failed");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

/// The answer to a checkout, as status and JSON body: the order when confirmed, the problem
/// otherwise. It is what the client gets and what an idempotency key replays.
pub fn checkout_answer(outcome: Result<Order, CheckoutError>) -> (StatusCode, String) {
    match outcome {
        Ok(order) => (StatusCode::CREATED, serde_json::json!(order).to_string()),
        Err(err) => {
            let problem = ApiError::from(err).problem();
            (
                problem.status_code(),
                serde_json::json!(problem).to_string(),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

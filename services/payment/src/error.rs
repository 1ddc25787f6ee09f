//! The payment service's errors, each answered as problem+json.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ordertrail_shared::api::Payment;
use ordertrail_shared::problem::Problem;

/// Everything a payment request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 402: the card was declined; the body carries the payment and the reason.
    #[error("payment declined: {}", .0.decline_reason.as_deref().unwrap_or("card_declined"))]
    Declined(Box<Payment>),
    /// 422: a request that cannot be served as sent.
    #[error("{0}")]
    Invalid(String),
    /// 404: no payment for this order.
    #[error("no payment for order {0}")]
    NotFound(String),
    /// 409: the payment cannot be refunded in its state.
    #[error("payment for order {order_id} is {status} and cannot be refunded")]
    NotRefundable {
        /// The order.
        order_id: String,
        /// Its payment's status.
        status: String,
    },
    /// 504: the card provider did not answer in time (an injected `provider_timeout` fault).
    /// The payment may have been taken: the caller must retry or refund.
    #[error("the card provider did not answer within {} ms", .0.as_millis())]
    ProviderTimeout(std::time::Duration),
    /// 500: the database failed; the detail stays in the log.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    /// A short name for `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Declined(_) => "payment_declined",
            Self::Invalid(_) => "invalid_request",
            Self::NotFound(_) => "not_found",
            Self::NotRefundable { .. } => "not_refundable",
            Self::ProviderTimeout(_) => "provider_timeout",
            Self::Database(_) => "database",
        }
    }
}

impl ApiError {
    /// The problem document this error is answered with.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Declined(payment) => {
                Problem::from_error(StatusCode::PAYMENT_REQUIRED, "payment declined", self)
                    .with_type("/problems/payment-declined")
                    .with("order_id", payment.order_id.as_str())
                    .with("payment_id", payment.payment_id.as_str())
                    .with("reason", payment.decline_reason.clone().unwrap_or_default())
            }
            Self::Invalid(_) => {
                Problem::from_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid request", self)
            }
            Self::NotFound(_) => Problem::from_error(StatusCode::NOT_FOUND, "no payment", self),
            Self::NotRefundable { .. } => {
                Problem::from_error(StatusCode::CONFLICT, "not refundable", self)
            }
            Self::ProviderTimeout(_) => Problem::from_error(
                StatusCode::GATEWAY_TIMEOUT,
                "payment provider timed out",
                self,
            ),
            Self::Database(err) => Problem::internal(err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

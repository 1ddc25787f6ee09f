//! The inventory service's errors, each answered as problem+json.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ordertrail_shared::problem::Problem;

/// Everything an inventory request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 409: not enough stock for one of the items.
    #[error("not enough stock for {sku}: {requested} requested, {available} available")]
    OutOfStock {
        /// The product that ran out.
        sku: String,
        /// How many were asked for.
        requested: i64,
        /// How many are left.
        available: i64,
    },
    /// 422: the catalogue has no such product.
    #[error("unknown product {0}")]
    UnknownProduct(String),
    /// 422: a request that cannot be served as sent.
    #[error("{0}")]
    Invalid(String),
    /// 404: no reservation for this order.
    #[error("no reservation for order {0}")]
    NoReservation(String),
    /// 409: the reservation was already released, so it cannot be committed (or vice versa).
    #[error("reservation for order {order_id} is already {status}")]
    Conflict {
        /// The order.
        order_id: String,
        /// Its reservation's status.
        status: String,
    },
    /// 500: the database failed; the detail stays in the log.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    /// A short name for `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::OutOfStock { .. } => "out_of_stock",
            Self::UnknownProduct(_) => "unknown_product",
            Self::Invalid(_) => "invalid_request",
            Self::NoReservation(_) => "no_reservation",
            Self::Conflict { .. } => "reservation_conflict",
            Self::Database(_) => "database",
        }
    }
}

impl ApiError {
    /// The problem document this error is answered with.
    pub fn problem(&self) -> Problem {
        match self {
            Self::OutOfStock {
                sku,
                requested,
                available,
            } => Problem::from_error(StatusCode::CONFLICT, "out of stock", self)
                .with_type("/problems/out-of-stock")
                .with("sku", sku.as_str())
                .with("requested", *requested)
                .with("available", *available),
            Self::UnknownProduct(sku) => {
                Problem::from_error(StatusCode::UNPROCESSABLE_ENTITY, "unknown product", self)
                    .with("sku", sku.as_str())
            }
            Self::Invalid(_) => {
                Problem::from_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid request", self)
            }
            Self::NoReservation(_) => {
                Problem::from_error(StatusCode::NOT_FOUND, "no reservation", self)
            }
            Self::Conflict { .. } => {
                Problem::from_error(StatusCode::CONFLICT, "reservation conflict", self)
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

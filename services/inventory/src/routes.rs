//! The inventory API: `GET /products`, `POST /reservations`,
//! `POST /reservations/{order_id}/commit`, `POST /reservations/{order_id}/release`, and
//! `POST /restock` for operators and `ordertrail load` (the gateway does not expose it).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use ordertrail_shared::api::{OrderLine, OrderLines, Product, Reservation, ReserveRequest};
use ordertrail_shared::http::Json;
use ordertrail_shared::record_failure;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/products", get(products))
        .route("/reservations", post(reserve))
        .route("/reservations/{order_id}/commit", post(commit))
        .route("/reservations/{order_id}/release", post(release))
        .route("/restock", post(restock))
}

/// `POST /restock`: units to add to the stock of some products.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Restock {
    /// What to add: 1 to 100 lines, each a known product at most once, with 1 to 1000 units.
    pub items: Vec<OrderLine>,
}

/// 200 with the restocked products as they are now; 422 for invalid lines, an unknown
/// product or a stock that would pass [`crate::MAX_STOCK`], and then nothing is changed.
#[tracing::instrument(name = "inventory.restock", skip_all)]
async fn restock(
    State(state): State<AppState>,
    Json(request): Json<Restock>,
) -> Result<JsonResponse<Vec<Product>>, ApiError> {
    let items = lines(request.items)?;
    match state.store.restock(items.as_slice()).await {
        Ok(products) => {
            tracing::info!("stock raised");
            Ok(JsonResponse(products))
        }
        Err(err) => {
            record_failure!(INFO, err.kind(), &err, "restock refused");
            Err(err)
        }
    }
}

async fn products(State(state): State<AppState>) -> Result<JsonResponse<Vec<Product>>, ApiError> {
    Ok(JsonResponse(state.store.products().await?))
}

/// 201 with a new reservation, 200 with the existing one for a repeated order id.
#[tracing::instrument(name = "inventory.reserve", skip_all, fields(order.id = %request.order_id))]
async fn reserve(
    State(state): State<AppState>,
    Json(request): Json<ReserveRequest>,
) -> Result<(StatusCode, JsonResponse<Reservation>), ApiError> {
    if request.order_id.is_empty() {
        return Err(ApiError::Invalid("order_id must not be empty".into()));
    }
    let items = lines(request.items)?;
    let (reservation, created) = match state
        .store
        .reserve(&request.order_id, items.as_slice())
        .await
    {
        Ok(done) => done,
        Err(err) => {
            record_failure!(INFO, err.kind(), &err, "reservation refused");
            return Err(err);
        }
    };
    if created {
        tracing::info!(
            order.total_cents = reservation.total_cents,
            "stock reserved"
        );
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, JsonResponse(reservation)))
}

/// The lines of a request, parsed: 422 unless they keep the rules of an order's lines.
fn lines(items: Vec<OrderLine>) -> Result<OrderLines, ApiError> {
    OrderLines::try_from(items).map_err(|invalid| ApiError::Invalid(invalid.to_string()))
}

#[tracing::instrument(name = "inventory.commit", skip_all, fields(order.id = %order_id))]
async fn commit(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<JsonResponse<Reservation>, ApiError> {
    let reservation = state.store.commit(&order_id).await?;
    tracing::info!("reservation committed");
    Ok(JsonResponse(reservation))
}

#[tracing::instrument(name = "inventory.release", skip_all, fields(order.id = %order_id))]
async fn release(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<JsonResponse<Reservation>, ApiError> {
    let reservation = state.store.release(&order_id).await?;
    tracing::info!("reservation released, stock returned");
    Ok(JsonResponse(reservation))
}

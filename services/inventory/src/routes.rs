//! The inventory API: `GET /products`, `POST /reservations`,
//! `POST /reservations/{order_id}/commit` and `POST /reservations/{order_id}/release`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use ordertrail_shared::api::{Product, Reservation, ReserveRequest, validate_lines};
use ordertrail_shared::http::Json;
use ordertrail_shared::telemetry::record_error;

use crate::AppState;
use crate::error::ApiError;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/products", get(products))
        .route("/reservations", post(reserve))
        .route("/reservations/{order_id}/commit", post(commit))
        .route("/reservations/{order_id}/release", post(release))
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
    validate(&request)?;
    let (reservation, created) = match state.store.reserve(&request.order_id, &request.items).await
    {
        Ok(done) => done,
        Err(err) => {
            record_error(&tracing::Span::current(), err.kind(), &err);
            tracing::info!(error.type = err.kind(), error.message = %err, "reservation refused");
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

fn validate(request: &ReserveRequest) -> Result<(), ApiError> {
    if request.order_id.is_empty() {
        return Err(ApiError::Invalid("order_id must not be empty".into()));
    }
    validate_lines(&request.items).map_err(ApiError::Invalid)
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

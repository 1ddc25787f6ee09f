//! The order API: `POST /orders` (with an optional `Idempotency-Key`) and `GET /orders/{id}`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use ordertrail_shared::api::{Order, PlaceOrder};
use ordertrail_shared::http::Json;
use ordertrail_shared::problem::PROBLEM_JSON;
use ordertrail_shared::telemetry::current_trace_id;
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, checkout_answer};
use crate::store::KeyClaim;

/// The header a client sets to make a retried POST safe.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{order_id}", get(order))
}

/// Creates the order and runs the checkout: 201 when confirmed, a problem when it failed. With
/// an `Idempotency-Key` the answer is kept and a repeat gets it again.
async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<PlaceOrder>,
) -> Result<Response, ApiError> {
    request.validate().map_err(ApiError::Invalid)?;
    let order_id = uuid::Uuid::now_v7().to_string();
    let key = match headers.get(IDEMPOTENCY_KEY).map(HeaderValue::to_str) {
        Some(Ok(key)) if !key.is_empty() && key.len() <= 255 => Some(key.to_owned()),
        Some(_) => {
            return Err(ApiError::Invalid(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            ));
        }
        None => None,
    };
    if let Some(key) = &key {
        match state
            .store
            .claim_key(key, &fingerprint(&request), &order_id)
            .await?
        {
            KeyClaim::New => {}
            KeyClaim::Replay { status, body } => {
                tracing::info!("idempotent replay");
                return Ok(stored_response(status, body));
            }
            KeyClaim::InProgress { order_id } => return Err(ApiError::InProgress(order_id)),
            KeyClaim::Mismatch => return Err(ApiError::KeyReused),
        }
    }

    let card = request.payment.card_number.masked();
    state
        .store
        .create(
            &order_id,
            &request.customer_id,
            &request.items,
            &card,
            current_trace_id().as_deref(),
        )
        .await?;
    tracing::info!(
        event.dataset = "ordertrail.audit",
        event.action = "order-created",
        event.outcome = "success",
        order.id = %order_id,
        "order created"
    );

    let (status, body) = checkout_answer(state.saga.checkout(&order_id, request).await);
    if key.is_some() {
        state
            .store
            .save_response(&order_id, status.as_u16(), &body)
            .await?;
    }
    Ok(stored_response(status.as_u16(), body))
}

/// The request as the idempotency check compares it: everything but the card's secrets.
fn fingerprint(request: &PlaceOrder) -> String {
    let mut items = request.items.clone();
    items.sort_by(|a, b| a.sku.cmp(&b.sku));
    let card = request.payment.card_number.masked();
    json!({
        "customer_id": request.customer_id,
        "items": items,
        "card": card,
        "expiry": request.payment.expiry,
    })
    .to_string()
}

/// A JSON answer from its status and body: problem+json for errors.
fn stored_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        PROBLEM_JSON
    };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn order(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<JsonResponse<Order>, ApiError> {
    state
        .store
        .get(&order_id)
        .await?
        .map(JsonResponse)
        .ok_or(ApiError::NotFound(order_id))
}

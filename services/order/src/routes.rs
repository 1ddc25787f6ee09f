//! The order API: `POST /orders` (with an optional `Idempotency-Key`) and `GET /orders/{id}`.
//!
//! The only place that speaks HTTP: requests are parsed here, and errors become answers here.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as JsonResponse, Router};
use ordertrail_shared::api::{Order, PlaceOrder, ValidOrder};
use ordertrail_shared::http::Json;
use ordertrail_shared::idempotency::IdempotencyKey;
use ordertrail_shared::problem::{PROBLEM_JSON, Problem};
use ordertrail_shared::telemetry::current_trace_id;
use tracing::Instrument;

use crate::AppState;
use crate::claim::{self, Stopped};
use crate::error::ApiError;
use crate::idempotency::{Answer, Fingerprint};
use crate::store::{KeyClaim, NewOrder};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{order_id}", get(order))
}

/// Creates the order and runs the checkout: 201 when confirmed, 202 when paid with the stock
/// still to be committed, a problem when it failed. With an `Idempotency-Key` the final answer
/// is kept and a repeat gets it again.
async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<PlaceOrder>,
) -> Result<Response, ApiError> {
    let order = ValidOrder::try_from(request)?;
    let key = IdempotencyKey::from_headers(&headers)?;
    let order_id = uuid::Uuid::now_v7().to_string();
    let fingerprint = Fingerprint::of(&order);
    let card = order.payment.card_number.masked();
    let trace_id = current_trace_id();
    let new_order = NewOrder {
        order_id: &order_id,
        customer_id: order.customer_id.as_str(),
        lines: order.items.as_slice(),
        card: &card,
        trace_id: trace_id.as_deref(),
    };
    let claim = match state
        .store
        .create(
            &new_order,
            key.as_ref().map(|key| (key.as_str(), fingerprint.as_str())),
        )
        .await?
    {
        KeyClaim::New(claim) => claim,
        KeyClaim::Replay { status, body } => {
            tracing::info!("idempotent replay");
            return Ok(stored_response(status, body));
        }
        KeyClaim::InProgress { order_id } => return Err(ApiError::InProgress(order_id)),
        KeyClaim::Mismatch => return Err(ApiError::KeyReused),
    };
    ordertrail_shared::audit!("order-created", order.id = %order_id, "order created");

    // The saga runs in a task of its own: a caller that hangs up must not stop a checkout
    // half-way, and the answer is kept for the idempotency key either way. It runs under the
    // order's claim, taken with the order, so that no recovery sweep works on it meanwhile.
    let (saga, store) = (state.saga.clone(), state.store.clone());
    let checkout = async move {
        let checkout = async {
            let answer = Answer::to(&saga.checkout(&claim, order).await?);
            answer.keep(&store, &claim).await?;
            Ok(answer)
        };
        claim::hold(&saga, &claim, checkout)
            .await
            .map_err(|stopped| match stopped {
                Stopped::Database(err) => ApiError::Database(err),
                Stopped::ClaimLost | Stopped::TimedOut => ApiError::Unfinished(order_id.clone()),
            })
    };
    match tokio::spawn(checkout.in_current_span()).await {
        Ok(answer) => {
            let answer = answer?;
            Ok(stored_response(answer.status.as_u16(), answer.body))
        }
        Err(panicked) => Ok(Problem::internal(&panicked).into_response()),
    }
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

//! The public API: `GET /api/products`, `POST /api/orders`, `GET /api/orders/{id}`.
//!
//! Answers from upstream pass through unchanged (status, body, content type and
//! `Retry-After`); the gateway answers itself only for a request it refuses and for an
//! upstream it cannot reach.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::context::FutureExt;
use opentelemetry::{Context, KeyValue};
use ordertrail_shared::CUSTOMER_ID;
use ordertrail_shared::api::{PlaceOrder, ValidOrder};
use ordertrail_shared::http::{Call, Json};
use ordertrail_shared::idempotency::{IDEMPOTENCY_KEY, IdempotencyKey};
use ordertrail_shared::problem::Problem;

use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/products", get(products))
        .route("/api/orders", post(place_order))
        .route("/api/orders/{order_id}", get(order))
}

async fn products(State(state): State<AppState>) -> Response {
    forward(state.inventory.get("/products", "/products"), "inventory").await
}

/// Validates the order (the card was checked when the body was read), then forwards it with
/// the customer id in baggage, so that every service downstream tags its spans and logs.
async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<PlaceOrder>,
) -> Response {
    let order = match ValidOrder::try_from(request) {
        Ok(order) => order,
        Err(invalid) => return Problem::from(invalid).into_response(),
    };
    // Dropping a key we cannot forward would turn a safe retry into a second order.
    let key = match IdempotencyKey::from_headers(&headers) {
        Ok(key) => key,
        Err(invalid) => return Problem::from(invalid).into_response(),
    };
    let customer_id = order.customer_id.as_str();
    tracing::Span::current().record(CUSTOMER_ID, customer_id);
    let cx = Context::current_with_baggage([KeyValue::new(CUSTOMER_ID, customer_id.to_owned())]);
    let mut call = state.order.post("/orders", "/orders").json(&order);
    if let Some(key) = &key {
        call = call.header(IDEMPOTENCY_KEY, key.as_str());
    }
    async move {
        tracing::info!("forwarding order");
        forward(call, "order").await
    }
    .with_context(cx)
    .await
}

async fn order(State(state): State<AppState>, Path(order_id): Path<String>) -> Response {
    // Order ids are UUIDs; anything else cannot name an order, and must not reach the
    // internal URL (a decoded `%2F` or `?` would change its path).
    let Ok(order_id) = uuid::Uuid::parse_str(&order_id) else {
        return Problem::new(StatusCode::NOT_FOUND, "order not found")
            .with_detail(format!("no order {order_id}"))
            .into_response();
    };
    forward(
        state
            .order
            .get("/orders/{order_id}", &format!("/orders/{order_id}")),
        "order",
    )
    .await
}

/// Sends `call` and passes the answer through; 503 problem+json when `service` cannot be
/// reached.
pub(crate) async fn forward(call: Call, service: &str) -> Response {
    let upstream = match call.send().await {
        Ok(upstream) => upstream,
        Err(_) => return unavailable(service),
    };
    let status = upstream.status();
    let passed_on: Vec<_> = [header::CONTENT_TYPE, header::RETRY_AFTER]
        .into_iter()
        .filter_map(|name| Some((name.clone(), upstream.headers().get(name)?.clone())))
        .collect();
    match upstream.bytes().await {
        Ok(body) => {
            let mut response = (status, body).into_response();
            for (name, value) in passed_on {
                response.headers_mut().insert(name, value);
            }
            response
        }
        Err(_) => unavailable(service),
    }
}

fn unavailable(service: &str) -> Response {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
        .with_detail(format!("the {service} service did not answer"))
        .into_response()
}

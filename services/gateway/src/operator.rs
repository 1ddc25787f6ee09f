//! The operator's routes, served only with `OPERATOR_TOKEN` set and only to requests that
//! carry it: `/internal/faults` (the gateway's own fault rules) and
//! `/internal/faults/{service}`, forwarded to order, payment or inventory, which are not
//! published and so cannot be reached otherwise.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use ordertrail_shared::faults::{self, Faults, OperatorToken, Rules};
use ordertrail_shared::http::{Call, Json, ServiceClient};
use ordertrail_shared::problem::Problem;

use crate::AppState;
use crate::routes::forward;

/// The route template of a forwarded call, as its client span names it.
const UPSTREAM_ROUTE: &str = "/internal/faults";

pub(crate) fn routes(token: OperatorToken, faults: Faults) -> Router<AppState> {
    let forwarded = format!("{}/{{service}}", faults::ROUTE);
    Router::new()
        .merge(faults::routes(faults))
        .route(
            &forwarded,
            axum::routing::get(list).put(replace).delete(clear),
        )
        .route_layer(middleware::from_fn_with_state(
            token,
            faults::require_operator,
        ))
}

async fn list(State(state): State<AppState>, Path(service): Path<String>) -> Response {
    send(&state, &service, |client| {
        client.get(UPSTREAM_ROUTE, faults::ROUTE)
    })
    .await
}

/// The rules are parsed here too, so that a mistake is answered before anything is sent.
async fn replace(
    State(state): State<AppState>,
    Path(service): Path<String>,
    Json(rules): Json<Rules>,
) -> Response {
    send(&state, &service, |client| {
        client.put(UPSTREAM_ROUTE, faults::ROUTE).json(&rules)
    })
    .await
}

async fn clear(State(state): State<AppState>, Path(service): Path<String>) -> Response {
    send(&state, &service, |client| {
        client.delete(UPSTREAM_ROUTE, faults::ROUTE)
    })
    .await
}

/// Sends the call `make` builds to `service` and passes its answer on.
async fn send(
    state: &AppState,
    service: &str,
    make: impl FnOnce(&ServiceClient) -> Call,
) -> Response {
    let client = match service {
        "order" => &state.order,
        "payment" => &state.payment,
        "inventory" => &state.inventory,
        _ => {
            return Problem::new(StatusCode::NOT_FOUND, "no such service")
                .with_detail("the service must be order, payment or inventory")
                .into_response();
        }
    };
    forward(make(client), service).await
}

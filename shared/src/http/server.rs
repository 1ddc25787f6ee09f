//! The server side of a hop: one server span per request, parented on the caller's
//! `traceparent`, carrying its `baggage`, and the `traceresponse` header on the way out; the
//! limits inside it and the health checks beside it.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::global;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_semantic_conventions::attribute::{
    ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, OTEL_STATUS_CODE,
    URL_PATH, URL_SCHEME,
};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::limits::{Limits, limited, method_not_allowed};
use crate::db::Database;
use crate::faults::{self, Faults};

/// The longest `url.path` a span records: a path too long to serve is answered 414, and must not
/// put its whole length on the span first.
const MAX_PATH_ON_SPAN: usize = 1024;

/// Who may call a service, which decides whether the caller's baggage is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// An internal service: its callers are the other services, and the baggage comes from the
    /// gateway.
    Internal,
    /// The public edge: the caller's trace is continued but its baggage is dropped, so that a
    /// caller cannot set `customer.id` or send arbitrary entries on to the internal services.
    Public,
}

/// A service's whole HTTP face: `routes` inside the [`Limits`] (with problem+json answers for
/// unknown routes, wrong methods, oversized or slow requests, overload and panics), each
/// request in a server span that continues the caller's trace, and untraced health checks
/// (probes every few seconds would drown real traces).
///
/// The `faults` strike inside the limits and the server span, so that an added latency counts
/// against the request timeout and shows on the span. An internal service also serves their
/// route, `/internal/faults`; the public edge serves it only behind the operator's token, so it
/// adds the route itself (see [`faults::routes`]).
pub fn app(
    routes: Router,
    door: Door,
    database: Option<Database>,
    limits: &Limits,
    faults: &Faults,
) -> Router {
    let routes = match door {
        Door::Internal => routes.merge(faults::routes(faults.clone())),
        Door::Public => routes,
    };
    let routes = routes.layer(middleware::from_fn_with_state(
        faults.clone(),
        faults::inject,
    ));
    limited(routes, limits)
        .layer(middleware::from_fn_with_state(door, trace_request))
        .merge(health_routes(database).method_not_allowed_fallback(method_not_allowed))
}

/// An internal service's [`app`]: behind [`Door::Internal`] with the default [`Limits`], its
/// fault rules taken from `database` (where its slow-query faults strike too), and ready while
/// `database` answers.
pub fn internal_app(routes: Router, database: &Database) -> Router {
    app(
        routes,
        Door::Internal,
        Some(database.clone()),
        &Limits::default(),
        database.faults(),
    )
}

async fn trace_request(State(door): State<Door>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let mut parent = global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    if door == Door::Public {
        parent = parent.with_cleared_baggage();
    }
    // `otel.name` and `otel.kind` are tracing-opentelemetry's own fields, not attributes.
    let span = tracing::info_span!(
        "http.server",
        otel.name = name,
        otel.kind = "server",
        { OTEL_STATUS_CODE } = Empty,
        { HTTP_REQUEST_METHOD } = %method,
        { HTTP_ROUTE } = route,
        { URL_PATH } = truncated(request.uri().path(), MAX_PATH_ON_SPAN),
        { URL_SCHEME } = "http",
        { HTTP_RESPONSE_STATUS_CODE } = Empty,
        { ERROR_TYPE } = Empty,
        { crate::CUSTOMER_ID } = Empty,
    );
    if let Some(customer) = parent.baggage().get(crate::CUSTOMER_ID) {
        span.record(crate::CUSTOMER_ID, customer.as_str());
    }
    // Without an OpenTelemetry layer there is nothing to parent; the request is served alike.
    let _ = span.set_parent(parent);

    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status();
    // As an `i64`: tracing-opentelemetry records other integer types (a `u16`, a `u64`) as
    // their text, and the conventions want a number.
    span.record(HTTP_RESPONSE_STATUS_CODE, i64::from(status.as_u16()));
    crate::telemetry::INSTRUMENTS.http_server(took, &method, route, status);
    if status.is_server_error() {
        // Only 5xx are errors of a server span; a 4xx is the caller's mistake.
        span.record(OTEL_STATUS_CODE, "error");
        span.record(ERROR_TYPE, status.as_str());
    }
    if let Some(value) = traceresponse(&span) {
        response.headers_mut().insert("traceresponse", value);
    }
    span.in_scope(|| {
        tracing::info!(
            http.response.status_code = status.as_u16(),
            event.duration = took.as_nanos() as u64,
            "request completed"
        );
    });
    response
}

/// The W3C `traceresponse` header: `00-{trace-id}-{span-id}-{flags}` of the server span.
fn traceresponse(span: &tracing::Span) -> Option<HeaderValue> {
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let value = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    HeaderValue::from_str(&value).ok()
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `GET /health/live` (the process answers) and `GET /health/ready` (its database answers,
/// when it has one).
fn health_routes(database: Option<Database>) -> Router {
    Router::new()
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready).with_state(database))
}

async fn ready(State(database): State<Option<Database>>) -> impl IntoResponse {
    match database {
        Some(db) if !db.ping().await => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
        _ => (StatusCode::OK, "ready"),
    }
}

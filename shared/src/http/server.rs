//! The server side of a hop: one server span per request, parented on the caller's
//! `traceparent`, carrying its `baggage`, and the `traceresponse` header on the way out.

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
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::db::Database;

/// Wraps every route of `router` in a server span. Routes merged afterwards (health checks)
/// make no spans.
pub fn traced<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(middleware::from_fn(trace_request))
}

async fn trace_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    let parent = global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let span = tracing::info_span!(
        "http.server",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = route,
        url.path = request.uri().path(),
        url.scheme = "http",
        http.response.status_code = Empty,
        error.type = Empty,
        customer.id = Empty,
    );
    if let Some(customer) = parent.baggage().get(crate::CUSTOMER_ID) {
        span.record(crate::CUSTOMER_ID, customer.as_str());
    }
    // Without an OpenTelemetry layer there is nothing to parent; the request is served alike.
    let _ = span.set_parent(parent);

    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        // Only 5xx are errors of a server span; a 4xx is the caller's mistake.
        span.record("otel.status_code", "error");
        span.record("error.type", status.as_str());
    }
    if let Some(value) = traceresponse(&span) {
        response.headers_mut().insert("traceresponse", value);
    }
    span.in_scope(|| {
        tracing::info!(
            http.response.status_code = status.as_u16(),
            event.duration = started.elapsed().as_nanos() as u64,
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

/// `GET /health/live` (the process answers) and `GET /health/ready` (its database answers,
/// when it has one). They are not traced: probes every few seconds would drown real traces.
pub fn health_routes<S: Clone + Send + Sync + 'static>(database: Option<Database>) -> Router<S> {
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

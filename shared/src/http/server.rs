//! The server side of a hop: one server span per request, parented on the caller's
//! `traceparent`, carrying its `baggage`, and the `traceresponse` header on the way out.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::db::Database;

/// How long in-flight requests may run on after the shutdown signal: the rest of the
/// ten seconds compose and `up` allow goes to flushing telemetry.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a service takes its callers' baggage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Baggage {
    /// Internal services: the baggage comes from the gateway.
    Trusted,
    /// The public edge: a caller must not be able to set `customer.id` or send arbitrary
    /// entries on to the internal services.
    Dropped,
}

/// Wraps every route of an internal service's `router` in a server span that continues the
/// caller's trace and baggage. Routes merged afterwards (health checks) make no spans.
pub fn traced<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(middleware::from_fn_with_state(
        Baggage::Trusted,
        trace_request,
    ))
}

/// Like [`traced`], for the public edge: the caller's trace is continued but its baggage is
/// dropped.
pub fn traced_edge<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(middleware::from_fn_with_state(
        Baggage::Dropped,
        trace_request,
    ))
}

/// Serves `app` until `shutdown` completes, then lets in-flight requests finish for at most
/// [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = Arc::new(Notify::new());
    let signal = stopping.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        signal.notify_one();
    });
    tokio::select! {
        served = server => served,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!("requests still running after the drain timeout are cut off");
            Ok(())
        }
    }
}

async fn trace_request(State(baggage): State<Baggage>, request: Request, next: Next) -> Response {
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
    if baggage == Baggage::Dropped {
        parent = parent.with_cleared_baggage();
    }
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

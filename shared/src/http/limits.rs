//! What every service refuses before a handler runs, and how: a request that is too big, too
//! slow or one too many gets a problem+json answer, never a hang.
//!
//! tower and tower-http do the generic parts (a concurrency bound with load shedding, a
//! request timeout, panic catching). The size checks and the body read are written here
//! because their tower-http counterparts answer with empty bodies, and tower-http's body
//! timeout is per frame, so a body trickled a byte at a time would never time out.

use std::any::Any;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;

use crate::problem::Problem;

/// The bounds a service holds its callers to. [`Limits::default`] is what every service runs
/// with; tests shrink them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The request line and headers must arrive within this, or the connection is closed
    /// (nothing can be answered to a request that was never read). It is also how long an
    /// idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// The whole body must arrive within this, or the answer is 408.
    pub body_read_timeout: Duration,
    /// A request must be answered within this, or the answer is 503 with `Retry-After`.
    pub request_timeout: Duration,
    /// Requests handled at once; one more is answered 503 with `Retry-After` at once. Keep it
    /// below `max_connections`: an HTTP/1 connection carries one request at a time, so a
    /// bound at or above it would never be reached.
    pub max_concurrent_requests: usize,
    /// Connections open at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// A larger body is answered 413 without being read past this.
    pub max_body_bytes: usize,
    /// A longer path and query are answered 414.
    pub max_uri_bytes: usize,
    /// Larger headers (names and values together) are answered 431.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let max_connections = max_connections();
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            // Beyond the gateway's 30 s wait for a checkout.
            request_timeout: Duration::from_secs(40),
            max_concurrent_requests: max_connections / 2,
            max_connections,
            max_body_bytes: 64 * 1024,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Half of the open-file limit (the other half is for calls to other services, the database
/// and logs), between 16 and 1024: past its file limit a process cannot even accept a
/// connection to refuse it. Half of these may have a request being handled at once; the
/// rest, beyond that, are answered 503 at once instead of waiting.
fn max_connections() -> usize {
    #[cfg(unix)]
    let files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    #[cfg(not(unix))]
    let files = 2048;
    usize::try_from(files / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, 1024)
}

/// `router` with the limits applied and every answer of its own problem+json: unknown routes
/// (404), wrong methods (405), oversized requests (413, 414, 431), slow bodies (408), overload
/// and timeouts (503 with `Retry-After`) and panics (500).
pub(crate) fn limited(router: Router, limits: &Limits) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panicked))
                // Read before a slot is taken, so that a slow body holds a connection (bounded
                // by `max_connections`) but not one of the requests being handled.
                .layer(middleware::from_fn_with_state(limits.clone(), read_request))
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(
                    limits.max_concurrent_requests,
                ))
                .timeout(limits.request_timeout),
        )
}

/// The `405` answer of a route that exists, for routes outside [`limited`] too.
pub(crate) async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        .with_detail("the route does not take this method")
}

/// Refuses a request whose head is too big, then reads its whole body within the limits, so
/// that no handler ever waits on a slow client or holds more than `max_body_bytes`.
async fn read_request(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_bytes > limits.max_uri_bytes {
        return Problem::new(StatusCode::URI_TOO_LONG, "URI too long")
            .with_detail(format!(
                "the path and query may be at most {} bytes",
                limits.max_uri_bytes
            ))
            .into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        )
        .with_detail(format!(
            "the headers may be at most {} bytes",
            limits.max_header_bytes
        ))
        .into_response();
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body_bytes as u64) {
        return too_large(&limits);
    }
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, limits.max_body_bytes).collect();
    let body: Bytes = match tokio::time::timeout(limits.body_read_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.is::<LengthLimitError>() => return too_large(&limits),
        Ok(Err(_)) => {
            return Problem::new(StatusCode::BAD_REQUEST, "body not read")
                .with_detail("the request body ended before it was complete")
                .into_response();
        }
        Err(_) => {
            return Problem::new(StatusCode::REQUEST_TIMEOUT, "request timeout")
                .with_detail(format!(
                    "the body must arrive within {} s",
                    limits.body_read_timeout.as_secs_f64()
                ))
                .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn too_large(limits: &Limits) -> Response {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        .with_detail(format!(
            "the body may be at most {} bytes",
            limits.max_body_bytes
        ))
        .into_response()
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not found").with_detail("no such route")
}

/// The answer when the concurrency bound is reached or a request runs out of time: try again
/// shortly (an order with its `Idempotency-Key` is safe to retry).
async fn overloaded(err: BoxError) -> Response {
    let problem = if err.is::<tower::timeout::error::Elapsed>() {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "request timed out")
            .with_detail("the request was not answered in time; retry it")
    } else {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            .with_detail("too many requests at once; retry shortly")
    };
    tracing::warn!(error.type = "overloaded", error.message = %problem.title, "request refused");
    let mut response = problem.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A panicking handler answers 500 like any internal error; the panic message stays in the
/// log, not in the answer.
fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(error.type = "panic", error.message = %message, "request handler panicked");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

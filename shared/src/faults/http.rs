//! The faults on the HTTP side: the middleware that injects them into requests, the internal
//! route that reads and replaces the rules, and the operator's token that guards that route at
//! the public edge.

use std::fmt;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::Span;

use super::{Faults, Kind, Rules, report};
use crate::http::Json;
use crate::problem::Problem;

/// The internal route: `GET` answers the rules in force, `PUT` replaces them (a JSON list of
/// rules, answered with the list in force), `DELETE` removes them all.
pub const ROUTE: &str = "/internal/faults";

/// [`ROUTE`] over `faults`, for any router state. Internal services serve it as is (`app`
/// adds it); the gateway serves it behind [`require_operator`].
pub fn routes<S>(faults: Faults) -> Router<S> {
    Router::new()
        .route(ROUTE, get(list).put(replace).delete(clear))
        .with_state(faults)
}

async fn list(State(faults): State<Faults>) -> axum::Json<Rules> {
    axum::Json(Rules::clone(&faults.rules()))
}

async fn replace(State(faults): State<Faults>, Json(rules): Json<Rules>) -> axum::Json<Rules> {
    faults.set(rules);
    list(State(faults)).await
}

async fn clear(State(faults): State<Faults>) -> axum::Json<Rules> {
    faults.set(Rules::default());
    list(State(faults)).await
}

/// Put in a response's extensions by a reset fault. The service's accept loop turns such a
/// response into a service error, on which hyper closes the connection without a word.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResetConnection;

impl fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection closed without an answer by an injected fault")
    }
}

impl std::error::Error for ResetConnection {}

/// The middleware `app` runs inside each request's server span: added latency and errors
/// before the handler, a reset after it. The internal route itself is never faulted, so that
/// rules can always be removed.
pub(crate) async fn inject(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .filter(|route| !route.starts_with(ROUTE))
    else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let on_route = |rule: &super::Rule| rule.on_route(&method, &route);
    let span = Span::current();

    for rule in faults.striking(Kind::Latency, on_route) {
        let delay = rule.delay();
        let millis = delay.as_millis();
        let detail = format!("{millis} ms before {method} {route}");
        report(&span, Kind::Latency, &format!("{millis} ms"), &detail);
        tokio::time::sleep(delay).await;
    }
    if let Some(rule) = faults.striking(Kind::Error, on_route).first() {
        let status = rule.status();
        let detail = format!(
            "{method} {route} answered {} without running",
            status.as_u16()
        );
        report(&span, Kind::Error, status.as_str(), &detail);
        let title = status.canonical_reason().unwrap_or("server error");
        return Problem::new(status, title.to_ascii_lowercase()).into_response();
    }
    let reset = !faults.striking(Kind::Reset, on_route).is_empty();

    let mut response = next.run(request).await;
    if reset {
        let detail = format!(
            "{method} {route} ran, then its connection was closed without the {} answer",
            response.status().as_u16()
        );
        report(&span, Kind::Reset, "no answer", &detail);
        response.extensions_mut().insert(ResetConnection);
    }
    response
}

/// The bearer token an operator presents to reach [`ROUTE`] at the public edge
/// (`OPERATOR_TOKEN`). Only its SHA-256 digest is kept.
///
/// A presented token is hashed too and the two digests compared in constant time: the time
/// taken says nothing about how much of a guess was right, and, both being 32 bytes, nothing
/// about the token's length either.
#[derive(Clone)]
pub struct OperatorToken([u8; 32]);

impl OperatorToken {
    /// The token, unless it is empty (an unset variable in compose is an empty one).
    pub fn new(token: &SecretString) -> Option<Self> {
        let token = token.expose_secret().trim();
        (!token.is_empty()).then(|| Self(Sha256::digest(token.as_bytes()).into()))
    }

    /// True when `headers` hold `Authorization: Bearer <this token>` (the scheme in any case).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(presented) = presented else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OperatorToken(..)")
    }
}

/// Middleware: the request goes on only with the operator's token, else it is answered 401.
pub async fn require_operator(
    State(token): State<OperatorToken>,
    request: Request,
    next: Next,
) -> Response {
    if token.admits(request.headers()) {
        return next.run(request).await;
    }
    tracing::warn!(error.type = "unauthorized", "operator token missing or wrong");
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized")
        .with_detail("this route needs the operator's token: Authorization: Bearer <token>")
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

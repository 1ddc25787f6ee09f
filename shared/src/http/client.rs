//! The client side of a hop: one client span per call, with the current trace context and
//! baggage injected into the request headers.

use std::time::{Duration, Instant};

use axum::http::Method;
use opentelemetry::global;
use opentelemetry_http::HeaderInjector;
use opentelemetry_semantic_conventions::attribute::{
    ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, OTEL_STATUS_CODE, SERVER_ADDRESS,
    SERVER_PORT, URL_FULL, URL_TEMPLATE,
};
use reqwest::{RequestBuilder, Response};
use serde::Serialize;
use tracing::Instrument;
use tracing::field::Empty;

use crate::telemetry::{INSTRUMENTS, MetricServer};

/// How long a call to another service may take in all, unless set with
/// [`ServiceClient::with_timeout`].
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take: a stopped service answers at once, a lost host does not.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle connection is kept for reuse: less than the header read timeout after
/// which the service at the other end closes it (see `Limits`), so that a call is never sent
/// on a connection being closed under it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for one upstream service, at a base URL such as `http://inventory:8083`.
#[derive(Debug, Clone)]
pub struct ServiceClient {
    http: reqwest::Client,
    /// Without a trailing slash; paths start with one.
    base: String,
    /// `server.address` and `server.port` of every call's duration.
    server: MetricServer,
}

impl ServiceClient {
    /// A client for the service at `base_url`.
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        Self::with_timeout(base_url, CALL_TIMEOUT)
    }

    /// A client whose calls may take up to `timeout` (connecting included).
    pub fn with_timeout(base_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let base = reqwest::Url::parse(base_url)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            server: MetricServer::of(&base),
            base: base.as_str().trim_end_matches('/').to_owned(),
        })
    }

    /// A GET of `path`, whose span is named after `route` (the path's template).
    pub fn get(&self, route: &'static str, path: &str) -> Call {
        self.call(Method::GET, route, path)
    }

    /// A POST of `path`, whose span is named after `route` (the path's template).
    pub fn post(&self, route: &'static str, path: &str) -> Call {
        self.call(Method::POST, route, path)
    }

    /// A PUT of `path`, whose span is named after `route` (the path's template).
    pub fn put(&self, route: &'static str, path: &str) -> Call {
        self.call(Method::PUT, route, path)
    }

    /// A DELETE of `path`, whose span is named after `route` (the path's template).
    pub fn delete(&self, route: &'static str, path: &str) -> Call {
        self.call(Method::DELETE, route, path)
    }

    fn call(&self, method: Method, route: &'static str, path: &str) -> Call {
        // A path that makes no valid URL fails when the call is sent, as an error.
        let url = format!("{}{path}", self.base);
        Call {
            route,
            server: self.server.clone(),
            request: self.http.request(method, url),
        }
    }
}

/// A request being built; [`Call::send`] runs it in a client span.
pub struct Call {
    route: &'static str,
    server: MetricServer,
    request: RequestBuilder,
}

impl Call {
    /// Sends `body` as JSON.
    pub fn json(mut self, body: &impl Serialize) -> Self {
        self.request = self.request.json(body);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request = self.request.header(name, value);
        self
    }

    /// Sends the request. The span's status is Error for a transport failure or a 4xx/5xx
    /// answer, as the HTTP client conventions ask; the response is returned either way.
    pub async fn send(self) -> Result<Response, reqwest::Error> {
        let (client, request) = self.request.build_split();
        let mut request = request?;
        let url = request.url();
        // `otel.name` and `otel.kind` are tracing-opentelemetry's own fields, not attributes.
        let span = tracing::info_span!(
            "http.client",
            otel.name = format!("{} {}", request.method(), self.route),
            otel.kind = "client",
            { OTEL_STATUS_CODE } = Empty,
            { HTTP_REQUEST_METHOD } = %request.method(),
            { SERVER_ADDRESS } = url.host_str().unwrap_or_default(),
            // As an `i64`: tracing-opentelemetry records other integer types as their text.
            { SERVER_PORT } = url.port_or_known_default().map_or(0, i64::from),
            { URL_FULL } = %url,
            { URL_TEMPLATE } = self.route,
            { HTTP_RESPONSE_STATUS_CODE } = Empty,
            { ERROR_TYPE } = Empty,
        );
        async move {
            // The span is entered here, so the current context is the client span's own.
            let cx = opentelemetry::Context::current();
            global::get_text_map_propagator(|propagator| {
                propagator.inject_context(&cx, &mut HeaderInjector(request.headers_mut()));
            });
            let span = tracing::Span::current();
            let method = request.method().clone();
            let started = Instant::now();
            let answer = client.execute(request).await;
            let took = started.elapsed();
            let metric = |outcome| {
                INSTRUMENTS.http_client(took, &method, &self.server, self.route, outcome);
            };
            match answer {
                Ok(response) => {
                    let status = response.status();
                    metric(Ok(status));
                    span.record(HTTP_RESPONSE_STATUS_CODE, i64::from(status.as_u16()));
                    if status.is_client_error() || status.is_server_error() {
                        span.record(OTEL_STATUS_CODE, "error");
                        span.record(ERROR_TYPE, status.as_str());
                    }
                    Ok(response)
                }
                Err(err) => {
                    let kind = if err.is_connect() {
                        "connect"
                    } else if err.is_timeout() {
                        "timeout"
                    } else {
                        "request"
                    };
                    metric(Err(kind));
                    crate::record_failure!(WARN, kind, &err, "call failed");
                    Err(err)
                }
            }
        }
        .instrument(span)
        .await
    }
}

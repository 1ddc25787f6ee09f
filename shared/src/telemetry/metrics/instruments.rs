//! The semantic-convention instruments of the HTTP server and client layers and the database
//! queries: `http.server.request.duration`, `http.client.request.duration` and
//! `db.client.operation.duration`, histograms in seconds with the conventions' bucket
//! boundaries.
//!
//! They are made once, from the global meter, the first time one is used (after
//! [`crate::telemetry::init`] installed the provider), and each record builds its attributes
//! in an array on the stack from `&'static str` keys and, where it can, values: a request
//! costs one lookup of its attribute set in the SDK's aggregation, no allocation beyond the
//! route it already had.

use std::sync::LazyLock;
use std::time::Duration;

use http::{Method, StatusCode};
use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry::{KeyValue, StringValue};
use opentelemetry_semantic_conventions::attribute::{
    DB_COLLECTION_NAME, DB_OPERATION_NAME, DB_SYSTEM_NAME, ERROR_TYPE, HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, SERVER_ADDRESS, SERVER_PORT, URL_SCHEME, URL_TEMPLATE,
};
use opentelemetry_semantic_conventions::metric::{
    DB_CLIENT_OPERATION_DURATION, HTTP_CLIENT_REQUEST_DURATION, HTTP_SERVER_REQUEST_DURATION,
};

/// The bucket boundaries the HTTP conventions give `http.*.request.duration`, in seconds.
pub const HTTP_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// The bucket boundaries the database conventions give `db.client.operation.duration`.
pub const DB_DURATION_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// The three histograms.
#[derive(Debug)]
pub(crate) struct Instruments {
    http_server: Histogram<f64>,
    http_client: Histogram<f64>,
    db_client: Histogram<f64>,
}

/// The instruments of the process, from the global meter provider.
pub(crate) static INSTRUMENTS: LazyLock<Instruments> =
    LazyLock::new(|| Instruments::new(&super::meter()));

/// A place-holder for the unused end of an attribute array.
fn unused() -> KeyValue {
    KeyValue::new("", false)
}

impl Instruments {
    pub(crate) fn new(meter: &Meter) -> Self {
        let histogram = |name: &'static str, description: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Self {
            http_server: histogram(
                HTTP_SERVER_REQUEST_DURATION,
                "Duration of HTTP server requests",
                &HTTP_DURATION_BUCKETS,
            ),
            http_client: histogram(
                HTTP_CLIENT_REQUEST_DURATION,
                "Duration of HTTP client requests",
                &HTTP_DURATION_BUCKETS,
            ),
            db_client: histogram(
                DB_CLIENT_OPERATION_DURATION,
                "Duration of database client operations",
                &DB_DURATION_BUCKETS,
            ),
        }
    }

    /// One request served: `route` is its template, when one matched; a 5xx sets
    /// `error.type` to the status code, as the conventions ask.
    pub(crate) fn http_server(
        &self,
        took: Duration,
        method: &Method,
        route: Option<String>,
        status: StatusCode,
    ) {
        let mut attributes = [
            KeyValue::new(HTTP_REQUEST_METHOD, method_name(method)),
            KeyValue::new(URL_SCHEME, "http"),
            KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status.as_u16())),
            unused(),
            unused(),
        ];
        let mut len = 3;
        if let Some(route) = route {
            attributes[len] = KeyValue::new(HTTP_ROUTE, route);
            len += 1;
        }
        if status.is_server_error() {
            attributes[len] = KeyValue::new(ERROR_TYPE, status.as_str().to_owned());
            len += 1;
        }
        self.http_server
            .record(took.as_secs_f64(), &attributes[..len]);
    }

    /// One call made to `server`: its answer's status, or the kind of failure
    /// (`connect`, `timeout`, `request`) when there was none. A 4xx or 5xx sets `error.type`
    /// to the status code.
    pub(crate) fn http_client(
        &self,
        took: Duration,
        method: &Method,
        server: &Server,
        template: &'static str,
        outcome: Result<StatusCode, &'static str>,
    ) {
        let mut attributes = [
            KeyValue::new(HTTP_REQUEST_METHOD, method_name(method)),
            KeyValue::new(SERVER_ADDRESS, server.address.clone()),
            KeyValue::new(SERVER_PORT, server.port),
            KeyValue::new(URL_TEMPLATE, template),
            unused(),
            unused(),
        ];
        let mut len = 4;
        match outcome {
            Ok(status) => {
                attributes[len] =
                    KeyValue::new(HTTP_RESPONSE_STATUS_CODE, i64::from(status.as_u16()));
                len += 1;
                if status.is_client_error() || status.is_server_error() {
                    attributes[len] = KeyValue::new(ERROR_TYPE, status.as_str().to_owned());
                    len += 1;
                }
            }
            Err(kind) => {
                attributes[len] = KeyValue::new(ERROR_TYPE, kind);
                len += 1;
            }
        }
        self.http_client
            .record(took.as_secs_f64(), &attributes[..len]);
    }

    /// One statement run; `failed` sets `error.type=database`, as on its span.
    pub(crate) fn db_client(
        &self,
        took: Duration,
        system: &'static str,
        operation: &'static str,
        collection: &'static str,
        failed: bool,
    ) {
        let attributes = [
            KeyValue::new(DB_SYSTEM_NAME, system),
            KeyValue::new(DB_OPERATION_NAME, operation),
            KeyValue::new(DB_COLLECTION_NAME, collection),
            KeyValue::new(ERROR_TYPE, "database"),
        ];
        let len = if failed { 4 } else { 3 };
        self.db_client
            .record(took.as_secs_f64(), &attributes[..len]);
    }
}

/// `server.address` and `server.port` of the service a client calls, made once per client.
#[derive(Debug, Clone)]
pub struct Server {
    address: StringValue,
    port: i64,
}

impl Server {
    /// The server of `url`: its host, and its port or the scheme's default.
    pub fn of(url: &reqwest::Url) -> Self {
        Self {
            address: StringValue::from(std::sync::Arc::<str>::from(
                url.host_str().unwrap_or_default(),
            )),
            port: url.port_or_known_default().map_or(0, i64::from),
        }
    }
}

/// The method as the conventions name it: a known one, or `_OTHER`, so that a caller cannot
/// make a series per made-up method.
fn method_name(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "_OTHER",
    }
}

//! A small OTLP/gRPC receiver: the `up` command's trace console and the tests' collector.
//!
//! It accepts `ExportTraceServiceRequest`s like any collector and hands them on as flat
//! [`ReceivedSpan`]s, each carrying its resource's `service.name`; [`from_jaeger_json`] makes
//! the same spans of a trace that Jaeger's query API answers. On the same port it serves the
//! OTLP metrics service, so that services pointed at it export their metrics there too:
//! [`start_otlp`] hands those on (see [`crate::received_metrics`]), the other starts accept
//! and discard them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;

/// One span as received, with ids as lowercase hex.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service_name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// The span name.
    pub name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    pub kind: &'static str,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// True when the span's status is Error.
    pub is_error: bool,
    /// The span's attributes, values rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// The kind of each attribute's value on the wire.
    pub attribute_kinds: BTreeMap<String, ValueKind>,
    /// Names of the span's events (`exception` for a recorded error).
    pub events: Vec<String>,
}

impl ReceivedSpan {
    /// The attribute `key`, if set.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// The kind of value the attribute `key` was sent as, if set: an `int_value` and a
    /// `string_value` of the same digits render alike in [`ReceivedSpan::attribute`].
    pub fn attribute_kind(&self, key: &str) -> Option<ValueKind> {
        self.attribute_kinds.get(key).copied()
    }

    /// The span's duration in nanoseconds.
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos)
    }
}

/// Flattens an export request into spans.
pub fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    flatten_resource_spans(request.resource_spans)
}

/// Parses the answer of Jaeger's `GET /api/v3/traces/{trace_id}`: `{"result": …}` holding
/// the trace as OTLP JSON (hex ids, camelCase names, 64-bit integers as strings), the encoding
/// opentelemetry-proto's serde support reads.
pub fn from_jaeger_json(body: &str) -> Result<Vec<ReceivedSpan>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Answer {
        result: TracesData,
    }
    let answer: Answer = serde_json::from_str(body)?;
    Ok(flatten_resource_spans(answer.result.resource_spans))
}

fn flatten_resource_spans(
    all: Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>,
) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in all {
        let service_name = service_name(resource_spans.resource.as_ref());
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            spans.push(ReceivedSpan {
                service_name: service_name.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                kind: kind_name(span.kind),
                start_unix_nanos: span.start_time_unix_nano,
                end_unix_nanos: span.end_time_unix_nano,
                // Status code 2 is STATUS_CODE_ERROR in the OTLP protobuf.
                is_error: span.status.as_ref().is_some_and(|s| s.code == 2),
                attributes: attributes(&span.attributes),
                attribute_kinds: kinds(&span.attributes),
                events: span.events.into_iter().map(|e| e.name).collect(),
                name: span.name,
            });
        }
    }
    spans
}

/// The kind of an OTLP `AnyValue`: which field of its `oneof` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ValueKind {
    /// `string_value`
    String,
    /// `bool_value`
    Bool,
    /// `int_value`
    Int,
    /// `double_value`
    Double,
    /// `array_value`
    Array,
    /// `kvlist_value`
    KeyValueList,
    /// `bytes_value`
    Bytes,
    /// `string_value_strindex` (profiles only)
    StringIndex,
    /// No value set.
    Empty,
}

impl ValueKind {
    /// The kind of `value`.
    pub fn of(value: Option<&AnyValue>) -> Self {
        match value.and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(_)) => Self::String,
            Some(any_value::Value::BoolValue(_)) => Self::Bool,
            Some(any_value::Value::IntValue(_)) => Self::Int,
            Some(any_value::Value::DoubleValue(_)) => Self::Double,
            Some(any_value::Value::ArrayValue(_)) => Self::Array,
            Some(any_value::Value::KvlistValue(_)) => Self::KeyValueList,
            Some(any_value::Value::BytesValue(_)) => Self::Bytes,
            Some(any_value::Value::StringValueStrindex(_)) => Self::StringIndex,
            None => Self::Empty,
        }
    }
}

/// Attributes by key, values rendered as strings.
pub(crate) fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), render(kv.value.as_ref())))
        .collect()
}

/// The kind of each attribute's value, by key.
pub(crate) fn kinds(kvs: &[KeyValue]) -> BTreeMap<String, ValueKind> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), ValueKind::of(kv.value.as_ref())))
        .collect()
}

/// `service.name` among a resource's attributes, or empty.
pub(crate) fn service_name(
    resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
) -> String {
    resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .map(|kv| render(kv.value.as_ref()))
        .unwrap_or_default()
}

fn render(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kind_name(kind: i32) -> &'static str {
    // SpanKind numbering from the OTLP protobuf.
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

struct Collector {
    requests: mpsc::UnboundedSender<ExportTraceServiceRequest>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        // A receiver nobody reads any more just discards.
        let _ = self.requests.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

struct MetricsCollector {
    requests: mpsc::UnboundedSender<ExportMetricsServiceRequest>,
}

#[tonic::async_trait]
impl MetricsService for MetricsCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        // Nobody reading (a start that discards metrics) is fine: the answer is the same.
        let _ = self.requests.send(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running receiver: where to send spans, and the spans it got.
pub struct Receiver {
    /// The address it listens on; point `OTEL_EXPORTER_OTLP_ENDPOINT` at `http://{addr}`.
    pub addr: SocketAddr,
    /// Every span received, in arrival order.
    pub spans: mpsc::UnboundedReceiver<ReceivedSpan>,
}

/// Starts a receiver on `addr` (port 0 picks a free one). It runs until the runtime stops.
pub async fn start(addr: SocketAddr) -> std::io::Result<Receiver> {
    let (addr, mut requests) = start_raw(addr).await?;
    let (tx, spans) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            for span in flatten(request) {
                if tx.send(span).is_err() {
                    return;
                }
            }
        }
    });
    Ok(Receiver { addr, spans })
}

/// Starts a receiver that hands on trace export requests as they came; metrics are accepted
/// and discarded.
pub async fn start_raw(
    addr: SocketAddr,
) -> std::io::Result<(
    SocketAddr,
    mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
)> {
    let otlp = start_otlp(addr).await?;
    Ok((otlp.addr, otlp.traces))
}

/// A running receiver of both signals, handing on export requests as they came.
pub struct Otlp {
    /// The address it listens on; point `OTEL_EXPORTER_OTLP_ENDPOINT` at `http://{addr}`.
    pub addr: SocketAddr,
    /// Every trace export request, in arrival order.
    pub traces: mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
    /// Every metrics export request, in arrival order; read them with
    /// [`crate::received_metrics::ReceivedMetrics`].
    pub metrics: mpsc::UnboundedReceiver<ExportMetricsServiceRequest>,
}

/// Starts a receiver of traces and metrics on `addr` (port 0 picks a free one), one gRPC
/// server for both. It runs until the runtime stops.
pub async fn start_otlp(addr: SocketAddr) -> std::io::Result<Otlp> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (traces_tx, traces) = mpsc::unbounded_channel();
    let (metrics_tx, metrics) = mpsc::unbounded_channel();
    let trace_service = TraceServiceServer::new(Collector {
        requests: traces_tx,
    });
    let metrics_service = MetricsServiceServer::new(MetricsCollector {
        requests: metrics_tx,
    });
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(trace_service)
            .add_service(metrics_service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
        if let Err(err) = served {
            tracing::error!(
                error = &err as &dyn std::error::Error,
                "otlp receiver stopped"
            );
        }
    });
    Ok(Otlp {
        addr,
        traces,
        metrics,
    })
}

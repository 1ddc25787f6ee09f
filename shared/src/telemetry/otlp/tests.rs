use std::borrow::Cow;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;

use super::*;

/// A collector handing on what it receives, answering with `rejected` spans refused.
struct Collector {
    requests: mpsc::UnboundedSender<ExportTraceServiceRequest>,
    rejected: i64,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.requests.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: (self.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: self.rejected,
                error_message: "too old".into(),
            }),
        }))
    }
}

async fn collector(rejected: i64) -> (String, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::unbounded_channel();
    let service = TraceServiceServer::new(Collector {
        requests: tx,
        rejected,
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), requests)
}

fn context(trace: u128, span: u64, remote: bool) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        remote,
        TraceState::from_key_value([("vendor", "value")]).unwrap(),
    )
}

/// Spans using every part of the message: each kind of attribute value, events, links, each
/// status, remote and local parents, roots, two instrumentation scopes, long and empty texts.
fn spans() -> Vec<SpanData> {
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms);
    let scope = InstrumentationScope::builder("ordertrail").build();
    let other = InstrumentationScope::builder("other")
        .with_version("1.2.3")
        .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
        .with_attributes([KeyValue::new("scope.attribute", true)])
        .build();
    let span = |id: u64, parent: u64, kind, status, scope: &InstrumentationScope| SpanData {
        span_context: context(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736, id, false),
        parent_span_id: SpanId::from(parent),
        parent_span_is_remote: parent == 7,
        span_kind: kind,
        name: Cow::Owned(format!("span {id}")),
        start_time: at(id),
        end_time: at(id + 100),
        attributes: vec![
            KeyValue::new("text", "a".repeat(300)),
            KeyValue::new("empty", ""),
            KeyValue::new("int", -42_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("float", 0.25),
            KeyValue::new("flag", false),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec![
                    StringValue::from("x"),
                    StringValue::from(""),
                ])),
            ),
        ],
        dropped_attributes_count: u32::from(id == 3),
        events: {
            let mut events = SpanEvents::default();
            events.events = vec![Event::new(
                "exception",
                at(id + 50),
                vec![KeyValue::new("exception.message", "boom")],
                1,
            )];
            events.dropped_count = 2;
            events
        },
        links: {
            let mut links = SpanLinks::default();
            links.links = vec![Link::new(
                context(1, 2, true),
                vec![KeyValue::new("link", 1_i64)],
                0,
            )];
            links
        },
        status,
        instrumentation_scope: scope.clone(),
    };
    vec![
        span(1, 0, SpanKind::Server, Status::Unset, &scope),
        span(2, 7, SpanKind::Client, Status::error("it failed"), &other),
        span(3, 1, SpanKind::Internal, Status::Ok, &scope),
        span(4, 1, SpanKind::Producer, Status::Unset, &other),
        span(5, 1, SpanKind::Consumer, Status::Unset, &scope),
    ]
}

#[tokio::test]
async fn the_collector_receives_what_the_sdk_exporter_would_have_sent() {
    let (endpoint, mut requests) = collector(0).await;
    let resource = crate::telemetry::resource("order");
    let mut exporter = GrpcSpanExporter::new(&endpoint, Duration::from_secs(5)).unwrap();
    exporter.set_resource(&resource);

    exporter.export(spans()).await.unwrap();

    let received = requests.recv().await.unwrap();
    let expected = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            spans(),
            &ResourceAttributesWithSchema::from(&resource),
        ),
    };
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_refused_connection_is_an_export_error_and_a_partial_success_is_not() {
    let refused = {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap()
    };
    let exporter =
        GrpcSpanExporter::new(&format!("http://{refused}"), Duration::from_secs(5)).unwrap();
    let err = exporter.export(spans()).await.unwrap_err();
    assert!(err.to_string().contains("export error"), "{err}");

    let (endpoint, _requests) = collector(3).await;
    let exporter = GrpcSpanExporter::new(&endpoint, Duration::from_secs(5)).unwrap();
    exporter.export(spans()).await.unwrap();
    exporter.shutdown().unwrap();
    assert!(exporter.export(spans()).await.is_err());
}

#[test]
fn the_timeout_comes_from_the_traces_variable_first() {
    let vars = |pairs: &'static [(&str, &str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    };
    assert_eq!(GrpcSpanExporter::timeout_from(vars(&[])), DEFAULT_TIMEOUT);
    assert_eq!(
        GrpcSpanExporter::timeout_from(vars(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "500"),
        ])),
        Duration::from_millis(500)
    );
    assert_eq!(
        GrpcSpanExporter::timeout_from(vars(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "2000")])),
        Duration::from_secs(2)
    );
}

#[test]
fn a_partial_success_is_read_from_the_answer() {
    // partial_success { rejected_spans: 300, error_message: "no" }
    let answer = [0x0a, 0x07, 0x08, 0xac, 0x02, 0x12, 0x02, b'n', b'o'];
    let rejected = partial_success(&answer).unwrap();
    assert_eq!((rejected.spans, rejected.message.as_str()), (300, "no"));
    assert_eq!(partial_success(&[]).unwrap().spans, 0);
}

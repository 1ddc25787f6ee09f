//! A `tracing` layer that writes each event as one Elastic Common Schema JSON line.
//!
//! tracing-subscriber's JSON formatter nests span fields and knows nothing of trace ids, and
//! no maintained crate writes ECS with OpenTelemetry ids for tracing 0.1, so the few lines that
//! map fields to ECS names are written here.
//!
//! Each line carries the fixed ECS fields, `trace.id` and `span.id` of the active
//! OpenTelemetry context, the propagated `customer.id`, the fields of the spans in scope (so an
//! `order.id` recorded on a handler span reaches every line the handler writes) and the event's
//! own fields, which win over span fields of the same name.

use std::error::Error;
use std::fmt;
use std::io::Write;

use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

/// The ECS version the field names follow.
pub const ECS_VERSION: &str = "8.11.0";

/// A destination for finished log lines. Implementations must never block for long: they are
/// called on the request path.
pub trait LineSink: Send + Sync + 'static {
    /// Takes one line, without its trailing newline.
    fn write_line(&self, line: &[u8]);
}

/// Writes lines to standard output.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stdout;

impl LineSink for Stdout {
    fn write_line(&self, line: &[u8]) {
        let mut out = std::io::stdout().lock();
        // A closed stdout must not take the service down; the line is lost either way.
        let _ = out.write_all(line).and_then(|()| out.write_all(b"\n"));
    }
}

/// The service fields every line carries.
#[derive(Debug, Clone)]
pub struct ServiceIdentity {
    name: String,
    dataset: String,
    environment: Option<String>,
}

impl ServiceIdentity {
    /// The identity of service `name`, whose lines go to `event.dataset=ordertrail.<name>`.
    pub fn new(name: &str) -> Self {
        let environment = std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .ok()
            .and_then(|attrs| {
                attrs.split(',').find_map(|kv| {
                    kv.trim()
                        .strip_prefix("deployment.environment.name=")
                        .map(str::to_owned)
                })
            });
        Self {
            name: name.to_owned(),
            dataset: format!("ordertrail.{name}"),
            environment,
        }
    }
}

/// The ECS JSON layer.
pub struct EcsLayer {
    identity: ServiceIdentity,
    sinks: Vec<Box<dyn LineSink>>,
}

impl EcsLayer {
    /// A layer writing every line to each of `sinks` (stdout when empty).
    pub fn new(identity: ServiceIdentity, mut sinks: Vec<Box<dyn LineSink>>) -> Self {
        if sinks.is_empty() {
            sinks.push(Box::new(Stdout));
        }
        Self { identity, sinks }
    }

    fn line(
        &self,
        event_fields: Map<String, Value>,
        event: &Event<'_>,
        inherited: Map<String, Value>,
    ) -> Value {
        let mut line = inherited;
        line.extend(event_fields);
        let metadata = event.metadata();
        let now = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        line.insert("@timestamp".into(), now.into());
        line.insert("log.level".into(), metadata.level().as_str().into());
        line.insert("log.logger".into(), metadata.target().into());
        line.insert("ecs.version".into(), ECS_VERSION.into());
        line.insert("service.name".into(), self.identity.name.clone().into());
        line.insert("service.version".into(), env!("CARGO_PKG_VERSION").into());
        line.insert("service.namespace".into(), "ordertrail".into());
        if let Some(environment) = &self.identity.environment {
            line.insert("service.environment".into(), environment.clone().into());
        }
        line.entry("event.dataset")
            .or_insert_with(|| self.identity.dataset.clone().into());
        line.entry("message")
            .or_insert_with(|| Value::String(String::new()));

        let cx = Context::current();
        let span = cx.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            line.insert(
                "trace.id".into(),
                span_context.trace_id().to_string().into(),
            );
            line.insert("span.id".into(), span_context.span_id().to_string().into());
        }
        if let Some(customer) = cx.baggage().get(crate::CUSTOMER_ID) {
            line.entry(crate::CUSTOMER_ID)
                .or_insert_with(|| customer.as_str().to_owned().into());
        }
        Value::Object(line)
    }
}

/// The fields recorded on a span, kept in its extensions for the events inside it.
struct SpanFields(Map<String, Value>);

impl<S> Layer<S> for EcsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let mut inherited = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    inherited.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let Ok(line) = serde_json::to_vec(&self.line(fields, event, inherited)) else {
            return;
        };
        for sink in &self.sinks {
            sink.write_line(&line);
        }
    }
}

/// Records `tracing` fields as JSON values under their own (ECS) names. Fields that only steer
/// the OpenTelemetry layer (`otel.*`) are left out.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        if !field.name().starts_with("otel.") {
            self.0.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    /// `error = &err as &dyn Error` becomes ECS `error.message`, with its cause chain.
    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        let mut message = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        let key = if field.name() == "error" {
            "error.message"
        } else {
            field.name()
        };
        self.0.insert(key.to_owned(), message.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

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

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, Key};
use opentelemetry_sdk::Resource;
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

/// Writes lines to standard output from a thread of its own, through tracing-appender's
/// bounded, lossy queue (128 000 lines): a reader of stdout that stalls (a full pipe, a slow
/// log driver) costs lines, never a request thread.
#[derive(Clone)]
pub struct Stdout(NonBlocking);

impl Stdout {
    /// Starts the writer thread. Dropping the guard flushes what is queued.
    pub fn start() -> (Self, WorkerGuard) {
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .thread_name("ordertrail-stdout")
            .finish(std::io::stdout());
        (Self(writer), guard)
    }
}

impl LineSink for Stdout {
    fn write_line(&self, line: &[u8]) {
        // One write per line, so that a line is queued (or dropped) whole.
        let mut buffer = Vec::with_capacity(line.len() + 1);
        buffer.extend_from_slice(line);
        buffer.push(b'\n');
        let _ = self.0.clone().write_all(&buffer);
    }
}

/// The service fields every line carries.
#[derive(Debug, Clone)]
pub struct ServiceIdentity {
    name: String,
    dataset: String,
    version: Option<String>,
    namespace: Option<String>,
    environment: Option<String>,
}

impl ServiceIdentity {
    /// The identity the spans of `resource` carry: `service.name`, `service.version`,
    /// `service.namespace` and, as ECS `service.environment`, `deployment.environment.name`.
    /// Taking them from the resource the tracer provider uses is what keeps a service's log
    /// lines and spans in agreement, whatever `OTEL_SERVICE_NAME` and
    /// `OTEL_RESOURCE_ATTRIBUTES` say.
    pub fn from_resource(resource: &Resource) -> Self {
        let get = |key: &'static str| {
            resource
                .get(&Key::from_static_str(key))
                .map(|value| value.as_str().into_owned())
        };
        // The SDK always sets service.name; the fallback is its own default.
        let name = get("service.name").unwrap_or_else(|| "unknown_service".to_owned());
        Self {
            dataset: format!("ordertrail.{name}"),
            name,
            version: get("service.version"),
            namespace: get("service.namespace"),
            environment: get("deployment.environment.name"),
        }
    }

    /// An identity from values: service `name` of this build's version, with no environment.
    /// Services use [`ServiceIdentity::from_resource`]; this is for tests and tools.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            dataset: format!("ordertrail.{name}"),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            namespace: Some("ordertrail".to_owned()),
            environment: None,
        }
    }
}

/// The ECS JSON layer.
pub struct EcsLayer {
    identity: ServiceIdentity,
    sinks: Vec<Box<dyn LineSink>>,
}

impl EcsLayer {
    /// A layer writing every line to each of `sinks`.
    pub fn new(identity: ServiceIdentity, sinks: Vec<Box<dyn LineSink>>) -> Self {
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
        let identity = &self.identity;
        line.insert("service.name".into(), identity.name.clone().into());
        for (key, value) in [
            ("service.version", &identity.version),
            ("service.namespace", &identity.namespace),
            ("service.environment", &identity.environment),
        ] {
            if let Some(value) = value {
                line.insert(key.into(), value.clone().into());
            }
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
        let message = super::error_chain(value);
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

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::KeyValue;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects lines in memory.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<Value>>>);

    impl LineSink for Captured {
        fn write_line(&self, line: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push(serde_json::from_slice(line).unwrap());
        }
    }

    impl Captured {
        /// Every line so far.
        pub(crate) fn lines(&self) -> Vec<Value> {
            self.0.lock().unwrap().clone()
        }
    }

    /// The one line `identity` writes for an event.
    fn line_of(identity: ServiceIdentity) -> Value {
        let captured = Captured::default();
        let layer = EcsLayer::new(identity, vec![Box::new(captured.clone())]);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!("hello");
        });
        let mut lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines.remove(0)
    }

    #[test]
    fn the_service_fields_come_from_the_resource() {
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.version", "9.9.9"),
                KeyValue::new("service.namespace", "shop"),
                KeyValue::new("deployment.environment.name", "staging"),
            ])
            .with_service_name("payment")
            .build();
        let line = line_of(ServiceIdentity::from_resource(&resource));
        assert_eq!(line["service.name"], "payment");
        assert_eq!(line["service.version"], "9.9.9");
        assert_eq!(line["service.namespace"], "shop");
        assert_eq!(line["service.environment"], "staging");
        assert_eq!(line["event.dataset"], "ordertrail.payment");
    }

    #[test]
    fn an_error_field_becomes_error_message_with_its_causes() {
        let captured = Captured::default();
        let layer = EcsLayer::new(
            ServiceIdentity::new("test"),
            vec![Box::new(captured.clone())],
        );
        let error = crate::telemetry::tests::Failed(std::io::Error::other("connection reset"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::warn!(error = &error as &dyn Error, "failed");
        });
        let line = &captured.lines()[0];
        assert_eq!(line["error.message"], "charge failed: connection reset");
        assert!(line.get("error").is_none(), "{line}");
    }
}

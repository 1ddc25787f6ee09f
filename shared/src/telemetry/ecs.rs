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

use std::cell::RefCell;
use std::io::Write;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, Key};
use opentelemetry_sdk::Resource;
use opentelemetry_semantic_conventions::attribute::{
    DEPLOYMENT_ENVIRONMENT_NAME, SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_VERSION,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::span::{Attributes, Record};
use tracing::{Event, Id, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

use super::fields::{FieldValue, JsonFields, write_str};
use super::log_sampling::{LogSampling, SampledOut, Sampler};

/// The ECS version the field names follow.
pub const ECS_VERSION: &str = "8.11.0";

/// A destination for finished log lines. Implementations must never block for long: they are
/// called on the request path.
pub trait LineSink: Send + Sync + 'static {
    /// Takes one line, without its trailing newline.
    fn write_line(&self, line: &[u8]);
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
        let name = get(SERVICE_NAME).unwrap_or_else(|| "unknown_service".to_owned());
        Self {
            dataset: format!("ordertrail.{name}"),
            name,
            version: get(SERVICE_VERSION),
            namespace: get(SERVICE_NAMESPACE),
            environment: get(DEPLOYMENT_ENVIRONMENT_NAME),
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
    sink: Box<dyn LineSink>,
    /// The log-volume policy; `None` keeps every line.
    sampling: Option<Sampler>,
}

impl EcsLayer {
    /// A layer writing every line to `sink`.
    pub fn new(identity: ServiceIdentity, sink: Box<dyn LineSink>) -> Self {
        Self {
            identity,
            sink,
            sampling: None,
        }
    }

    /// The layer, writing only the lines `policy` keeps and counting the others in
    /// `sampled_out`.
    pub fn with_sampling(mut self, policy: LogSampling, sampled_out: SampledOut) -> Self {
        self.sampling = Sampler::new(policy, sampled_out);
        self
    }

    /// Writes the line of `event`, whose own fields are in `scratch.event`, into
    /// `scratch.line`.
    ///
    /// The first value written under a name wins, so the order below is the precedence: the
    /// fixed ECS fields, then the event's fields, then those of the spans in scope from the
    /// innermost out, then the defaults that any of those may replace.
    fn write_line<S>(&self, event: &Event<'_>, ctx: &LayerContext<'_, S>, scratch: &mut Scratch)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Scratch {
            line,
            written,
            event: event_fields,
        } = scratch;
        let mut line = Line::start(line, written);
        let metadata = event.metadata();
        line.field("@timestamp", |json| {
            json.push(b'"');
            let _ = OffsetDateTime::now_utc().format_into(json, &Rfc3339);
            json.push(b'"');
        });
        line.str("log.level", metadata.level().as_str());
        line.str("log.logger", metadata.target());
        line.str("ecs.version", ECS_VERSION);
        let identity = &self.identity;
        line.str("service.name", &identity.name);
        for (key, value) in [
            ("service.version", &identity.version),
            ("service.namespace", &identity.namespace),
            ("service.environment", &identity.environment),
        ] {
            if let Some(value) = value {
                line.str(key, value);
            }
        }
        let cx = Context::current();
        let span = cx.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            line.field("trace.id", |json| {
                let _ = write!(json, "\"{}\"", span_context.trace_id());
            });
            line.field("span.id", |json| {
                let _ = write!(json, "\"{}\"", span_context.span_id());
            });
        }

        for (name, value) in event_fields.iter() {
            line.value(name, value);
        }
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(fields) = span.extensions().get::<JsonFields>() {
                    for (name, value) in fields.iter() {
                        line.value(name, value);
                    }
                }
            }
        }

        line.str("event.dataset", &identity.dataset);
        line.str("message", "");
        if let Some(customer) = cx.baggage().get(crate::CUSTOMER_ID) {
            line.str(crate::CUSTOMER_ID, customer.as_str().as_ref());
        }
        line.finish();
    }
}

/// The buffers a line is built in, kept per thread: writing a line allocates nothing but what
/// its sink copies.
#[derive(Default)]
struct Scratch {
    line: Vec<u8>,
    /// The names already in `line`.
    written: Vec<&'static str>,
    /// The event's own fields.
    event: JsonFields,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// A JSON object being written, in which the first value written under a name wins.
struct Line<'a> {
    json: &'a mut Vec<u8>,
    written: &'a mut Vec<&'static str>,
}

impl<'a> Line<'a> {
    fn start(json: &'a mut Vec<u8>, written: &'a mut Vec<&'static str>) -> Self {
        json.clear();
        written.clear();
        json.push(b'{');
        Self { json, written }
    }

    /// Writes `name` with the value `write` appends, unless `name` is written already.
    fn field(&mut self, name: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        if self.written.contains(&name) {
            return;
        }
        if !self.written.is_empty() {
            self.json.push(b',');
        }
        write_str(self.json, name);
        self.json.push(b':');
        write(self.json);
        self.written.push(name);
    }

    fn str(&mut self, name: &'static str, value: &str) {
        self.field(name, |json| write_str(json, value));
    }

    fn value(&mut self, name: &'static str, value: FieldValue<'_>) {
        match value {
            FieldValue::Json(json) => self.field(name, |line| line.extend_from_slice(json)),
            FieldValue::Str(text) => self.str(name, text),
        }
    }

    fn finish(self) {
        self.json.push(b'}');
    }
}

impl<S> Layer<S> for EcsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = JsonFields::with_capacity(attrs.fields().len());
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<JsonFields>() {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        if let Some(sampling) = &self.sampling
            && !sampling.keeps(event, &ctx)
        {
            return;
        }
        let write = |scratch: &mut Scratch| {
            scratch.event.clear();
            event.record(&mut scratch.event);
            self.write_line(event, &ctx, scratch);
            self.sink.write_line(&scratch.line);
        };
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => write(&mut scratch),
            // A line written while writing one (a sink that logs): fresh buffers.
            Err(_) => write(&mut Scratch::default()),
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use std::error::Error;

    use opentelemetry::KeyValue;
    use serde_json::Value;
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
        let layer = EcsLayer::new(identity, Box::new(captured.clone()));
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
        let layer = EcsLayer::new(ServiceIdentity::new("test"), Box::new(captured.clone()));
        let error = crate::telemetry::tests::Failed(std::io::Error::other("connection reset"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::warn!(error = &error as &dyn Error, "failed");
        });
        let line = &captured.lines()[0];
        assert_eq!(line["error.message"], "charge failed: connection reset");
        assert!(line.get("error").is_none(), "{line}");
    }

    #[test]
    fn the_event_wins_over_its_spans_and_the_inner_span_over_the_outer() {
        let captured = Captured::default();
        let layer = EcsLayer::new(ServiceIdentity::new("test"), Box::new(captured.clone()));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let outer = tracing::info_span!(
                "outer",
                otel.name = "hidden",
                order.id = "o-1",
                shared = "outer",
                late = tracing::field::Empty,
                service.name = "not the service"
            );
            let _outer = outer.enter();
            let inner = tracing::info_span!("inner", shared = "inner", count = 3_u64);
            let _inner = inner.enter();
            outer.record("late", true);
            tracing::info!(
                count = -1_i64,
                ratio = 0.5,
                text = "a \"quoted\"\nline",
                "hello {}",
                42
            );
        });
        let line = &captured.lines()[0];
        assert_eq!(line["message"], "hello 42");
        assert_eq!(line["order.id"], "o-1");
        assert_eq!(line["shared"], "inner");
        assert_eq!(line["count"], -1);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["text"], "a \"quoted\"\nline");
        assert_eq!(line["late"], true);
        assert_eq!(line["service.name"], "test");
        assert!(line.get("otel.name").is_none(), "{line}");
        assert_eq!(line["log.level"], "INFO");
    }
}

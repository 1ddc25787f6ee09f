//! Span capture for the service crates' tests: the SDK's in-memory exporter behind an
//! OpenTelemetry layer, with the baggage processor and propagator the services install.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::SubscriberExt;

use ordertrail_shared::telemetry::{self, BaggageSpanProcessor};

/// Spans recorded by the SDK's in-memory exporter, for as long as the value lives, on the
/// current thread (use `#[tokio::test]`'s default current-thread runtime).
///
/// tracing caches per call site whether anyone is interested in it, process-wide: a test that
/// runs a call site with no subscriber at the same moment another test starts capturing can
/// make the capturing test miss that span. So in a test binary where one test captures spans,
/// every test that runs traced code starts a capture too.
pub struct CapturedSpans {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _guard: DefaultGuard,
}

impl CapturedSpans {
    /// Installs a subscriber with the OpenTelemetry layer exporting into memory.
    pub fn start() -> Self {
        telemetry::install_propagator();
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BaggageSpanProcessor::new(&[ordertrail_shared::CUSTOMER_ID]))
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let guard = tracing::subscriber::set_default(subscriber);
        Self {
            exporter,
            provider,
            _guard: guard,
        }
    }

    /// Every span finished so far.
    pub fn spans(&self) -> Vec<SpanData> {
        let _ = self.provider.force_flush();
        self.exporter.get_finished_spans().unwrap_or_default()
    }

    /// The one finished span named `name`; panics listing the names when there is not one
    /// within two seconds.
    ///
    /// A span can end a moment after the response: sqlx's SQLite worker thread holds the span
    /// of the statement it runs, and drops it once that statement is done.
    pub fn named(&self, name: &str) -> SpanData {
        let mut spans = self.spans();
        for _ in 0..100 {
            if spans.iter().any(|s| s.name == name) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            spans = self.spans();
        }
        let mut found = spans.iter().filter(|s| s.name == name);
        match (found.next(), found.next()) {
            (Some(span), None) => span.clone(),
            _ => panic!(
                "expected one span {name}, got {:?}",
                spans.iter().map(|s| s.name.to_string()).collect::<Vec<_>>()
            ),
        }
    }
}

/// The value of attribute `key` of `span`, rendered as a string.
pub fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

//! Test support for the service crates (feature `testing`): fresh databases of both kinds and
//! an in-memory span exporter.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use sqlx::migrate::Migrator;
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::SubscriberExt;

use crate::db::Database;

/// The variable naming a PostgreSQL server to run the store tests against as well.
pub const POSTGRES_URL_VAR: &str = "ORDERTRAIL_TEST_POSTGRES_URL";

/// A fresh, migrated SQLite database, and a fresh PostgreSQL one when
/// `ORDERTRAIL_TEST_POSTGRES_URL` is set (a new database is created on that server for each
/// call, so tests never see each other's rows).
pub async fn databases(migrations: &Migrator) -> Vec<Database> {
    let name = format!("ordertrail_test_{}", uuid::Uuid::new_v4().simple());
    let sqlite = std::env::temp_dir().join(format!("{name}.db"));
    let mut all = vec![
        Database::connect(
            &format!("sqlite://{}?mode=rwc", sqlite.display()),
            migrations,
        )
        .await
        .expect("sqlite"),
    ];
    if let Ok(server) = std::env::var(POSTGRES_URL_VAR) {
        let admin = sqlx::AnyPool::connect(&server)
            .await
            .expect("connect to ORDERTRAIL_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create test database");
        let (base, query) = server
            .split_once('?')
            .map_or((server.as_str(), None), |(b, q)| (b, Some(q)));
        let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
        let url = match query {
            Some(query) => format!("{base}/{name}?{query}"),
            None => format!("{base}/{name}"),
        };
        all.push(Database::connect(&url, migrations).await.expect("postgres"));
    }
    all
}

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
        crate::telemetry::install_propagator();
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(crate::telemetry::BaggageSpanProcessor::new(&[
                crate::CUSTOMER_ID,
            ]))
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

/// The JSON body of a router's response.
pub async fn json_body(response: axum::response::Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a readable body");
    serde_json::from_slice(&bytes).expect("a JSON body")
}

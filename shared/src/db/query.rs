//! Running a declared statement: [`Database::query`] and [`Transaction::query`] build a
//! [`Query`], which runs under the statement's client span.

use std::time::{Duration, Instant};

use futures::{FutureExt as _, TryFutureExt as _};
use opentelemetry_semantic_conventions::attribute::{
    DB_COLLECTION_NAME, DB_NAMESPACE, DB_OPERATION_NAME, DB_QUERY_TEXT, DB_SYSTEM_NAME,
};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Encode, Executor, FromRow, Type};
use tracing::{Instrument, Span};

use super::{Database, Sql};
use crate::telemetry::INSTRUMENTS;

impl Database {
    /// `sql`, to bind its values to and run on the pool, under its client span.
    pub fn query(&self, sql: &'static Sql) -> Query<'_, &AnyPool> {
        Query::new(self, sql, &self.pool)
    }

    /// Begins a transaction on a connection of the pool. `BEGIN`, `COMMIT` and `ROLLBACK` get
    /// no span of their own: the statements in between have theirs.
    pub async fn begin(&self) -> Result<Transaction<'_>, sqlx::Error> {
        let tx = self.pool.begin().traced(Span::none()).await?;
        Ok(Transaction { db: self, tx })
    }

    /// A client span for `sql`, named `{operation} {table}` as the conventions ask, with the
    /// delay of any slow-query fault that strikes this query.
    fn span(&self, sql: &Sql) -> QuerySpan {
        // `otel.name` and `otel.kind` are tracing-opentelemetry's own fields, not attributes.
        let span = tracing::info_span!(
            "db.query",
            otel.name = format!("{} {}", sql.operation, sql.collection),
            otel.kind = "client",
            { DB_SYSTEM_NAME } = self.system.as_str(),
            { DB_NAMESPACE } = self.namespace.as_str(),
            { DB_OPERATION_NAME } = sql.operation,
            { DB_COLLECTION_NAME } = sql.collection,
            { DB_QUERY_TEXT } = sql.text,
        );
        let delay = self.faults.slow_query(sql, &span);
        QuerySpan {
            span,
            delay,
            measured: Some(self.measured(sql)),
        }
    }

    /// What a statement's `db.client.operation.duration` is recorded with.
    fn measured(&self, sql: &Sql) -> Measured {
        Measured {
            system: self.system.as_str(),
            operation: sql.operation,
            collection: sql.collection,
        }
    }
}

/// A transaction, from [`Database::begin`]: its statements run with [`Transaction::query`].
/// Dropped without [`Transaction::commit`], it rolls back.
#[derive(Debug)]
pub struct Transaction<'d> {
    db: &'d Database,
    tx: sqlx::Transaction<'static, Any>,
}

impl Transaction<'_> {
    /// `sql`, to bind its values to and run in this transaction, under its client span.
    pub fn query(&mut self, sql: &'static Sql) -> Query<'_, &mut AnyConnection> {
        Query::new(self.db, sql, &mut *self.tx)
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().traced(Span::none()).await
    }

    /// Rolls the transaction back now, rather than when its connection is next used.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().traced(Span::none()).await
    }
}

/// A declared statement with its values, bound to where it runs (the pool or a transaction's
/// connection); one of `execute`, `fetch_*` runs it under its client span (see
/// [`Database::query`]). The span is made when the statement is run, as a child of the
/// current span, and a slow-query fault strikes inside it.
#[must_use = "a query does nothing until it is run"]
pub struct Query<'q, E> {
    db: &'q Database,
    sql: &'static Sql,
    spanned: bool,
    query: sqlx::query::Query<'q, Any, AnyArguments<'q>>,
    executor: E,
}

impl<'q, E: Executor<'q, Database = Any> + 'q> Query<'q, E> {
    fn new(db: &'q Database, sql: &'static Sql, executor: E) -> Self {
        Self {
            db,
            sql,
            spanned: true,
            query: sqlx::query(sql.text),
            executor,
        }
    }

    /// Binds the next `$n` placeholder's value. Values never reach the span.
    pub fn bind<T: 'q + Encode<'q, Any> + Type<Any>>(mut self, value: T) -> Self {
        self.query = self.query.bind(value);
        self
    }

    /// Runs without a span (and so without slow-query faults), for a query a background job
    /// repeats so often that a trace each time would bury the real ones.
    pub fn without_span(mut self) -> Self {
        self.spanned = false;
        self
    }

    /// Runs the statement; how many rows it changed.
    pub fn execute(self) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
        let span = self.span();
        self.query
            .execute(self.executor)
            .traced(span)
            .map_ok(|done| done.rows_affected())
    }

    /// Runs the query; every row.
    pub fn fetch_all(self) -> impl Future<Output = Result<Vec<AnyRow>, sqlx::Error>> + Send {
        let span = self.span();
        self.query.fetch_all(self.executor).traced(span)
    }

    /// Runs the query; every row, read as a `T` by the columns named after its fields
    /// (`#[derive(sqlx::FromRow)]`).
    pub fn fetch_all_as<T: for<'r> FromRow<'r, AnyRow>>(
        self,
    ) -> impl Future<Output = Result<Vec<T>, sqlx::Error>> + Send {
        self.fetch_all()
            .map(|rows| rows?.iter().map(T::from_row).collect())
    }

    /// Runs the query; its one row, or `RowNotFound`.
    pub fn fetch_one(self) -> impl Future<Output = Result<AnyRow, sqlx::Error>> + Send {
        let span = self.span();
        self.query.fetch_one(self.executor).traced(span)
    }

    /// Runs the query; its first row, if any.
    pub fn fetch_optional(
        self,
    ) -> impl Future<Output = Result<Option<AnyRow>, sqlx::Error>> + Send {
        let span = self.span();
        self.query.fetch_optional(self.executor).traced(span)
    }

    fn span(&self) -> QuerySpan {
        if self.spanned {
            self.db.span(self.sql)
        } else {
            // Measured all the same: a duration costs no trace to bury the real ones in.
            QuerySpan {
                measured: Some(self.db.measured(self.sql)),
                ..Span::none().into()
            }
        }
    }
}

impl<E> std::fmt::Debug for Query<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("sql", self.sql)
            .field("spanned", &self.spanned)
            .finish_non_exhaustive()
    }
}

/// A query's client span, how long a slow-query fault holds the query back (inside the
/// span), and the attributes of its duration. A plain [`Span`] (`Span::none()` for a
/// transaction's `BEGIN`) holds nothing back and is not measured.
#[derive(Debug)]
struct QuerySpan {
    span: Span,
    delay: Duration,
    measured: Option<Measured>,
}

/// The attributes of a statement's `db.client.operation.duration`.
#[derive(Debug, Clone, Copy)]
struct Measured {
    system: &'static str,
    operation: &'static str,
    collection: &'static str,
}

impl From<Span> for QuerySpan {
    fn from(span: Span) -> Self {
        Self {
            span,
            delay: Duration::ZERO,
            measured: None,
        }
    }
}

/// Runs a query future as the client span given, without making that span current inside it.
trait Traced<T>: Future<Output = Result<T, sqlx::Error>> + Sized {
    /// Awaits `self` (after the span's fault delay, if any), marks the span failed if the
    /// query failed, then ends it.
    ///
    /// sqlx's SQLite worker thread keeps the current span of a connection's last statement
    /// until that connection's next command. Were the query span current, it (and through it
    /// the request's spans) would stay open, and unexported, for as long as the connection
    /// idles. The span still gets its parent from where it was made and its times from its
    /// creation and this drop.
    fn traced(self, span: impl Into<QuerySpan>) -> impl Future<Output = Self::Output> + Send
    where
        Self: Send,
    {
        let QuerySpan {
            span,
            delay,
            measured,
        } = span.into();
        async move {
            let started = Instant::now();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let output = self.instrument(Span::none()).await;
            if let Some(Measured {
                system,
                operation,
                collection,
            }) = measured
            {
                let took = started.elapsed();
                INSTRUMENTS.db_client(took, system, operation, collection, output.is_err());
            }
            if let Err(err) = &output {
                crate::telemetry::record_error(&span, "database", err);
            }
            drop(span);
            output
        }
    }
}

impl<T, F: Future<Output = Result<T, sqlx::Error>>> Traced<T> for F {}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt as _;
    use sqlx::Row as _;
    use sqlx::migrate::Migrator;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::*;

    /// Spans finished on this thread while the value lives, exported as each one ends.
    struct Spans {
        exporter: opentelemetry_sdk::trace::InMemorySpanExporter,
        _guard: tracing::subscriber::DefaultGuard,
    }

    impl Spans {
        fn start() -> Self {
            use opentelemetry::trace::TracerProvider as _;
            use tracing_subscriber::layer::SubscriberExt as _;
            let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
            let _guard = tracing::subscriber::set_default(subscriber);
            Self { exporter, _guard }
        }

        fn finished(&self) -> Vec<opentelemetry_sdk::trace::SpanData> {
            self.exporter.get_finished_spans().unwrap()
        }

        fn named(&self, name: &str) -> opentelemetry_sdk::trace::SpanData {
            let spans = self.finished();
            let mut found = spans.iter().filter(|span| span.name == name);
            match (found.next(), found.next()) {
                (Some(span), None) => span.clone(),
                _ => panic!("expected one span {name} among {spans:?}"),
            }
        }
    }

    fn attribute(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    const CREATE: Sql = Sql {
        operation: "CREATE",
        collection: "things",
        text: "CREATE TABLE things (id TEXT PRIMARY KEY)",
    };
    const INSERT: Sql = Sql {
        operation: "INSERT",
        collection: "things",
        text: "INSERT INTO things (id) VALUES ($1)",
    };
    const COUNT: Sql = Sql {
        operation: "SELECT",
        collection: "things",
        text: "SELECT COUNT(*) AS things FROM things",
    };

    /// A fresh SQLite database named `things_<uuid>` with a `things` table.
    async fn things() -> Database {
        let name = format!("things_{}", uuid::Uuid::new_v4().simple());
        let file = std::env::temp_dir().join(format!("{name}.db"));
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let db = Database::connect(&url, &Migrator::DEFAULT).await.unwrap();
        db.query(&CREATE).without_span().execute().await.unwrap();
        db
    }

    #[tokio::test]
    async fn a_query_is_a_client_span_of_the_current_one_that_ends_when_it_is_done() {
        let spans = Spans::start();
        let db = things().await;
        let parent = tracing::info_span!("parent");

        let insert = async { db.query(&INSERT).bind("a-secret-value").execute().await };
        let inserted = insert.instrument(parent.clone()).await.unwrap();

        assert_eq!(inserted, 1);
        // Ended, and so exported, by the time the query returned: sqlx's SQLite worker never
        // had it to hold (see `Traced::traced`).
        let insert = spans.named("INSERT things");
        let parent_id = parent.context().span().span_context().span_id();
        assert_eq!(insert.parent_span_id, parent_id);
        assert_eq!(insert.span_kind, opentelemetry::trace::SpanKind::Client);
        assert_eq!(insert.status, opentelemetry::trace::Status::Unset);
        let attributes = [
            ("db.system.name", "sqlite"),
            ("db.namespace", db.namespace.as_str()),
            ("db.operation.name", "INSERT"),
            ("db.collection.name", "things"),
            ("db.query.text", "INSERT INTO things (id) VALUES ($1)"),
        ];
        for (key, value) in attributes {
            assert_eq!(attribute(&insert, key).as_deref(), Some(value), "{key}");
        }
        assert!(
            !format!("{insert:?}").contains("a-secret-value"),
            "no value reaches the span"
        );
    }

    #[tokio::test]
    async fn a_failed_query_marks_its_span_failed() {
        let spans = Spans::start();
        let db = things().await;
        db.query(&INSERT).bind("a").execute().await.unwrap();

        let duplicate = db.query(&INSERT).bind("a").execute().await;

        assert!(duplicate.is_err());
        let failed = spans.finished().pop().unwrap();
        assert_eq!(failed.name, "INSERT things");
        assert!(matches!(
            failed.status,
            opentelemetry::trace::Status::Error { .. }
        ));
        assert_eq!(
            attribute(&failed, "error.type").as_deref(),
            Some("database")
        );
        assert_eq!(failed.events.events[0].name, "exception");
    }

    #[tokio::test]
    async fn a_transaction_spans_its_statements_only_and_rolls_back_when_dropped() {
        let spans = Spans::start();
        let db = things().await;

        let mut tx = db.begin().await.unwrap();
        tx.query(&INSERT).bind("a").execute().await.unwrap();
        drop(tx);
        let mut tx = db.begin().await.unwrap();
        tx.query(&INSERT).bind("b").execute().await.unwrap();
        tx.commit().await.unwrap();
        let things: i64 = db
            .query(&COUNT)
            .without_span()
            .fetch_one()
            .await
            .unwrap()
            .get("things");

        assert_eq!(things, 1, "the dropped transaction rolled back");
        let names: Vec<_> = spans.finished().iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, ["INSERT things", "INSERT things"]);
    }
}

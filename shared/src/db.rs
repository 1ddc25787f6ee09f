//! The database handle: SQLite or PostgreSQL, chosen at run time from `DATABASE_URL`, and the
//! client spans every query runs in.
//!
//! sqlx emits no OpenTelemetry spans, so each query is declared once as a [`Sql`] constant
//! naming its operation and table, and run under [`Database::span`] with [`Traced::traced`].

use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use tracing::{Instrument, Span};

/// A statement with the names its client span needs. The text holds placeholders only, never
/// values, so it is safe to record as `db.query.text`.
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    /// `db.operation.name`: SELECT, INSERT, UPDATE or DELETE.
    pub operation: &'static str,
    /// `db.collection.name`: the table.
    pub collection: &'static str,
    /// The statement, with `$1`-style placeholders (valid in SQLite and PostgreSQL alike).
    pub text: &'static str,
}

/// The database product, for `db.system.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbSystem {
    /// `sqlite`
    Sqlite,
    /// `postgresql`
    Postgresql,
}

impl DbSystem {
    /// The semantic-convention name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgresql => "postgresql",
        }
    }
}

/// A connection pool that knows which database it talks to.
#[derive(Debug, Clone)]
pub struct Database {
    /// The pool.
    pub pool: AnyPool,
    system: DbSystem,
    namespace: String,
}

impl Database {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`) and runs `migrations`.
    pub async fn connect(url: &str, migrations: &Migrator) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let system = if url.starts_with("sqlite:") {
            DbSystem::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            DbSystem::Postgresql
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite: or postgres:");
        };
        if system == DbSystem::Sqlite {
            create_sqlite_parent_dir(url)?;
        }
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if system == DbSystem::Sqlite { 4 } else { 10 })
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|err| {
                anyhow::anyhow!("cannot connect to the {} database: {err}", system.as_str())
            })?;
        migrations.run(&pool).await?;
        let namespace = namespace_of(url);
        Ok(Self {
            pool,
            system,
            namespace,
        })
    }

    /// Which database this is.
    pub fn system(&self) -> DbSystem {
        self.system
    }

    /// A client span for `sql`, named `{operation} {table}` as the conventions ask.
    pub fn span(&self, sql: &Sql) -> Span {
        tracing::info_span!(
            "db.query",
            otel.name = format!("{} {}", sql.operation, sql.collection),
            otel.kind = "client",
            db.system.name = self.system.as_str(),
            db.namespace = %self.namespace,
            db.operation.name = sql.operation,
            db.collection.name = sql.collection,
            db.query.text = sql.text,
        )
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// `db.namespace`: the database name only, taken from the parsed URL's path, so that the
/// credentials of a URL without a database name can never end up on a span.
fn namespace_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|url| url.path_segments()?.next_back().map(str::to_owned))
        .unwrap_or_default()
        .trim_end_matches(".db")
        .to_owned()
}

/// SQLite creates the file (with `mode=rwc`) but not its folder.
fn create_sqlite_parent_dir(url: &str) -> anyhow::Result<()> {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    Ok(())
}

/// Runs a query future as the client span given, without making that span current inside it.
pub trait Traced<T>: Future<Output = Result<T, sqlx::Error>> + Sized {
    /// Awaits `self`, marks `span` failed if the query failed, then ends it.
    ///
    /// sqlx's SQLite worker thread keeps the current span of a connection's last statement
    /// until that connection's next command. Were the query span current, it (and through it
    /// the request's spans) would stay open, and unexported, for as long as the connection
    /// idles. The span still gets its parent from where it was made and its times from its
    /// creation and this drop.
    fn traced(self, span: Span) -> impl Future<Output = Self::Output> + Send
    where
        Self: Send,
    {
        async move {
            let output = self.instrument(Span::none()).await;
            if let Err(err) = &output {
                crate::telemetry::record_error(&span, "database", err);
            }
            drop(span);
            output
        }
    }
}

impl<T, F: Future<Output = Result<T, sqlx::Error>>> Traced<T> for F {}

/// Now, as the text every table stores its timestamps in: RFC 3339 in UTC with exactly six
/// fractional digits, so that text order is time order in SQLite and PostgreSQL alike.
pub fn now() -> String {
    timestamp(time::OffsetDateTime::now_utc())
}

/// `at` in the stored timestamp format (see [`now`]).
pub fn timestamp(at: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_is_the_database_name_and_never_the_credentials() {
        assert_eq!(
            namespace_of("postgres://user:secret@db:5432/orders?sslmode=disable"),
            "orders"
        );
        assert_eq!(namespace_of("postgres://user:secret@db:5432"), "");
        assert_eq!(namespace_of("postgres://user:secret@db:5432/"), "");
        assert_eq!(namespace_of("sqlite://var/orders.db?mode=rwc"), "orders");
    }

    #[test]
    fn stored_timestamps_sort_as_text_in_time_order() {
        let whole = time::macros::datetime!(2026-11-22 05:00:00 UTC);
        let half = time::macros::datetime!(2026-11-22 05:00:00.5 UTC);
        assert_eq!(super::timestamp(whole), "2026-11-22T05:00:00.000000Z");
        assert!(super::timestamp(whole) < super::timestamp(half));
    }
}

//! The database handle: SQLite or PostgreSQL, chosen at run time from `DATABASE_URL`, and the
//! client spans every query runs in.
//!
//! sqlx emits no OpenTelemetry spans, so each query is declared once as a [`Sql`] constant
//! naming its operation and table, and run with [`Database::query`] (or, in a transaction from
//! [`Database::begin`], [`Transaction::query`]) under a client span of its own (`query`). The
//! pool is private, so that every statement goes that way.
//!
//! A transaction that loses a conflict with another one (a deadlock, a serialization failure,
//! a busy SQLite file) is run again by [`retry_transaction`] rather than answered as a 500.
//!
//! A PostgreSQL pool holds up to `DATABASE_MAX_CONNECTIONS` connections (10 by default): with
//! several replicas, each holds its own pool, and together they must stay under the server's
//! `max_connections` (deploy/k8s/CAPACITY.md does the sum for the prod overlay).

use std::str::FromStr;
use std::time::Duration;

mod query;

use rand::Rng;
use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteError;

use crate::faults::Faults;
pub use query::{Query, Transaction};

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
    pool: AnyPool,
    system: DbSystem,
    namespace: String,
    /// Slow-query faults strike in [`Database::span`].
    faults: Faults,
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
        let (max_connections, warning) = pool_size(
            system,
            std::env::var(MAX_CONNECTIONS_VARIABLE).ok().as_deref(),
        );
        if let Some(warning) = warning {
            tracing::warn!("database: {warning}");
        }
        let pool = pool_options(system, max_connections)
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
            faults: Faults::default(),
        })
    }

    /// This database with the service's fault rules, for slow-query faults.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The service's fault rules: the slow-query ones strike here, and the service's router
    /// and (in payment) card provider take theirs from this same handle.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Which database this is.
    pub fn system(&self) -> DbSystem {
        self.system
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// How long a pooled connection may sit idle before it is pinged on its way out of the pool.
const PING_IDLE_AFTER: Duration = Duration::from_secs(10);

/// The pool for `system`.
///
/// **SQLite** gets one connection, in WAL mode with `synchronous = NORMAL`:
/// - One connection, because SQLite lets one writer in at a time anyway, and a writer that finds
///   the file locked waits in SQLite's busy handler, which sleeps 1, 2, 5… up to 100 ms between
///   tries and serves nobody in order: with four connections and sixteen callers, that is where
///   the second-long p99 came from. The pool's queue is fair and wakes the next caller as soon
///   as the connection is back. No store holds a transaction open while it awaits anything but
///   its own statements, and none uses the pool inside a transaction, so one is enough; the
///   busy timeout (sqlx's five seconds) is left for other processes opening the file.
/// - WAL with `synchronous = NORMAL`, because in the default rollback-journal mode with
///   `synchronous = FULL` every commit waits for several fsyncs. In WAL mode a commit is an
///   append to the log, synced only at checkpoints: a committed transaction survives a crash of
///   the process, but can be lost if the machine loses power or the kernel crashes before the
///   next checkpoint (README, "Durability"). The journal mode is stored in the file; setting
///   it again on a connection to a file already in WAL mode changes nothing.
///
/// **PostgreSQL** keeps full durability (its `synchronous_commit` is the server's), with
/// `max_connections` connections at most ([`pool_size`]), opened as they are needed.
///
/// Both skip sqlx's ping on every acquire (a round trip to the server, per statement, for
/// PostgreSQL) and ping only a connection that has been idle for [`PING_IDLE_AFTER`], which
/// still catches one that a restarted server has closed.
fn pool_options(system: DbSystem, max_connections: u32) -> AnyPoolOptions {
    let options = AnyPoolOptions::new()
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        });
    match system {
        DbSystem::Sqlite => options
            .max_connections(max_connections)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            }),
        DbSystem::Postgresql => options.max_connections(max_connections),
    }
}

/// The variable that sizes a PostgreSQL pool.
pub const MAX_CONNECTIONS_VARIABLE: &str = "DATABASE_MAX_CONNECTIONS";

/// The environment variables the database handle reads itself; each service reads its
/// `DATABASE_URL` in its own configuration.
pub const VARIABLES: &[&str] = &[MAX_CONNECTIONS_VARIABLE];

/// The connections of a PostgreSQL pool when `DATABASE_MAX_CONNECTIONS` is not set.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The largest pool `DATABASE_MAX_CONNECTIONS` may ask for. A PostgreSQL server rarely admits
/// more than a few hundred connections in all, so a larger value is a typo, and one process
/// would take every connection of the server.
pub const MOST_CONNECTIONS: u32 = 1000;

/// The pool size for `system` from `DATABASE_MAX_CONNECTIONS` (`value`), and what could not be
/// honoured. SQLite always gets one connection: it lets one writer in at a time, and its pool
/// queues callers fairly where SQLite's busy handler would not. For PostgreSQL, a number from 1
/// to [`MOST_CONNECTIONS`]; unset or blank, [`DEFAULT_MAX_CONNECTIONS`]; anything else is
/// warned about and the default used, as the telemetry settings are: a pool size never stops a
/// service from starting.
pub fn pool_size(system: DbSystem, value: Option<&str>) -> (u32, Option<String>) {
    let value = value.map(str::trim).filter(|v| !v.is_empty());
    match (system, value) {
        (DbSystem::Sqlite, None) => (1, None),
        (DbSystem::Sqlite, Some(value)) => (
            1,
            Some(format!(
                "{MAX_CONNECTIONS_VARIABLE}={value:?} sizes PostgreSQL pools only; SQLite keeps \
                 its one connection"
            )),
        ),
        (DbSystem::Postgresql, None) => (DEFAULT_MAX_CONNECTIONS, None),
        (DbSystem::Postgresql, Some(value)) => match value.parse() {
            Ok(size) if (1..=MOST_CONNECTIONS).contains(&size) => (size, None),
            _ => (
                DEFAULT_MAX_CONNECTIONS,
                Some(format!(
                    "{MAX_CONNECTIONS_VARIABLE}={value:?} is not a number from 1 to \
                     {MOST_CONNECTIONS}; using {DEFAULT_MAX_CONNECTIONS}"
                )),
            ),
        },
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

/// How many times [`retry_transaction`] runs a transaction at most.
pub const TRANSACTION_ATTEMPTS: u32 = 5;

/// True when `err` means the transaction lost a conflict with another one and would succeed if
/// run again: PostgreSQL's serialization failure (40001) or deadlock (40P01), SQLite's busy or
/// locked file (the busy timeout ran out).
pub fn is_retryable(err: &sqlx::Error) -> bool {
    let Some(err) = err.as_database_error() else {
        return false;
    };
    let code = err.code().unwrap_or_default();
    if err.try_downcast_ref::<SqliteError>().is_some() {
        // An extended result code, whose low byte is the primary one: SQLITE_BUSY (5) or
        // SQLITE_LOCKED (6), or one of their variants (BUSY_SNAPSHOT, LOCKED_SHAREDCACHE...).
        let primary = code.parse::<i32>().unwrap_or_default() & 0xff;
        matches!(primary, 5 | 6)
    } else {
        matches!(code.as_ref(), "40001" | "40P01")
    }
}

/// Runs `transaction` until it succeeds, fails for a reason other than a conflict
/// ([`is_retryable`], looked up in the error's source chain: a service's error enum must
/// keep the `sqlx::Error` as its source, as `#[from]` does, not `#[error(transparent)]`, whose
/// `source()` skips it), or has run [`TRANSACTION_ATTEMPTS`] times. Between attempts it
/// waits a random pause below 10 ms, 20 ms, 40 ms..., so that the transactions that collided do
/// not collide again.
///
/// Each call of `transaction` must begin its own transaction: the failed one was rolled back.
///
/// Written out rather than taken from a retry crate: it is one loop, and the retry policy
/// (which errors, how many times) is the part worth reading here.
pub async fn retry_transaction<T, E, F, Fut>(mut transaction: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let mut attempt = 1;
    let mut pause = Duration::from_millis(10);
    loop {
        let err = match transaction().await {
            Err(err) if attempt < TRANSACTION_ATTEMPTS => err,
            outcome => return outcome,
        };
        let Some(conflict) = conflict_in(&err) else {
            return Err(err);
        };
        tracing::info!(
            attempt,
            error.message = %conflict,
            "transaction conflicted, running it again"
        );
        // Drawn in a statement of its own: the thread's generator must not live across `await`.
        let jittered = rand::rng().random_range(Duration::ZERO..=pause);
        tokio::time::sleep(jittered).await;
        attempt += 1;
        pause *= 2;
    }
}

/// The database error in `err`'s source chain that [`is_retryable`] accepts, if any.
fn conflict_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a sqlx::Error> {
    std::iter::successors(Some(err), |err| err.source())
        .filter_map(|err| err.downcast_ref::<sqlx::Error>())
        .find(|err| is_retryable(err))
}

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

    /// A PostgreSQL error with SQLSTATE `.0`, as the driver reports one.
    #[derive(Debug, thiserror::Error)]
    #[error("sqlstate {0}")]
    struct Sqlstate(&'static str);

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// A service's error wrapping the database's, as each service's `ApiError` does.
    #[derive(Debug, thiserror::Error)]
    #[error("service error")]
    struct ServiceError(#[from] sqlx::Error);

    fn postgres(code: &'static str) -> ServiceError {
        sqlx::Error::Database(Box::new(Sqlstate(code))).into()
    }

    #[tokio::test]
    async fn a_deadlocked_transaction_runs_again_until_it_succeeds() {
        let mut attempts = 0;
        let outcome = retry_transaction(|| {
            attempts += 1;
            let attempt = attempts;
            async move {
                match attempt {
                    1 => Err(postgres("40P01")),
                    2 => Err(postgres("40001")),
                    _ => Ok(attempt),
                }
            }
        })
        .await;
        assert_eq!(outcome.unwrap(), 3);
    }

    #[tokio::test]
    async fn other_errors_run_once_and_conflicts_only_a_few_times() {
        let mut attempts = 0;
        let duplicate = retry_transaction(|| {
            attempts += 1;
            async { Err::<(), _>(postgres("23505")) }
        })
        .await;
        assert!(duplicate.is_err());
        assert_eq!(attempts, 1);

        attempts = 0;
        let deadlocked = retry_transaction(|| {
            attempts += 1;
            async { Err::<(), _>(postgres("40P01")) }
        })
        .await;
        assert!(deadlocked.is_err());
        assert_eq!(attempts, TRANSACTION_ATTEMPTS);
    }

    #[tokio::test]
    async fn a_busy_sqlite_file_is_retryable_and_a_broken_constraint_is_not() {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let file = std::env::temp_dir().join(format!(
            "ordertrail_busy_{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let mut holder = sqlx::AnyConnection::connect(&url).await.unwrap();
        let mut writer = sqlx::AnyConnection::connect(&url).await.unwrap();
        let insert = "INSERT INTO t (id) VALUES (1)";
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .execute(&mut holder)
            .await
            .unwrap();
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut writer)
            .await
            .unwrap();

        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .unwrap();
        let busy = sqlx::query(insert).execute(&mut writer).await.unwrap_err();
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
        sqlx::query(insert).execute(&mut writer).await.unwrap();
        let duplicate = sqlx::query(insert).execute(&mut writer).await.unwrap_err();

        assert!(is_retryable(&busy), "{busy}");
        assert!(!is_retryable(&duplicate), "{duplicate}");
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn the_postgresql_pool_is_sized_by_its_variable_within_bounds() {
        let size = |value| pool_size(DbSystem::Postgresql, value);
        assert_eq!(size(None), (DEFAULT_MAX_CONNECTIONS, None));
        assert_eq!(size(Some("  ")), (DEFAULT_MAX_CONNECTIONS, None));
        assert_eq!(size(Some("4")), (4, None));
        assert_eq!(size(Some(" 1 ")), (1, None));
        assert_eq!(size(Some("1000")), (1000, None));
        for bad in ["0", "1001", "-3", "ten", "2.5"] {
            let (used, warning) = size(Some(bad));
            assert_eq!(used, DEFAULT_MAX_CONNECTIONS, "{bad}");
            let warning = warning.unwrap_or_else(|| panic!("no warning for {bad}"));
            assert!(warning.contains(MAX_CONNECTIONS_VARIABLE), "{warning}");
            assert!(warning.contains(bad), "{warning}");
        }
        assert_eq!(
            pool_options(DbSystem::Postgresql, 4).get_max_connections(),
            4
        );
    }

    #[test]
    fn sqlite_keeps_one_connection_whatever_the_variable_says() {
        assert_eq!(pool_size(DbSystem::Sqlite, None), (1, None));
        let (size, warning) = pool_size(DbSystem::Sqlite, Some("20"));
        assert_eq!(size, 1);
        assert!(warning.unwrap().contains("SQLite"));
    }

    #[test]
    fn stored_timestamps_sort_as_text_in_time_order() {
        let whole = time::macros::datetime!(2026-11-22 05:00:00 UTC);
        let half = time::macros::datetime!(2026-11-22 05:00:00.5 UTC);
        assert_eq!(super::timestamp(whole), "2026-11-22T05:00:00.000000Z");
        assert!(super::timestamp(whole) < super::timestamp(half));
    }
}

//! Fresh databases for tests: a migrated SQLite file each, and fresh PostgreSQL databases on
//! the server that `ORDERTRAIL_TEST_POSTGRES_URL` names.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ordertrail_shared::db::Database;
use sqlx::migrate::Migrator;
use sqlx::{Connection, Executor};

/// The variable naming a PostgreSQL server to run the tests against as well; the PostgreSQL
/// side of a test is skipped when it is unset.
pub const POSTGRES_URL_VAR: &str = "ORDERTRAIL_TEST_POSTGRES_URL";

/// A fresh, migrated SQLite database, and a fresh PostgreSQL one when
/// `ORDERTRAIL_TEST_POSTGRES_URL` is set (a new database is created on that server for each
/// call, so tests never see each other's rows).
pub async fn databases(migrations: &Migrator) -> Vec<Database> {
    let sqlite = std::env::temp_dir().join(format!("ordertrail_test_{}.db", unique()));
    let mut all = vec![
        Database::connect(
            &format!("sqlite://{}?mode=rwc", sqlite.display()),
            migrations,
        )
        .await
        .expect("sqlite"),
    ];
    if let Ok(server) = std::env::var(POSTGRES_URL_VAR) {
        let created = PostgresDatabases::create(&server, &["store"]).await;
        let url = &created.urls()["store"];
        all.push(Database::connect(url, migrations).await.expect("postgres"));
        // A `Database` has no place for a guard that drops it, so it outlives the test; CI
        // drops leftovers by their `ordertrail_test_` prefix.
        created.keep();
    }
    all
}

/// One database per role on a server, named `ordertrail_test_…` (CI drops leftovers by that
/// prefix, should a test die before dropping its own), dropped with this value.
pub struct PostgresDatabases {
    server: String,
    names: Vec<(&'static str, String)>,
}

impl PostgresDatabases {
    /// Creates a database for each of `roles` on `server`; panics when it cannot.
    pub async fn create(server: &str, roles: &[&'static str]) -> Self {
        let unique = unique();
        let names: Vec<_> = roles
            .iter()
            .map(|&role| (role, format!("ordertrail_test_{unique}_{role}")))
            .collect();
        sqlx::any::install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(server)
            .await
            .unwrap_or_else(|err| panic!("cannot connect to {POSTGRES_URL_VAR}: {err}"));
        for (_, name) in &names {
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap_or_else(|err| panic!("cannot create database {name}: {err}"));
        }
        let _ = admin.close().await;
        Self {
            server: server.to_owned(),
            names,
        }
    }

    /// The URL of each role's database.
    pub fn urls(&self) -> HashMap<&'static str, String> {
        self.names
            .iter()
            .map(|(role, name)| (*role, database_url(&self.server, name)))
            .collect()
    }

    /// Leaves the databases on the server when this value is dropped.
    pub fn keep(mut self) {
        self.names.clear();
    }
}

impl Drop for PostgresDatabases {
    /// Drops the databases, closing whatever connections the services left (they were killed a
    /// moment ago). Done on a thread of its own: a drop cannot await.
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        let server = self.server.clone();
        let names: Vec<String> = self.names.iter().map(|(_, name)| name.clone()).collect();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut admin = sqlx::AnyConnection::connect(&server).await?;
                for name in names {
                    admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await?;
                }
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("test databases not dropped (CI drops them by name): {err}");
        }
    }
}

/// Unique in this machine's tests: the process, the time and a counter.
fn unique() -> String {
    static CREATED: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{}_{nanos}_{}",
        std::process::id(),
        CREATED.fetch_add(1, Ordering::Relaxed)
    )
}

/// `server` (a URL, perhaps with a database and a query) with its database replaced by `name`.
fn database_url(server: &str, name: &str) -> String {
    let (base, query) = server
        .split_once('?')
        .map_or((server, None), |(base, query)| (base, Some(query)));
    let base = match base.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, _)) => format!("{scheme}://{authority}"),
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn a_database_name_replaces_the_servers_and_keeps_the_query() {
        assert_eq!(
            database_url("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(database_url("postgres://u@h", "x"), "postgres://u@h/x");
    }
}

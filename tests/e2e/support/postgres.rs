//! Fresh PostgreSQL databases for one stack, dropped with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor};

/// The variable naming the PostgreSQL server to run the PostgreSQL tests against; they are
/// skipped when it is unset.
pub const POSTGRES_URL_VAR: &str = "ORDERTRAIL_TEST_POSTGRES_URL";

/// One database per role on a server, named `ordertrail_test_…` (CI drops leftovers by that
/// prefix, should a test die before dropping its own).
pub struct PostgresDatabases {
    server: String,
    names: Vec<(&'static str, String)>,
}

impl PostgresDatabases {
    /// Creates a database for each of `roles` on `server`.
    pub async fn create(server: &str, roles: &[&'static str]) -> Self {
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let unique = format!(
            "{}_{nanos}_{}",
            std::process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        );
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
}

impl Drop for PostgresDatabases {
    /// Drops the databases, closing whatever connections the services left (they were killed a
    /// moment ago). Done on a thread of its own: a drop cannot await.
    fn drop(&mut self) {
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

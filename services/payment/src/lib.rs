//! The payment service: charges a card for an order, once, and refunds it.
//!
//! Cards follow Stripe's well-known test numbers: 4000000000000002 is declined,
//! 4000000000009995 is declined for insufficient funds, any other valid number is captured.
//! The card number lives only in the memory of the charge handler: the database keeps the
//! brand and last four digits, and no log line or span ever holds more.

pub mod config;
mod error;
mod metrics;
mod routes;
mod store;

use axum::Router;
use ordertrail_shared::db::Database;
use ordertrail_shared::faults::Faults;
use ordertrail_shared::http::{Service, internal_app};

pub use config::Config;
pub use error::ApiError;
pub use store::Store;

/// The migrations that create the payments database.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!();

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The payments database.
    pub store: Store,
}

/// The service's routes, traced, plus untraced health checks.
pub fn router(state: AppState) -> Router {
    let db = state.store.database().clone();
    internal_app(routes::routes().with_state(state), &db)
}

/// Connects to the database, migrates it and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let database = Database::connect(&config.database_url, &MIGRATIONS)
        .await?
        .with_faults(Faults::new("payment", config.faults));
    let service = Service::bind(config.listen_addr).await?;
    let state = AppState {
        store: Store::new(database),
    };
    service.serve(router(state), shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests;

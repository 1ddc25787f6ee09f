//! The inventory service: the product catalogue, stock, and reservations that hold stock for
//! an order until the checkout saga commits or releases them.
//!
//! It calls no other service. Every reservation operation is idempotent per order id, so the
//! order service may retry any of them.

pub mod config;
mod error;
mod metrics;
mod routes;
mod store;

use axum::Router;
use ordertrail_shared::db::Database;
use ordertrail_shared::faults::Faults;
use ordertrail_shared::http::{Service, internal_app};

use crate::metrics::StockGauge;

pub use config::Config;
pub use error::ApiError;
pub use routes::Restock;
pub use store::{MAX_STOCK, Store};

/// The migrations that create and seed the inventory database.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!();

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The inventory database.
    pub store: Store,
}

/// The service's routes, traced, plus untraced health checks.
pub fn router(state: AppState) -> Router {
    let db = state.store.database().clone();
    internal_app(routes::routes().with_state(state), &db)
}

/// Connects to the database, migrates it, keeps the stock gauge's view of the stock fresh in
/// the background, and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let database = Database::connect(&config.database_url, &MIGRATIONS)
        .await?
        .with_faults(Faults::new("inventory", config.faults));
    let service = Service::bind(config.listen_addr).await?;
    let state = AppState {
        store: Store::new(database),
    };
    let stock = StockGauge::global(state.store.clone());
    service.spawn(move |stop| stock.keep_fresh(stop));
    service.serve(router(state), shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests;

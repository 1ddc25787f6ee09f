//! The order service: owns orders and runs the checkout saga.
//!
//! `POST /orders` creates a pending order and orchestrates inventory reserve → payment charge
//! → inventory commit, compensating in reverse when a step fails, so that every order ends
//! `confirmed` or `failed`. An `Idempotency-Key` makes a retried request replay the first
//! answer instead of ordering twice.
//!
//! The modules depend one way: `routes` (HTTP, with `error`) and `recovery` (the sweep) on
//! `saga` and `idempotency`; those on `store`; everything on `domain`, which depends on nothing
//! here.

mod claim;
pub mod config;
mod domain;
mod error;
mod idempotency;
mod metrics;
mod recovery;
mod routes;
mod saga;
mod store;

use axum::Router;
use ordertrail_shared::db::Database;
use ordertrail_shared::faults::Faults;
use ordertrail_shared::http::{Service, ServiceClient, internal_app};

pub use config::Config;
pub use error::ApiError;
pub use recovery::Recovery;
pub use saga::Saga;
pub use store::Store;

/// The migrations that create the orders database.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!();

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The orders database.
    pub store: Store,
    /// The checkout saga and its upstream clients.
    pub saga: Saga,
}

/// The service's routes, traced, plus untraced health checks.
pub fn router(state: AppState) -> Router {
    let db = state.store.database().clone();
    internal_app(routes::routes().with_state(state), &db)
}

/// Connects to the database, migrates it, keeps finishing stalled sagas in the background,
/// and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.check()?;
    let database = Database::connect(&config.database_url, &MIGRATIONS)
        .await?
        .with_faults(Faults::new("order", config.faults));
    // A claim lasts as long as an order may stand still before the sweep takes it: a worker
    // that dies leaves its orders to the sweep one lease later.
    let store = Store::new(database).with_lease(config.stalled_after);
    let saga = Saga::new(
        store.clone(),
        ServiceClient::new(&config.inventory_url)?,
        ServiceClient::new(&config.payment_url)?,
    );
    let service = Service::bind(config.listen_addr).await?;
    let sweep = Recovery::new(saga.clone());
    service
        .spawn(move |stop| sweep.keep_recovering(config.sweep_every, config.stalled_after, stop));
    service
        .serve(router(AppState { store, saga }), shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;

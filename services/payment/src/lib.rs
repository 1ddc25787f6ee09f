//! The payment service: charges a card for an order, once, and refunds it.
//!
//! Cards follow Stripe's well-known test numbers: 4000000000000002 is declined,
//! 4000000000009995 is declined for insufficient funds, any other valid number is captured.
//! The card number lives only in the memory of the charge handler: the database keeps the
//! brand and last four digits, and no log line or span ever holds more.

pub mod config;
mod error;
mod routes;
mod store;

use axum::Router;
use ordertrail_shared::db::Database;
use ordertrail_shared::http::{health_routes, serve, traced};

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
    traced(routes::routes())
        .with_state(state)
        .merge(health_routes(Some(db)))
}

/// Connects to the database, migrates it and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let database = Database::connect(&config.database_url, &MIGRATIONS).await?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr).await?;
    tracing::info!(server.address = %listener.local_addr()?, "payment listening");
    let app = router(AppState {
        store: Store::new(database),
    });
    serve(listener, app, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests;

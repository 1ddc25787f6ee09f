//! The gateway: the only public service. It validates requests, starts the trace (or
//! continues the caller's), puts the customer id in baggage and forwards to order and
//! inventory. It owns no data.

pub mod config;
mod routes;

use std::time::Duration;

use axum::Router;
use ordertrail_shared::http::{Door, Limits, Service, ServiceClient, app};

pub use config::Config;

/// How long the gateway waits for a checkout. The saga itself runs to its end whatever the
/// gateway does; a client that timed out retries with its `Idempotency-Key`.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Client of the order service.
    pub order: ServiceClient,
    /// Client of the inventory service.
    pub inventory: ServiceClient,
}

impl AppState {
    /// Clients for the upstreams named in `config`.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            order: ServiceClient::with_timeout(&config.order_url, CHECKOUT_TIMEOUT)?,
            inventory: ServiceClient::new(&config.inventory_url)?,
        })
    }
}

/// The public API, traced (the caller's trace is continued, its baggage is not), plus
/// untraced health checks.
pub fn router(state: AppState) -> Router {
    app(
        routes::routes().with_state(state),
        Door::Public,
        None,
        &Limits::default(),
    )
}

/// Serves until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = AppState::new(&config)?;
    let service = Service::bind(config.listen_addr).await?;
    service.serve(router(state), shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests;

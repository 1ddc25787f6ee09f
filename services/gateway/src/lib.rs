//! The gateway: the only public service. It validates requests, starts the trace (or
//! continues the caller's), puts the customer id in baggage and forwards to order and
//! inventory. It owns no data.

pub mod config;
mod operator;
mod routes;

use std::time::Duration;

use axum::Router;
use ordertrail_shared::faults::{Faults, OperatorToken};
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
    /// Client of the payment service, for the operator's fault rules only.
    pub payment: ServiceClient,
    /// The gateway's own fault rules.
    pub faults: Faults,
    /// The operator's token; without one there are no `/internal/faults` routes.
    pub operator: Option<OperatorToken>,
}

impl AppState {
    /// Clients for the upstreams named in `config`, its faults and operator token.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            order: ServiceClient::with_timeout(&config.order_url, CHECKOUT_TIMEOUT)?,
            inventory: ServiceClient::new(&config.inventory_url)?,
            payment: ServiceClient::new(&config.payment_url)?,
            faults: Faults::new("gateway", config.faults.clone()),
            operator: config.operator_token.as_ref().and_then(OperatorToken::new),
        })
    }
}

/// The public API, traced (the caller's trace is continued, its baggage is not), the
/// operator's `/internal/faults` routes when there is an operator token, and untraced health
/// checks.
pub fn router(state: AppState) -> Router {
    let faults = state.faults.clone();
    let mut routes = routes::routes();
    if let Some(token) = state.operator.clone() {
        routes = routes.merge(operator::routes(token, faults.clone()));
    }
    app(
        routes.with_state(state),
        Door::Public,
        None,
        &Limits::default(),
        &faults,
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

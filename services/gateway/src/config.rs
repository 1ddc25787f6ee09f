//! The gateway's configuration, read once from the environment.

use std::net::SocketAddr;

use ordertrail_shared::faults::Rules;
use secrecy::SecretString;

/// Configuration of the gateway.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on (`LISTEN_ADDR`).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,
    /// Base URL of the order service (`ORDER_URL`).
    #[arg(long, env = "ORDER_URL", default_value = "http://127.0.0.1:8081")]
    pub order_url: String,
    /// Base URL of the inventory service (`INVENTORY_URL`).
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:8083")]
    pub inventory_url: String,
    /// Base URL of the payment service (`PAYMENT_URL`), reached only to forward an operator's
    /// `/internal/faults/payment`.
    #[arg(long, env = "PAYMENT_URL", default_value = "http://127.0.0.1:8082")]
    pub payment_url: String,
    /// The operator's token (`OPERATOR_TOKEN`). When set, `/internal/faults` (and
    /// `/internal/faults/{service}`, forwarded) are served to requests that carry
    /// `Authorization: Bearer <token>`; when unset or empty, they do not exist.
    #[arg(long, env = "OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<SecretString>,
    /// Faults to inject, as a JSON list of rules (`ORDERTRAIL_FAULTS`; none by default). See
    /// the README's "Practise with faults".
    #[arg(long, env = "ORDERTRAIL_FAULTS", default_value = "[]")]
    pub faults: Rules,
}

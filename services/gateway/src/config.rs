//! The gateway's configuration, read once from the environment.

use std::net::SocketAddr;

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
}

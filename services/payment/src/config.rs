//! The payment service's configuration, read once from the environment.

use std::net::SocketAddr;

/// Configuration of the payment service.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on (`LISTEN_ADDR`).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8082")]
    pub listen_addr: SocketAddr,
    /// `sqlite://…` or `postgres://…` (`DATABASE_URL`).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://var/payments.db?mode=rwc"
    )]
    pub database_url: String,
}

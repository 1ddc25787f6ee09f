//! The order service's configuration, read once from the environment.

use std::net::SocketAddr;
use std::time::Duration;

/// Configuration of the order service.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on (`LISTEN_ADDR`).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8081")]
    pub listen_addr: SocketAddr,
    /// `sqlite://…` or `postgres://…` (`DATABASE_URL`).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://var/orders.db?mode=rwc"
    )]
    pub database_url: String,
    /// Base URL of the inventory service (`INVENTORY_URL`).
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:8083")]
    pub inventory_url: String,
    /// Base URL of the payment service (`PAYMENT_URL`).
    #[arg(long, env = "PAYMENT_URL", default_value = "http://127.0.0.1:8082")]
    pub payment_url: String,
    /// How often the recovery sweep looks for stalled orders (`RECOVERY_SWEEP_EVERY`, e.g.
    /// `30s`).
    #[arg(long, env = "RECOVERY_SWEEP_EVERY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep_every: Duration,
    /// How long an open order must stand still before the sweep finishes it
    /// (`RECOVERY_STALLED_AFTER`, e.g. `2m`). Keep it well beyond the longest checkout (every
    /// step's attempts timing out), or the sweep races a running saga.
    #[arg(long, env = "RECOVERY_STALLED_AFTER", default_value = "2m", value_parser = humantime::parse_duration)]
    pub stalled_after: Duration,
}

//! The payment service's configuration, read once from the environment.

use std::net::SocketAddr;

use ordertrail_shared::faults::Rules;

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
    /// Faults to inject, as a JSON list of rules (`ORDERTRAIL_FAULTS`; none by default); they
    /// can be changed at run time through `/internal/faults`. See the README's "Practise with
    /// faults".
    #[arg(long, env = "ORDERTRAIL_FAULTS", default_value = "[]")]
    pub faults: Rules,
}

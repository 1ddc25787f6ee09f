//! The order service's configuration, read once from the environment.

use std::net::SocketAddr;

use ordertrail_shared::faults::Rules;
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
    #[arg(long, env = "RECOVERY_SWEEP_EVERY", default_value = "30s", value_parser = positive_duration)]
    pub sweep_every: Duration,
    /// How long an open order must stand still before the sweep finishes it, and how long a
    /// claim on an order lasts unless its holder renews it (`RECOVERY_STALLED_AFTER`, e.g.
    /// `2m`). A running checkout renews its claim every third of this, so the sweep never takes
    /// it however long it runs; the orders of a replica that died wait this long for the sweep.
    #[arg(long, env = "RECOVERY_STALLED_AFTER", default_value = "2m", value_parser = positive_duration)]
    pub stalled_after: Duration,
    /// Faults to inject, as a JSON list of rules (`ORDERTRAIL_FAULTS`; none by default); they
    /// can be changed at run time through `/internal/faults`. See the README's "Practise with
    /// faults".
    #[arg(long, env = "ORDERTRAIL_FAULTS", default_value = "[]")]
    pub faults: Rules,
    /// Whether this process is one of several replicas of the order service
    /// (`ORDERTRAIL_REPLICATED`, `true` or `false`, default `false`). Replicas must share one
    /// PostgreSQL database: a replicated service refuses to start on anything else, SQLite
    /// above all, whose file one process owns (each replica would keep orders and idempotency
    /// keys of its own).
    #[arg(long, env = "ORDERTRAIL_REPLICATED", default_value_t = false, action = clap::ArgAction::Set)]
    pub replicated: bool,
}

impl Config {
    /// Refuses a replicated service on anything but PostgreSQL (see [`Config::replicated`]).
    pub fn check(&self) -> anyhow::Result<()> {
        if self.replicated && !is_postgres(&self.database_url) {
            anyhow::bail!(
                "ORDERTRAIL_REPLICATED=true needs a PostgreSQL DATABASE_URL shared by every \
                 replica: SQLite is for one process only, and replicas on SQLite files of their \
                 own would each keep orders and idempotency keys apart"
            );
        }
        Ok(())
    }
}

/// True when `url`'s scheme (compared as URL schemes are, ignoring case) is PostgreSQL's.
fn is_postgres(url: &str) -> bool {
    url.split_once(':').is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
    })
}

/// A humantime duration (`200ms`, `30s`, `2m`) that is not zero: a sweep every 0 s would spin.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be more than zero".into()),
        Ok(duration) => Ok(duration),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_timings_are_humantime_and_never_zero() {
        assert_eq!(positive_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(positive_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(positive_duration("0s").is_err());
        assert!(positive_duration("soon").is_err());
    }

    fn config(database_url: &str, replicated: bool) -> Config {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        let mut config = Cli::parse_from(["order"]).config;
        config.database_url = database_url.to_owned();
        config.replicated = replicated;
        config
    }

    #[test]
    fn a_replicated_order_service_refuses_sqlite_and_takes_postgresql() {
        let refused = config("sqlite://var/orders.db?mode=rwc", true).check();
        assert!(
            refused.unwrap_err().to_string().contains("PostgreSQL"),
            "replicas on SQLite are refused, saying what they need"
        );
        assert!(
            config("sqlite://var/orders.db?mode=rwc", false)
                .check()
                .is_ok()
        );
        assert!(config("postgres://orders@db/orders", true).check().is_ok());
        assert!(
            config("postgresql://orders@db/orders", true)
                .check()
                .is_ok()
        );
        for not_shared in [
            "SQLite://var/orders.db",
            "sqlite:orders.db",
            "orders.db",
            "",
        ] {
            assert!(
                config(not_shared, true).check().is_err(),
                "{not_shared:?} is not PostgreSQL"
            );
        }
    }
}

//! `ordertrail`: one binary, four roles.
//!
//! `ordertrail serve <role>` runs one service, configured from the environment;
//! `ordertrail up` runs all four as child processes with SQLite under `./var` and a trace
//! console; `ordertrail healthcheck <url>` is the container health probe; `ordertrail load`
//! drives the gateway and reports what it got; `ordertrail forget --customer <id>` deletes a
//! customer's log and audit lines from Elasticsearch.

mod console;
mod load;
mod up;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ordertrail_shared::shutdown;
use ordertrail_shared::telemetry::{self, TelemetryConfig};

#[derive(Debug, Parser)]
#[command(version, about = "The ordertrail order-processing suite")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one service, configured from the environment.
    Serve {
        #[command(subcommand)]
        role: Role,
    },
    /// Runs all four services on this machine (gateway on 8080, the others on 8081-8083
    /// unless told otherwise), with a trace console unless OTEL_EXPORTER_OTLP_ENDPOINT is set.
    /// Ctrl-C stops them; a service that cannot start stops them all, with its reason.
    Up(up::Args),
    /// Exits 0 when `url` answers 2xx within two seconds, 1 otherwise.
    Healthcheck {
        /// For example http://127.0.0.1:8080/health/ready.
        url: String,
    },
    /// Drives the gateway with a mix of scenarios, checks every answer and reports latency
    /// per scenario and status with trace ids. Exits 1 when any answer was unexpected.
    Load(load::Args),
    /// Deletes a customer's log and audit lines from Elasticsearch (every ordertrail data
    /// stream) and reports how many went and what it cannot reach. Needs --user (or
    /// ELASTICSEARCH_USER), ELASTICSEARCH_PASSWORD and --yes.
    Forget(ordertrail::forget::Args),
}

#[derive(Debug, Subcommand)]
enum Role {
    /// The public edge, on 8080.
    Gateway(ordertrail_gateway::Config),
    /// Orders and the checkout saga, on 8081.
    Order(ordertrail_order::Config),
    /// Card payments, on 8082.
    Payment(ordertrail_payment::Config),
    /// Catalogue and stock, on 8083.
    Inventory(ordertrail_inventory::Config),
}

impl Role {
    fn name(&self) -> &'static str {
        match self {
            Self::Gateway(_) => "gateway",
            Self::Order(_) => "order",
            Self::Payment(_) => "payment",
            Self::Inventory(_) => "inventory",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ordertrail: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { role } => serve(role).await,
            Command::Up(args) => up::run(args).await,
            Command::Healthcheck { url } => healthcheck(&url).await,
            Command::Load(args) => load::run(args).await,
            Command::Forget(args) => ordertrail::forget::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ordertrail: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(role: Role) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&TelemetryConfig::from_env(role.name())?)?;
    let result = match role {
        Role::Gateway(config) => ordertrail_gateway::run(config, shutdown::signal()).await,
        Role::Order(config) => ordertrail_order::run(config, shutdown::signal()).await,
        Role::Payment(config) => ordertrail_payment::run(config, shutdown::signal()).await,
        Role::Inventory(config) => ordertrail_inventory::run(config, shutdown::signal()).await,
    };
    if let Err(err) = &result {
        tracing::error!(error.message = %format!("{err:#}"), "service stopped on an error");
    }
    result
}

async fn healthcheck(url: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?
        .get(url)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}

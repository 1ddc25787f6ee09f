//! `ordertrail forget --customer <id>`: the right to be forgotten, for what the suite stores in
//! Elasticsearch.
//!
//! It deletes every document whose `customer.id` is the customer's from each ordertrail data
//! stream ([`DATA_STREAMS`]: the services' log lines and the audit events), one
//! delete-by-query per stream (`conflicts=proceed`, so that a document changed meanwhile does
//! not stop the rest; `refresh`, so that a search right after sees them gone), and reports how
//! many documents went from each. What it cannot reach is said in every report
//! ([`NOT_REACHED`]).
//!
//! It refuses to run without explicit credentials (`--user` or `ELASTICSEARCH_USER`, and
//! `ELASTICSEARCH_PASSWORD`, which is read from the environment only, so that it never shows in
//! a process list or a shell history; neither has a default) and without `--yes`. The customer
//! id follows the API's rules ([`CustomerId`]), so it is a plain term, never a query.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ordertrail_shared::api::CustomerId;
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

/// The data streams that hold the services' lines: Logstash's two targets
/// (`deploy/logstash/pipeline/ordertrail.conf`), created from the index templates in
/// `deploy/elasticsearch/`.
pub const DATA_STREAMS: [&str; 2] = ["ordertrail-logs", "ordertrail-audit"];

/// What a deletion in Elasticsearch cannot reach; every report ends with it.
pub const NOT_REACHED: &str = "\
not reached by this command:
  - traces: spans carry customer.id in Jaeger's store, which is bounded (compose keeps the last
    traces in memory; a stored trace ages out with the store's retention); they are not deleted
    here
  - orders and payments: business records, kept in the services' databases with the customer
    id; they hold no card data (a card's brand and last four digits only)
  - lines still on their way (the containers' log files, Filebeat, Logstash) arrive after this
    run: run it again once they are shipped";

/// `ordertrail forget`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The customer whose log and audit lines are deleted: 1 to 64 letters, digits or -_.:@,
    /// as the API takes it.
    #[arg(long, value_parser = parse_customer)]
    pub customer: CustomerId,
    /// Elasticsearch (http only).
    #[arg(
        long,
        env = "ELASTICSEARCH_URL",
        default_value = "http://localhost:9200"
    )]
    pub elasticsearch_url: Url,
    /// The Elasticsearch user, allowed to delete from the ordertrail data streams (no
    /// default). Its password is read from ELASTICSEARCH_PASSWORD.
    #[arg(long, env = "ELASTICSEARCH_USER")]
    pub user: Option<String>,
    /// Confirms the deletion, which cannot be undone.
    #[arg(long)]
    pub yes: bool,
    /// How long each data stream's deletion may take.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn parse_customer(id: &str) -> Result<CustomerId, String> {
    CustomerId::try_from(id.to_owned()).map_err(|err| err.to_string())
}

/// Runs `ordertrail forget` with the password from `ELASTICSEARCH_PASSWORD` and prints the
/// report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let password = std::env::var("ELASTICSEARCH_PASSWORD").ok();
    let target = Elasticsearch::from_args(&args, password)?;
    let report = forget(&target, &args.customer).await?;
    println!("{report}");
    report.ensure_complete()
}

/// An Elasticsearch to delete from, with the credentials to do it.
pub struct Elasticsearch {
    http: reqwest::Client,
    url: Url,
    user: String,
    password: SecretString,
}

impl Elasticsearch {
    /// Elasticsearch at `url` as `user`; requests time out after `timeout`.
    pub fn new(
        url: Url,
        user: String,
        password: SecretString,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.scheme() == "http",
            "{url}: only http:// URLs are supported"
        );
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            url,
            user,
            password,
        })
    }

    /// What `args` and the `password` from the environment allow, or the refusal: no user,
    /// no password, or no `--yes`.
    pub fn from_args(args: &Args, password: Option<String>) -> anyhow::Result<Self> {
        let customer = args.customer.as_str();
        let Some(user) = args.user.clone().filter(|user| !user.is_empty()) else {
            bail!(
                "refusing to run without credentials: give --user (or ELASTICSEARCH_USER) and \
                 ELASTICSEARCH_PASSWORD, a user allowed to delete from {}",
                DATA_STREAMS.join(", ")
            );
        };
        let Some(password) = password.filter(|password| !password.is_empty()) else {
            bail!("refusing to run without credentials: ELASTICSEARCH_PASSWORD is not set");
        };
        if !args.yes {
            bail!(
                "refusing to run without --yes: this deletes every log and audit line of \
                 customer {customer} from {} at {}, for good",
                DATA_STREAMS.join(", "),
                args.elasticsearch_url
            );
        }
        Self::new(
            args.elasticsearch_url.clone(),
            user,
            password.into(),
            args.timeout,
        )
    }

    /// Deletes the documents of `customer` from `stream`.
    async fn delete_by_query(
        &self,
        stream: &str,
        customer: &CustomerId,
    ) -> anyhow::Result<Outcome> {
        let mut url = self.url.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{}: not a base URL", self.url))?
            .pop_if_empty()
            .extend([stream, "_delete_by_query"]);
        url.query_pairs_mut()
            .append_pair("conflicts", "proceed")
            .append_pair("refresh", "true");
        let response = self
            .http
            .post(url)
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .json(&json!({"query": {"term": {"customer.id": customer.as_str()}}}))
            .send()
            .await
            .with_context(|| format!("{stream}: cannot reach Elasticsearch at {}", self.url))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let reason = || {
            answer["error"]["reason"]
                .as_str()
                .or(answer["error"].as_str())
                .unwrap_or("no reason given")
                .to_owned()
        };
        match status {
            status if status.is_success() => {}
            StatusCode::NOT_FOUND if answer["error"]["type"] == "index_not_found_exception" => {
                return Ok(Outcome::Absent);
            }
            StatusCode::UNAUTHORIZED => bail!(
                "{stream}: Elasticsearch refused the credentials of user {} (401): {}",
                self.user,
                reason()
            ),
            StatusCode::FORBIDDEN => bail!(
                "{stream}: user {} may not delete from it (403): {}",
                self.user,
                reason()
            ),
            status => bail!("{stream}: Elasticsearch answered {status}: {}", reason()),
        }
        let count = |name: &str| {
            answer[name]
                .as_u64()
                .with_context(|| format!("{stream}: no {name} in Elasticsearch's answer: {answer}"))
        };
        let failures = answer["failures"].as_array().map_or(0, Vec::len);
        Ok(Outcome::Deleted {
            deleted: count("deleted")?,
            matched: count("total")?,
            failures,
            timed_out: answer["timed_out"] == true,
        })
    }
}

/// What happened in one data stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The query ran.
    Deleted {
        /// Documents deleted.
        deleted: u64,
        /// Documents that matched; more than `deleted` when some changed meanwhile.
        matched: u64,
        /// Documents Elasticsearch could not delete (search or bulk failures).
        failures: usize,
        /// Whether Elasticsearch gave up before the end.
        timed_out: bool,
    },
    /// The data stream does not exist (nothing was ever shipped to it).
    Absent,
}

impl Outcome {
    /// Whether every matching document went.
    fn complete(self) -> bool {
        match self {
            Self::Deleted {
                deleted,
                matched,
                failures,
                timed_out,
            } => deleted == matched && failures == 0 && !timed_out,
            Self::Absent => true,
        }
    }
}

/// What `forget` did, per data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The customer.
    pub customer: String,
    /// Each data stream and its outcome, in [`DATA_STREAMS`] order.
    pub streams: Vec<(&'static str, Outcome)>,
}

impl Report {
    /// Documents deleted in all.
    pub fn deleted(&self) -> u64 {
        self.streams
            .iter()
            .map(|(_, outcome)| match outcome {
                Outcome::Deleted { deleted, .. } => *deleted,
                Outcome::Absent => 0,
            })
            .sum()
    }

    /// An error unless every matching document went.
    pub fn ensure_complete(&self) -> anyhow::Result<()> {
        let incomplete: Vec<&str> = self
            .streams
            .iter()
            .filter(|(_, outcome)| !outcome.complete())
            .map(|(stream, _)| *stream)
            .collect();
        anyhow::ensure!(
            incomplete.is_empty(),
            "documents of customer {} are left in {}: run it again",
            self.customer,
            incomplete.join(", ")
        );
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "customer {}: documents deleted from Elasticsearch",
            self.customer
        )?;
        for (stream, outcome) in &self.streams {
            match outcome {
                Outcome::Deleted {
                    deleted,
                    matched,
                    failures,
                    timed_out,
                } => {
                    write!(f, "  {stream:<18} {deleted:>8}")?;
                    if deleted != matched {
                        write!(f, " of {matched} (the rest changed meanwhile)")?;
                    }
                    if *failures > 0 {
                        write!(f, ", {failures} failures")?;
                    }
                    if *timed_out {
                        write!(f, ", timed out")?;
                    }
                    writeln!(f)?;
                }
                Outcome::Absent => writeln!(f, "  {stream:<18} {:>8} (no such data stream)", 0)?,
            }
        }
        writeln!(f, "  {:<18} {:>8}", "in all", self.deleted())?;
        write!(f, "{NOT_REACHED}")
    }
}

/// Deletes `customer`'s documents from every data stream in [`DATA_STREAMS`], one after the
/// other; stops at the first error (credentials refused, Elasticsearch failing), which names
/// the data stream.
pub async fn forget(target: &Elasticsearch, customer: &CustomerId) -> anyhow::Result<Report> {
    let mut streams = Vec::new();
    for stream in DATA_STREAMS {
        streams.push((stream, target.delete_by_query(stream, customer).await?));
    }
    Ok(Report {
        customer: customer.as_str().to_owned(),
        streams,
    })
}

#[cfg(test)]
mod tests;

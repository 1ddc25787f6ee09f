//! `ordertrail forget --customer <id>`: the right to be forgotten, for what the suite stores in
//! Elasticsearch.
//!
//! It deletes every document whose `customer.id` is the customer's from each ordertrail data
//! stream ([`DATA_STREAMS`]: the services' log lines and the audit events), one
//! delete-by-query per stream (`conflicts=proceed`, so that a document changed meanwhile does
//! not stop the rest; `refresh`, so that a search right after sees them gone), and reports how
//! many documents went from each. What it cannot reach is said in every report
//! ([`NOT_REACHED`]). A data stream whose deletion fails stops the run (a refused login would
//! be refused again), and the report says what went before the failure, the failure, and
//! which data streams were not tried. A backing index with a write block
//! (`index.blocks.write`, which no action of the deployed ILM policy sets) keeps its
//! documents: the report names it and says how to lift the block.
//!
//! It refuses to run without explicit credentials (`--user` or `ELASTICSEARCH_USER`, and
//! `ELASTICSEARCH_PASSWORD`, which is read from the environment only, so that it never shows in
//! a process list or a shell history; neither has a default) and without `--yes`, and refuses
//! an Elasticsearch URL that carries a user or password (it would be shown in messages). The
//! customer id follows the API's rules ([`CustomerId`]), so it is a plain term, never a query.

use std::collections::BTreeMap;
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
    /// Elasticsearch (http only, without a user or password in it).
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
    let report = forget(&target, &args.customer).await;
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
    /// Elasticsearch at `url` as `user`; requests time out after `timeout`. A `url` with a
    /// user or password in it is refused, and never shown.
    pub fn new(
        url: Url,
        user: String,
        password: SecretString,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        ensure_no_userinfo(&url)?;
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

    /// What `args` and the `password` from the environment allow, or the refusal: a URL
    /// with credentials in it, no user, no password, or no `--yes`.
    pub fn from_args(args: &Args, password: Option<String>) -> anyhow::Result<Self> {
        ensure_no_userinfo(&args.elasticsearch_url)?;
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
            _ if answer["error"]["type"] == "cluster_block_exception" => bail!(
                "{stream}: Elasticsearch refused to write to it ({status}): {}",
                reason()
            ),
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
        let failures = answer["failures"].as_array().map(Vec::as_slice);
        // Each failed document names its backing index and the cause; one line per index.
        let unreached = failures
            .unwrap_or_default()
            .iter()
            .map(|failure| {
                let index = failure["index"].as_str().unwrap_or("(no index named)");
                let cause = &failure["cause"];
                let cause = cause["type"].as_str().or(cause["reason"].as_str());
                (
                    index.to_owned(),
                    cause.unwrap_or("no reason given").to_owned(),
                )
            })
            .collect();
        Ok(Outcome::Deleted {
            deleted: count("deleted")?,
            matched: count("total")?,
            failures: failures.map_or(0, <[Value]>::len),
            unreached,
            timed_out: answer["timed_out"] == true,
        })
    }
}

/// Refuses a URL with a user or password in it: reqwest would send them, and every message
/// that names the URL would show them. The refusal shows the URL without them.
fn ensure_no_userinfo(url: &Url) -> anyhow::Result<()> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(());
    }
    let mut shown = url.clone();
    // Only a URL that cannot have a user refuses these, and it has none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    bail!(
        "refusing an Elasticsearch URL with a user or password in it ({shown} with them): give \
         the user with --user (or ELASTICSEARCH_USER) and the password in ELASTICSEARCH_PASSWORD"
    )
}

/// What happened in one data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The query ran.
    Deleted {
        /// Documents deleted.
        deleted: u64,
        /// Documents that matched; more than `deleted` when some changed meanwhile.
        matched: u64,
        /// Documents Elasticsearch could not delete (search or bulk failures).
        failures: usize,
        /// The backing indices of those failures, each with the cause of its first failure
        /// (`cluster_block_exception`: a write block).
        unreached: BTreeMap<String, String>,
        /// Whether Elasticsearch gave up before the end.
        timed_out: bool,
    },
    /// The data stream does not exist (nothing was ever shipped to it).
    Absent,
    /// The deletion failed, for this reason; the data streams after it were not tried.
    Failed(String),
}

impl Outcome {
    /// Whether every matching document went.
    fn complete(&self) -> bool {
        match self {
            Self::Deleted {
                deleted,
                matched,
                failures,
                timed_out,
                ..
            } => deleted == matched && *failures == 0 && !timed_out,
            Self::Absent => true,
            Self::Failed(_) => false,
        }
    }
}

/// What `forget` did, per data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The customer.
    pub customer: String,
    /// Each data stream tried and its outcome, in [`DATA_STREAMS`] order; the run stops after
    /// a [`Outcome::Failed`] one.
    pub streams: Vec<(&'static str, Outcome)>,
}

impl Report {
    /// Documents deleted in all.
    pub fn deleted(&self) -> u64 {
        self.streams
            .iter()
            .map(|(_, outcome)| match outcome {
                Outcome::Deleted { deleted, .. } => *deleted,
                Outcome::Absent | Outcome::Failed(_) => 0,
            })
            .sum()
    }

    /// The data streams the run stopped before.
    pub fn not_tried(&self) -> Vec<&'static str> {
        DATA_STREAMS
            .into_iter()
            .filter(|stream| !self.streams.iter().any(|(tried, _)| tried == stream))
            .collect()
    }

    /// An error unless every matching document went; it names the failure that stopped
    /// the run, if one did.
    pub fn ensure_complete(&self) -> anyhow::Result<()> {
        let mut incomplete: Vec<&str> = self
            .streams
            .iter()
            .filter(|(_, outcome)| !outcome.complete())
            .map(|(stream, _)| *stream)
            .collect();
        incomplete.extend(self.not_tried());
        let failure = self.streams.iter().find_map(|(_, outcome)| match outcome {
            Outcome::Failed(reason) => Some(reason.as_str()),
            _ => None,
        });
        anyhow::ensure!(
            incomplete.is_empty(),
            "documents of customer {} may be left in {}{}: run it again",
            self.customer,
            incomplete.join(", "),
            failure
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
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
                    unreached,
                    timed_out,
                } => {
                    write!(f, "  {stream:<18} {deleted:>8}")?;
                    if deleted != matched {
                        write!(f, " of {matched}")?;
                        if *failures == 0 && !timed_out {
                            write!(f, " (the rest changed meanwhile)")?;
                        }
                    }
                    if *failures > 0 {
                        write!(f, ", {failures} failures")?;
                    }
                    if *timed_out {
                        write!(f, ", timed out")?;
                    }
                    writeln!(f)?;
                    for (index, cause) in unreached {
                        writeln!(f, "    not deleted in {index}: {cause}")?;
                    }
                    if unreached.values().any(|c| c == "cluster_block_exception") {
                        writeln!(
                            f,
                            "    an index with a write block keeps its documents: lift it with \
                             PUT <index>/_settings {{\"index.blocks.write\": false}} (the \
                             manage privilege on it) and run this again"
                        )?;
                    }
                }
                Outcome::Absent => writeln!(f, "  {stream:<18} {:>8} (no such data stream)", 0)?,
                Outcome::Failed(reason) => writeln!(f, "  {stream:<18} failed: {reason}")?,
            }
        }
        for stream in self.not_tried() {
            writeln!(
                f,
                "  {stream:<18} not tried (the run stopped at the failure above)"
            )?;
        }
        writeln!(f, "  {:<18} {:>8}", "in all", self.deleted())?;
        write!(f, "{NOT_REACHED}")
    }
}

/// Deletes `customer`'s documents from every data stream in [`DATA_STREAMS`], one after the
/// other. The first failure (credentials refused, Elasticsearch failing) stops the run; the
/// report keeps what was deleted before it.
pub async fn forget(target: &Elasticsearch, customer: &CustomerId) -> Report {
    let mut streams = Vec::new();
    for stream in DATA_STREAMS {
        match target.delete_by_query(stream, customer).await {
            Ok(outcome) => streams.push((stream, outcome)),
            Err(err) => {
                streams.push((stream, Outcome::Failed(format!("{err:#}"))));
                break;
            }
        }
    }
    Report {
        customer: customer.as_str().to_owned(),
        streams,
    }
}

#[cfg(test)]
mod tests;

//! Injectable faults, so that a user can practise finding a slow or failing hop in a trace and
//! its cause in the logs, as with HotROD or the OpenTelemetry Demo.
//!
//! Each service holds a list of [`Rule`]s, set from `ORDERTRAIL_FAULTS` at start and replaced
//! at run time through `GET`/`PUT`/`DELETE /internal/faults` (see [`routes`]). A rule names a
//! [`Kind`] of fault, where it applies and the share of requests (or queries) it hits:
//!
//! ```json
//! [
//!   {"kind": "latency", "service": "inventory", "route": "POST /reservations",
//!    "delay_ms": 300, "jitter_ms": 200, "share": 0.5},
//!   {"kind": "error", "service": "payment", "route": "POST /payments", "status": 503, "share": 0.2},
//!   {"kind": "reset", "service": "payment", "route": "POST /payments", "share": 0.1},
//!   {"kind": "slow_query", "service": "inventory", "table": "products", "operation": "UPDATE",
//!    "delay_ms": 150},
//!   {"kind": "provider_timeout", "service": "payment", "share": 0.3}
//! ]
//! ```
//!
//! Every fault that strikes is recorded where a user looks: a `feature_flag.evaluation` event
//! (the semantic conventions' feature-flag attributes, `feature_flag.key` = `fault.<kind>`) on
//! the span it affects, and a `fault injected` log line with `fault.kind` and `fault.detail`.
//!
//! The faults are the same failures the saga must survive anyway (a slow or failing hop, an
//! answer lost after the work was done), so none of them may break its guarantees.

mod http;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use opentelemetry::KeyValue;
use opentelemetry_semantic_conventions::attribute::{
    FEATURE_FLAG_KEY, FEATURE_FLAG_PROVIDER_NAME, FEATURE_FLAG_RESULT_VALUE,
    FEATURE_FLAG_RESULT_VARIANT,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use http::{OperatorToken, ROUTE, require_operator, routes};
pub(crate) use http::{ResetConnection, inject};

use crate::db::Sql;

/// The roles a rule may name in `service`.
const SERVICES: [&str; 4] = ["gateway", "order", "payment", "inventory"];
/// How long a payment provider keeps a charge waiting by default: past the 5 s after which
/// the order service gives up on a call.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(6);
/// The longest delay a rule may add, so that a typo cannot hold a request for days.
const MAX_DELAY_MS: u64 = 10 * 60 * 1000;

/// What a rule does when it strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Waits `delay_ms` (plus up to `jitter_ms`) before the route's handler runs.
    Latency,
    /// Answers `status` (500 by default, any 5xx) as problem+json instead of running the
    /// handler.
    Error,
    /// Runs the handler, then closes the connection without sending its answer: the work is
    /// done but the caller never learns it, as when a connection is reset on the way back.
    Reset,
    /// Waits `delay_ms` (plus up to `jitter_ms`) before each query of the service, or of
    /// `table` and/or `operation` only; the wait is inside the query's span. Inside a
    /// transaction it holds the transaction's connection (and its locks), so other requests
    /// may queue behind it, as behind a real slow query.
    SlowQuery,
    /// Payment only: the card provider takes the charge but its answer never comes back. The
    /// payment is recorded as the provider decided (captured, or declined for a declining
    /// card); the charge then waits `delay_ms` (6 s by default, past the caller's 5 s) and
    /// answers 504. The caller cannot tell whether money was taken, and the saga must cope:
    /// a retry that gets through returns that payment, and if none does the order is refunded.
    ProviderTimeout,
}

impl Kind {
    /// The snake_case name, as in the rules and in `fault.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Error => "error",
            Self::Reset => "reset",
            Self::SlowQuery => "slow_query",
            Self::ProviderTimeout => "provider_timeout",
        }
    }
}

/// One fault: its kind, where it applies, how often it strikes and what it injects. Fields
/// that do not apply to the kind are refused, so that a misspelt or misplaced one is noticed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// What the fault does.
    pub kind: Kind,
    /// Only in this service (`gateway`, `order`, `payment` or `inventory`); in any service
    /// that holds the rule when absent, so one `ORDERTRAIL_FAULTS` can serve `ordertrail up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// latency, error, reset: only requests of this route, `METHOD /route/template` as the
    /// router declares it (`POST /reservations/{order_id}/commit`); every route when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteMatch>,
    /// slow_query: only queries of this table (`db.collection.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// slow_query: only queries of this operation (`SELECT`, `INSERT`, `UPDATE`, `DELETE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// latency, slow_query (required), provider_timeout (6000 by default): the fixed delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// latency, slow_query, provider_timeout: a random delay from 0 to this, added to it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jitter_ms: u64,
    /// error: the status answered, 500 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The share of matching requests or queries hit, from 0 to 1; 1 when absent.
    #[serde(default = "always")]
    pub share: f64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn always() -> f64 {
    1.0
}

impl Rule {
    /// Why this rule cannot be used, if it cannot.
    fn check(&self) -> Result<(), String> {
        let kind = self.kind.as_str();
        let delays = matches!(
            self.kind,
            Kind::Latency | Kind::SlowQuery | Kind::ProviderTimeout
        );
        let on_routes = matches!(self.kind, Kind::Latency | Kind::Error | Kind::Reset);
        let misplaced = [
            ("route", self.route.is_some() && !on_routes),
            (
                "table",
                self.table.is_some() && self.kind != Kind::SlowQuery,
            ),
            (
                "operation",
                self.operation.is_some() && self.kind != Kind::SlowQuery,
            ),
            ("delay_ms", self.delay_ms.is_some() && !delays),
            ("jitter_ms", self.jitter_ms > 0 && !delays),
            ("status", self.status.is_some() && self.kind != Kind::Error),
        ];
        if let Some((field, _)) = misplaced.iter().find(|(_, wrong)| *wrong) {
            return Err(format!("`{field}` does not apply to a {kind} rule"));
        }
        if matches!(self.kind, Kind::Latency | Kind::SlowQuery) && self.delay_ms.is_none() {
            return Err(format!("a {kind} rule needs `delay_ms`"));
        }
        if self.delay_ms.unwrap_or(0).saturating_add(self.jitter_ms) > MAX_DELAY_MS {
            return Err(format!(
                "`delay_ms` and `jitter_ms` may add up to {MAX_DELAY_MS} at most"
            ));
        }
        if !(0.0..=1.0).contains(&self.share) {
            return Err("`share` must be from 0 to 1".into());
        }
        if let Some(status) = self.status
            && !(500..=599).contains(&status)
        {
            return Err("`status` must be a 5xx".into());
        }
        if let Some(service) = &self.service
            && !SERVICES.contains(&service.as_str())
        {
            return Err(format!("`service` must be one of {}", SERVICES.join(", ")));
        }
        Ok(())
    }

    /// Whether this rule strikes this time: drawn against `share`.
    fn strikes(&self) -> bool {
        self.share > 0.0 && rand::rng().random_bool(self.share)
    }

    /// The delay to add: `delay_ms` plus a draw of up to `jitter_ms`.
    fn delay(&self) -> Duration {
        let fixed = self.delay_ms.unwrap_or(match self.kind {
            Kind::ProviderTimeout => PROVIDER_TIMEOUT.as_millis() as u64,
            _ => 0,
        });
        let jitter = rand::rng().random_range(0..=self.jitter_ms);
        Duration::from_millis(fixed + jitter)
    }

    /// The status an error rule answers.
    fn status(&self) -> StatusCode {
        self.status
            .and_then(|status| StatusCode::from_u16(status).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn on_route(&self, method: &Method, route: &str) -> bool {
        self.route
            .as_ref()
            .is_none_or(|r| r.method == method && r.template == route)
    }

    fn on_query(&self, sql: &Sql) -> bool {
        let table = self.table.as_deref();
        let operation = self.operation.as_deref();
        table.is_none_or(|t| t == sql.collection)
            && operation.is_none_or(|o| o.eq_ignore_ascii_case(sql.operation))
    }
}

/// A route as `METHOD /template`, such as `POST /reservations/{order_id}/commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RouteMatch {
    method: Method,
    template: String,
}

impl TryFrom<String> for RouteMatch {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let refused = || format!("`route` must be `METHOD /route/template`, not {text:?}");
        let (method, template) = text.split_once(' ').ok_or_else(refused)?;
        let template = template.trim();
        if !template.starts_with('/') || template.contains(' ') {
            return Err(refused());
        }
        let method =
            Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| refused())?;
        Ok(Self {
            method,
            template: template.to_owned(),
        })
    }
}

impl From<RouteMatch> for String {
    fn from(route: RouteMatch) -> Self {
        format!("{} {}", route.method, route.template)
    }
}

/// A list of rules, each checked: what `ORDERTRAIL_FAULTS` and `PUT /internal/faults` take.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Rule>")]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// The rules, in order.
    pub fn as_slice(&self) -> &[Rule] {
        &self.0
    }
}

impl TryFrom<Vec<Rule>> for Rules {
    type Error = String;

    fn try_from(rules: Vec<Rule>) -> Result<Self, String> {
        for (at, rule) in rules.iter().enumerate() {
            rule.check()
                .map_err(|why| format!("rule {}: {why}", at + 1))?;
        }
        Ok(Self(rules))
    }
}

/// JSON, as in `ORDERTRAIL_FAULTS`: a list of rules.
impl FromStr for Rules {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(text).map_err(|err| err.to_string())
    }
}

impl fmt::Display for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(&self.0).map_err(|_| fmt::Error)?)
    }
}

/// One service's fault rules, shared by its middleware, its database and (in payment) its card
/// provider, and replaced at run time. Cloning shares them. The default holds none.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    service: Arc<str>,
    /// Read on every request and query: a read takes the current list, so no lock is held
    /// while a fault waits, and a replacement never waits on one.
    rules: Arc<RwLock<Arc<Rules>>>,
}

impl Faults {
    /// The rules of the service `service` (its role); logged when there are any.
    pub fn new(service: &str, rules: Rules) -> Self {
        let faults = Self {
            service: service.into(),
            rules: Arc::default(),
        };
        if !rules.0.is_empty() {
            faults.set(rules);
        }
        faults
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        match self.rules.read() {
            Ok(rules) => rules.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the rules, and logs the new ones.
    pub fn set(&self, rules: Rules) {
        tracing::warn!(fault.rules = %rules, "fault rules set");
        let rules = Arc::new(rules);
        match self.rules.write() {
            Ok(mut current) => *current = rules,
            Err(poisoned) => *poisoned.into_inner() = rules,
        }
    }

    /// The rules of `kind` for this service that `applies` accepts and that strike this time.
    fn striking(&self, kind: Kind, applies: impl Fn(&Rule) -> bool) -> Vec<Rule> {
        let rules = self.rules();
        rules
            .0
            .iter()
            .filter(|rule| rule.kind == kind)
            .filter(|rule| rule.service.as_deref().is_none_or(|s| *s == *self.service))
            .filter(|rule| applies(rule) && rule.strikes())
            .cloned()
            .collect()
    }

    /// How long the query `sql` is held back: the delays of the slow-query rules that strike,
    /// each reported on the query's `span`.
    pub(crate) fn slow_query(&self, sql: &Sql, span: &Span) -> Duration {
        let mut total = Duration::ZERO;
        for rule in self.striking(Kind::SlowQuery, |rule| rule.on_query(sql)) {
            let delay = rule.delay();
            let detail = format!(
                "{} ms before {} {}",
                delay.as_millis(),
                sql.operation,
                sql.collection
            );
            report(
                span,
                Kind::SlowQuery,
                &format!("{} ms", delay.as_millis()),
                &detail,
            );
            total += delay;
        }
        total
    }

    /// When a provider-timeout rule strikes: how long the card provider keeps the charge
    /// waiting before it is answered 504. Reported on the current span (the charge's).
    pub fn provider_timeout(&self) -> Option<Duration> {
        let rule = self
            .striking(Kind::ProviderTimeout, |_| true)
            .into_iter()
            .next()?;
        let delay = rule.delay();
        let detail = format!(
            "the card provider took the charge and did not answer; 504 after {} ms",
            delay.as_millis()
        );
        report(
            &Span::current(),
            Kind::ProviderTimeout,
            &format!("504 after {} ms", delay.as_millis()),
            &detail,
        );
        Some(delay)
    }
}

/// Records a fault that struck on `span`: a `feature_flag.evaluation` event with the semantic
/// conventions' feature-flag attributes (`feature_flag.key` = `fault.<kind>`, the result's
/// variant the kind of harm, its value `value`), and a warning log line inside the span with
/// `fault.kind` and `fault.detail` (which also shows on the span, as every log line does).
fn report(span: &Span, kind: Kind, value: &str, detail: &str) {
    let variant = match kind {
        Kind::Latency | Kind::SlowQuery => "delay",
        Kind::Error => "error",
        Kind::Reset => "reset",
        Kind::ProviderTimeout => "timeout",
    };
    span.add_event(
        "feature_flag.evaluation",
        vec![
            KeyValue::new(FEATURE_FLAG_KEY, format!("fault.{}", kind.as_str())),
            KeyValue::new(FEATURE_FLAG_RESULT_VARIANT, variant),
            KeyValue::new(FEATURE_FLAG_RESULT_VALUE, value.to_owned()),
            KeyValue::new(FEATURE_FLAG_PROVIDER_NAME, "ordertrail.faults"),
        ],
    );
    span.in_scope(|| {
        tracing::warn!(
            fault.kind = kind.as_str(),
            fault.detail = detail,
            "fault injected"
        );
    });
}

#[cfg(test)]
mod tests;

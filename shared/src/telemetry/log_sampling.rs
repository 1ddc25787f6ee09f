//! The log-volume policy: which INFO (and more verbose) lines of unsampled requests are written.
//!
//! At volume, the "request completed" line of every read is most of what the logs cost. The
//! policy writes, always:
//!
//! - every WARN and ERROR line;
//! - every line of a sampled trace (the head sampler, or the caller, chose to keep it);
//! - every audit line (`event.dataset` = [`AUDIT_DATASET`]);
//! - every line written outside a trace (start-up, shutdown).
//!
//! Of the other lines, the INFO, DEBUG and TRACE lines of requests whose trace is not sampled,
//! it keeps a share: `ORDERTRAIL_LOG_SAMPLE` (from 0 to 1; 1, every line, by default), or the
//! share of the first rule of `ORDERTRAIL_LOG_SAMPLE_RULES` that matches the line. A rule is
//! `http.route=<route>:<share>` (the route of the server span the line is written in, as
//! axum matched it: `http.route=/api/products:0.05`) or `<target>:<share>` (the line's
//! target, a module path, and the modules under it: `ordertrail_inventory:0.5`), separated by
//! commas. A route rule wins over a target rule; among target rules, the longest.
//!
//! A route is each service's own: a read of the products is `/api/products` in the gateway and
//! `/products` in inventory, so `http.route=/api/products:0.05` thins the gateway's lines of
//! that request and leaves inventory's whole. To thin a read in every service it crosses, name
//! each service's route with the same share (every service reads the same rules, and a rule
//! naming a route a service does not have is never matched there):
//! `http.route=/api/products:0.05,http.route=/products:0.05`. Equal shares keep or leave out
//! the same requests everywhere (below).
//!
//! The choice is made per trace, not per line: the trace id's 128 bits are mixed into a
//! number from 0 to 2⁶⁴ (the same function in every process, with no random seed) and a line
//! is kept when that number is below share × 2⁶⁴. So a request's lines are kept or left out
//! together, in every service that applies the same share to them; and because the thresholds
//! nest, a request kept under one share is kept wherever a larger share applies. The mix reads
//! the whole id, so that it does not follow the head sampler's ratio decision, which reads the
//! low 63 bits only: with a 10 % head sampler and a 10 % log share, a tenth of the unsampled
//! requests still log, rather than none.
//!
//! A setting that does not parse is warned about and the policy keeps every line: a typo must
//! never silence a service. Lines left out are counted ([`SampledOut`]), so that they are not
//! mistaken for lines lost on the way to stdout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::Context;
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_semantic_conventions::attribute::HTTP_ROUTE;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

use super::events::AUDIT_DATASET;
use super::fields::{FieldValue, JsonFields};

/// The variable holding the default share.
pub const SAMPLE_VARIABLE: &str = "ORDERTRAIL_LOG_SAMPLE";
/// The variable holding the rules.
pub const RULES_VARIABLE: &str = "ORDERTRAIL_LOG_SAMPLE_RULES";

/// The share of traces whose lines are kept, as a threshold on the trace id's mixed bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Share(u64);

impl Share {
    /// Every trace.
    const ALL: Self = Self(u64::MAX);

    /// Parses a share from 0 to 1.
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim().parse::<f64>() {
            // `as` saturates: 1.0 × 2⁶⁴ becomes u64::MAX, which is ALL.
            Ok(share) if (0.0..=1.0).contains(&share) => {
                Ok(Self((share * 18_446_744_073_709_551_616.0) as u64))
            }
            _ => Err(format!("{text:?} is not a share from 0 to 1")),
        }
    }

    fn keeps(self, trace: u64) -> bool {
        self == Self::ALL || trace < self.0
    }
}

/// The policy, parsed once from the environment; [`LogSampling::default`] keeps every line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSampling {
    default: Share,
    /// `(route, share)`.
    routes: Vec<(String, Share)>,
    /// `(target, share)`, longest target first, so that the first match is the most specific.
    targets: Vec<(String, Share)>,
}

impl Default for LogSampling {
    fn default() -> Self {
        Self {
            default: Share::ALL,
            routes: Vec::new(),
            targets: Vec::new(),
        }
    }
}

impl LogSampling {
    /// The policy `ORDERTRAIL_LOG_SAMPLE` (`sample`) and `ORDERTRAIL_LOG_SAMPLE_RULES`
    /// (`rules`) describe, or why they do not describe one.
    pub fn parse(sample: Option<&str>, rules: Option<&str>) -> Result<Self, String> {
        let mut policy = Self::default();
        if let Some(sample) = sample {
            policy.default =
                Share::parse(sample).map_err(|err| format!("{SAMPLE_VARIABLE}: {err}"))?;
        }
        for rule in rules.into_iter().flat_map(|rules| rules.split(',')) {
            let rule = rule.trim();
            if rule.is_empty() {
                continue;
            }
            let invalid = |why: &str| format!("{RULES_VARIABLE}: rule {rule:?}: {why}");
            let (selector, share) = rule.rsplit_once(':').ok_or_else(|| {
                invalid("expected <target>:<share> or http.route=<route>:<share>")
            })?;
            let share = Share::parse(share).map_err(|err| invalid(&err))?;
            match selector.trim().split_once('=') {
                Some((HTTP_ROUTE, route)) if route.starts_with('/') => {
                    policy.routes.push((route.to_owned(), share));
                }
                Some(_) => return Err(invalid("the only key is http.route, with a route from /")),
                None => {
                    let target = selector.trim();
                    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
                    if target.is_empty() || !target.chars().all(valid) {
                        return Err(invalid(
                            "a target is a module path such as ordertrail_order::saga",
                        ));
                    }
                    policy.targets.push((target.to_owned(), share));
                }
            }
        }
        policy
            .targets
            .sort_by_key(|(target, _)| std::cmp::Reverse(target.len()));
        Ok(policy)
    }

    /// Whether every line is kept whatever it is: then the layer asks nothing per line.
    pub fn keeps_everything(&self) -> bool {
        self.default == Share::ALL
            && self
                .routes
                .iter()
                .chain(&self.targets)
                .all(|(_, share)| *share == Share::ALL)
    }

    /// The share of the first route rule naming `route`, if any.
    fn route_share(&self, route: &str) -> Option<Share> {
        self.routes
            .iter()
            .find_map(|(known, share)| (known == route).then_some(*share))
    }

    /// The share for a line of `target`: the longest target rule that names it or a module
    /// above it, else the default.
    fn target_share(&self, target: &str) -> Share {
        self.targets
            .iter()
            .find(|(prefix, _)| {
                target
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
            })
            .map_or(self.default, |(_, share)| *share)
    }
}

/// The number of lines the policy left out; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SampledOut(Arc<AtomicU64>);

impl SampledOut {
    /// Lines left out so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The policy as the ECS layer applies it, with its counter.
pub(super) struct Sampler {
    policy: LogSampling,
    sampled_out: SampledOut,
}

impl Sampler {
    /// A sampler applying `policy` and counting in `sampled_out`; `None` when the policy keeps
    /// every line, so that the layer does not even ask.
    pub(super) fn new(policy: LogSampling, sampled_out: SampledOut) -> Option<Self> {
        (!policy.keeps_everything()).then_some(Self {
            policy,
            sampled_out,
        })
    }

    /// Whether the line of `event` is written. Cheapest questions first: the level, then the
    /// trace's flags and id, then the rules, and last the event's fields.
    pub(super) fn keeps<S>(&self, event: &Event<'_>, ctx: &LayerContext<'_, S>) -> bool
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let metadata = event.metadata();
        // More verbose levels are greater: this is WARN and ERROR.
        if *metadata.level() <= Level::WARN {
            return true;
        }
        let cx = Context::current();
        let span = cx.span();
        let span_context = span.span_context();
        if !span_context.is_valid() || span_context.is_sampled() {
            return true;
        }
        let share = self
            .route_share(event, ctx)
            .unwrap_or_else(|| self.policy.target_share(metadata.target()));
        if share.keeps(mix(span_context.trace_id())) || is_audit(event) {
            return true;
        }
        self.sampled_out.0.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The share of the route rule for the `http.route` of the innermost span in scope that
    /// has one (the server span), if there are route rules and one names it.
    fn route_share<S>(&self, event: &Event<'_>, ctx: &LayerContext<'_, S>) -> Option<Share>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if self.policy.routes.is_empty() {
            return None;
        }
        // The innermost route found decides, matched by a rule or not.
        let share_of_route = ctx.event_scope(event)?.find_map(|span| {
            let extensions = span.extensions();
            let fields = extensions.get::<JsonFields>()?;
            fields.iter().find_map(|(name, value)| match value {
                FieldValue::Str(route) if name == HTTP_ROUTE => {
                    Some(self.policy.route_share(route))
                }
                _ => None,
            })
        });
        share_of_route.flatten()
    }
}

/// The trace id's bits mixed into one number, uniform when either half of the id is random.
///
/// SplitMix64's finaliser (Steele, Lea and Flood, 2014), written out because it is four lines
/// and must never change: every service has to compute the same number for the same id.
/// `mix64(high ^ mix64(low))`: for any low half, a bijection of the high half, so the result
/// is uniform over random high bits whatever the low bits (and the head sampler's decision
/// on them) are; and ids whose high half is fixed still vary with their low half.
fn mix(trace_id: TraceId) -> u64 {
    fn mix64(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let id = u128::from_be_bytes(trace_id.to_bytes());
    mix64((id >> 64) as u64 ^ mix64(id as u64))
}

/// Whether `event` is an audit event: its own `event.dataset` is [`AUDIT_DATASET`].
fn is_audit(event: &Event<'_>) -> bool {
    struct Dataset(bool);
    impl Visit for Dataset {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "event.dataset" {
                self.0 = value == AUDIT_DATASET;
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }
    if event.metadata().fields().field("event.dataset").is_none() {
        return false;
    }
    let mut dataset = Dataset(false);
    event.record(&mut dataset);
    dataset.0
}

#[cfg(test)]
mod tests;

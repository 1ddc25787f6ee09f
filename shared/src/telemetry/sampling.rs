//! Head sampling: whether a trace is recorded and exported is decided once, by the span that
//! starts it, and every span after it, in this process or the next, follows that decision.
//!
//! The root decides as `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` say (the
//! OpenTelemetry names, including `jaeger_remote` with its `endpoint=…,pollingIntervalMs=…,
//! initialSamplingRate=…` argument), and is always wrapped parent-based: a span with a parent
//! takes the parent's sampled flag, so a trace is kept or dropped whole across the services.
//! An unsampled span still has its ids, so log lines, `traceresponse` and outgoing
//! `traceparent` carry its trace id, with the flag saying `00`.

use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::Sampler;
use serde_json::Value;

/// Where Jaeger's `remote_sampling` extension serves strategies over HTTP by default.
const DEFAULT_REMOTE_ENDPOINT: &str = "http://localhost:5778/sampling";
/// How often strategies are fetched, unless `pollingIntervalMs` says otherwise (the value the
/// OpenTelemetry and Jaeger SDKs use).
const DEFAULT_POLLING_INTERVAL: Duration = Duration::from_secs(60);
/// A shorter polling interval would hammer the strategies endpoint for no gain.
const MIN_POLLING_INTERVAL: Duration = Duration::from_millis(100);
/// The root sampling rate until the first strategies arrive (Jaeger's own default).
const DEFAULT_INITIAL_SAMPLING_RATE: f64 = 0.001;
/// The longest one fetch of strategies may take; the SDK sets no limit of its own, and a hung
/// fetch would stop every later update. Fixed, whatever the polling interval: the SDK's loop
/// fetches one at a time, so a fetch slower than the interval only delays the next one, where
/// a timeout as short as the interval would fail every fetch of a slow moment.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// How a trace's root span decides whether the trace is sampled. Whatever it is, a span with a
/// parent follows its parent (the sampler is parent-based).
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// Every trace (`parentbased_always_on`, the default).
    AlwaysOn,
    /// No trace started here (`parentbased_always_off`); a caller's sampled trace still is.
    AlwaysOff,
    /// This share of traces, from 0 to 1, decided on the trace id (`parentbased_traceidratio`),
    /// so that every service with the same ratio takes the same decision.
    TraceIdRatio(f64),
    /// Strategies per service and operation, fetched from Jaeger (`parentbased_jaeger_remote`).
    JaegerRemote(JaegerRemote),
}

/// The argument of `jaeger_remote`.
#[derive(Debug, Clone, PartialEq)]
pub struct JaegerRemote {
    /// `endpoint`: the HTTP strategies endpoint; `?service=<service.name>` is appended.
    /// Default `http://localhost:5778/sampling`.
    pub endpoint: String,
    /// `pollingIntervalMs`: how often strategies are fetched; the first fetch comes one
    /// interval after start. Default 60 s, at least 100 ms.
    pub polling_interval: Duration,
    /// `initialSamplingRate`: the root sampling rate until strategies have been fetched, and
    /// while they never could be. Default 0.001.
    pub initial_sampling_rate: f64,
}

impl Default for JaegerRemote {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_REMOTE_ENDPOINT.to_owned(),
            polling_interval: DEFAULT_POLLING_INTERVAL,
            initial_sampling_rate: DEFAULT_INITIAL_SAMPLING_RATE,
        }
    }
}

impl Sampling {
    /// Reads `OTEL_TRACES_SAMPLER` (`sampler`) and `OTEL_TRACES_SAMPLER_ARG` (`arg`). What
    /// cannot be honoured is described in `warnings` and replaced by its default.
    pub fn from_vars(sampler: Option<&str>, arg: Option<&str>, warnings: &mut Vec<String>) -> Self {
        let Some(sampler) = sampler.map(|s| s.trim().to_ascii_lowercase()) else {
            return Self::AlwaysOn;
        };
        let root = sampler.strip_prefix("parentbased_").unwrap_or(&sampler);
        let known = ["always_on", "always_off", "traceidratio", "jaeger_remote"];
        if !known.contains(&root) {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER={sampler:?} is not a sampler this build has (parentbased_ \
                 always_on, always_off, traceidratio or jaeger_remote); using parentbased_always_on"
            ));
            return Self::AlwaysOn;
        }
        if root == sampler {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER={sampler}: every service samples parent-based, so that a \
                 trace is kept or dropped whole; using parentbased_{sampler}"
            ));
        }
        match root {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::TraceIdRatio(match arg {
                // The specification's default.
                None => 1.0,
                Some(arg) => rate(arg).unwrap_or_else(|| {
                    warnings.push(format!(
                        "OTEL_TRACES_SAMPLER_ARG={arg:?} is not a ratio from 0 to 1; using 1"
                    ));
                    1.0
                }),
            }),
            _ => Self::JaegerRemote(JaegerRemote::from_arg(arg.unwrap_or_default(), warnings)),
        }
    }

    /// The SDK sampler: this decision at the root, the parent's everywhere else. A remote
    /// sampler that cannot start is described in `warnings` and replaced by its initial rate.
    pub(super) fn sampler(&self, service_name: &str, warnings: &mut Vec<String>) -> Sampler {
        let root = match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(*ratio),
            Self::JaegerRemote(remote) => remote.sampler(service_name).unwrap_or_else(|err| {
                warnings.push(format!(
                    "cannot fetch sampling strategies from {}: {err}; sampling {} of traces",
                    remote.endpoint, remote.initial_sampling_rate
                ));
                Sampler::TraceIdRatioBased(remote.initial_sampling_rate)
            }),
        };
        Sampler::ParentBased(Box::new(root))
    }
}

impl JaegerRemote {
    /// Parses `endpoint=…,pollingIntervalMs=…,initialSamplingRate=…`, each part optional.
    fn from_arg(arg: &str, warnings: &mut Vec<String>) -> Self {
        let mut remote = Self::default();
        for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let (key, value) = (key.trim(), value.trim());
            let mut refuse = |expected: &str, used: String| {
                warnings.push(format!(
                    "OTEL_TRACES_SAMPLER_ARG: {key}={value:?} is not {expected}; using {used}"
                ));
            };
            match key {
                "endpoint" => match reqwest::Url::parse(value) {
                    Ok(url) if url.scheme() == "http" && url.has_host() => {
                        remote.endpoint = value.to_owned();
                    }
                    _ => refuse("an http:// URL", remote.endpoint.clone()),
                },
                "pollingIntervalMs" => match value.parse::<u64>().map(Duration::from_millis) {
                    Ok(interval) if interval >= MIN_POLLING_INTERVAL => {
                        remote.polling_interval = interval;
                    }
                    _ => refuse(
                        "a number of milliseconds from 100",
                        format!("{}", remote.polling_interval.as_millis()),
                    ),
                },
                "initialSamplingRate" => match rate(value) {
                    Some(rate) => remote.initial_sampling_rate = rate,
                    None => refuse(
                        "a rate from 0 to 1",
                        remote.initial_sampling_rate.to_string(),
                    ),
                },
                _ => warnings.push(format!(
                    "OTEL_TRACES_SAMPLER_ARG: {key:?} is not a jaeger_remote setting \
                     (endpoint, pollingIntervalMs, initialSamplingRate); ignored"
                )),
            }
        }
        remote
    }

    /// The SDK's Jaeger remote sampler, polling from a task on the current tokio runtime.
    fn sampler(&self, service_name: &str) -> Result<Sampler, String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("polling needs a tokio runtime".to_owned());
        }
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|err| err.to_string())?;
        let initial = Sampler::TraceIdRatioBased(self.initial_sampling_rate);
        Sampler::jaeger_remote(
            runtime::Tokio,
            StrategiesClient { http },
            initial,
            service_name,
        )
        .with_endpoint(&self.endpoint)
        .with_update_interval(self.polling_interval)
        .build()
        .map_err(|err| err.to_string())
    }
}

/// A rate from 0 to 1.
fn rate(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|rate| (0.0..=1.0).contains(rate))
}

/// The HTTP client of the remote sampler: reqwest (the workspace's one HTTP client stack),
/// with a timeout, handing the SDK the strategies in the one JSON shape it reads.
#[derive(Debug)]
struct StrategiesClient {
    http: reqwest::Client,
}

#[tonic::async_trait]
impl HttpClient for StrategiesClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let response = self.http.send_bytes(request).await?;
        Ok(response.map(readable_strategies))
    }
}

/// The strategies JSON as the SDK's reader takes it. Two encodings of Jaeger's sampling API
/// exist: the JSON of its Thrift model, which Jaeger v2's `remote_sampling` extension serves
/// over HTTP (`"strategyType": 0`, a number), and the JSON of its proto model, which other
/// servers use (`"strategyType": "PROBABILISTIC"`, fields at their default left out). The SDK
/// reads only the enum's name and needs every field; without this, a Jaeger answer fails to
/// parse on every poll and the initial rate stays forever. A body that is not a JSON object
/// is handed on as it came, for the SDK to report.
fn readable_strategies(body: Bytes) -> Bytes {
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    // A type the answer states wins. Proto JSON leaves the type out at its default
    // (PROBABILISTIC, 0), so without one, the strategy present says which it is.
    let strategy_type = match answer.get("strategyType") {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => "RATE_LIMITING",
        Some(Value::String(name)) if name == "RATE_LIMITING" => "RATE_LIMITING",
        Some(_) => "PROBABILISTIC",
        None if answer
            .get("rateLimitingSampling")
            .is_some_and(Value::is_object) =>
        {
            "RATE_LIMITING"
        }
        None => "PROBABILISTIC",
    };
    answer.insert("strategyType".to_owned(), strategy_type.into());
    // Proto JSON leaves out a field at its default (0, or an empty list).
    fn defaults(object: Option<&mut Value>, fields: &[&str]) {
        if let Some(Value::Object(object)) = object {
            for field in fields {
                object.entry(*field).or_insert(0.into());
            }
        }
    }
    defaults(answer.get_mut("probabilisticSampling"), &["samplingRate"]);
    defaults(
        answer.get_mut("rateLimitingSampling"),
        &["maxTracesPerSecond"],
    );
    if let Some(Value::Object(operations)) = answer.get_mut("operationSampling") {
        let list = operations
            .entry("perOperationStrategies")
            .or_insert(Value::Array(Vec::new()));
        for strategy in list.as_array_mut().into_iter().flatten() {
            defaults(strategy.get_mut("probabilisticSampling"), &["samplingRate"]);
        }
    }
    defaults(
        answer.get_mut("operationSampling"),
        &[
            "defaultSamplingProbability",
            "defaultLowerBoundTracesPerSecond",
            "defaultUpperBoundTracesPerSecond",
        ],
    );
    serde_json::to_vec(&answer).map_or(body, Bytes::from)
}

#[cfg(test)]
mod tests;

//! Jaeger's file-based sampling strategies as Jaeger 2.15 reads and serves them, so that the
//! tests exercise the deployed file: its JSON model
//! (`internal/sampling/samplingstrategy/file/strategy.go`), the answer its provider builds for a
//! service (`provider.go`), and the JSON its `remote_sampling` extension writes over HTTP
//! (`internal/sampling/http/handler.go`: the Thrift model's JSON, the strategy type as a
//! number).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// The strategies file, from the repository.
const DEPLOYED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/jaeger/sampling-strategies.json"
);

/// Jaeger's probability where the file gives none (`DefaultSamplingProbability`, the
/// extension's `default_sampling_probability` left unset).
const JAEGER_DEFAULT_PROBABILITY: f64 = 0.001;

/// `strategies`: the file's root.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategies {
    default_strategy: Option<ServiceStrategy>,
    service_strategies: Option<Vec<ServiceStrategy>>,
}

/// `serviceStrategy`, with the embedded `strategy`'s fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceStrategy {
    service: Option<String>,
    operation_strategies: Option<Vec<OperationStrategy>>,
    #[serde(rename = "type")]
    kind: Option<String>,
    param: Option<f64>,
}

/// `operationStrategy`, with the embedded `strategy`'s fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationStrategy {
    operation: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    param: Option<f64>,
}

impl Strategies {
    /// `deploy/jaeger/sampling-strategies.json`, parsed; a field Jaeger does not know fails.
    pub fn deployed() -> Self {
        let text = std::fs::read_to_string(DEPLOYED).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{DEPLOYED}: {err}"))
    }

    /// What Jaeger would accept but silently replace or ignore: a strategy type it does not
    /// know (it uses its default probability instead), a probability outside 0..=1, an
    /// operation strategy that is not probabilistic (dropped), a service none of `services`
    /// (never asked for), an operation without a name.
    pub fn problems(&self, services: &[&str]) -> Vec<String> {
        let mut problems = Vec::new();
        // Jaeger's checks: a known type, a probability in 0..=1; operations probabilistic.
        let wrong = |kind: &Option<String>, param: Option<f64>, operation: bool| {
            !matches!(
                (kind.as_deref(), param),
                (Some("probabilistic"), Some(p)) if (0.0..=1.0).contains(&p)
            ) && (operation
                || !matches!((kind.as_deref(), param), (Some("ratelimiting"), Some(p)) if p >= 0.0))
        };
        let default = self
            .default_strategy
            .iter()
            .map(|s| ("default_strategy".to_owned(), s));
        let listed = self
            .service_strategies
            .iter()
            .flatten()
            .map(|s| (format!("service {:?}", s.service), s));
        for (at, strategy) in default.chain(listed) {
            if wrong(&strategy.kind, strategy.param, false) {
                problems.push(format!(
                    "{at}: type {:?}, param {:?}",
                    strategy.kind, strategy.param
                ));
            }
            for op in strategy.operation_strategies.iter().flatten() {
                let at = format!("{at}, operation {:?}", op.operation);
                if op.operation.as_deref().is_none_or(str::is_empty) {
                    problems.push(format!("{at}: no operation name"));
                }
                if wrong(&op.kind, op.param, true) {
                    problems.push(format!("{at}: type {:?}, param {:?}", op.kind, op.param));
                }
            }
        }
        for strategy in self.service_strategies.iter().flatten() {
            if !strategy
                .service
                .as_deref()
                .is_some_and(|s| services.contains(&s))
            {
                problems.push(format!(
                    "service {:?} is none of {services:?}",
                    strategy.service
                ));
            }
        }
        problems
    }

    /// The sampling probability per operation that Jaeger serves to `service`.
    pub fn operations(&self, service: &str) -> BTreeMap<String, f64> {
        let answer = self.answer(service);
        answer["operationSampling"]["perOperationStrategies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|op| {
                let rate = op["probabilisticSampling"]["samplingRate"]
                    .as_f64()
                    .unwrap();
                (op["operation"].as_str().unwrap().to_owned(), rate)
            })
            .collect()
    }

    /// Jaeger's answer to `GET /sampling?service={service}`, as its file provider builds it
    /// (`parseStrategies`, with the default strategy's operations merged into a service's)
    /// and its HTTP server writes it.
    pub fn answer(&self, service: &str) -> Value {
        let default = match &self.default_strategy {
            Some(strategy) => parse_service(strategy),
            None => parse(&None, None),
        };
        let Some(strategy) = self
            .service_strategies
            .iter()
            .flatten()
            .find(|s| s.service.as_deref() == Some(service))
        else {
            return default;
        };
        let mut answer = parse_service(strategy);
        let Some(default_operations) = default.get("operationSampling") else {
            return answer;
        };
        match answer.get_mut("operationSampling") {
            None => {
                let mut operations = default_operations.clone();
                if let Some(rate) = answer["probabilisticSampling"].get("samplingRate") {
                    operations["defaultSamplingProbability"] = rate.clone();
                }
                answer["operationSampling"] = operations;
            }
            Some(own) => {
                let list = own["perOperationStrategies"].as_array_mut().unwrap();
                for op in default_operations["perOperationStrategies"]
                    .as_array()
                    .unwrap()
                {
                    if !list.iter().any(|o| o["operation"] == op["operation"]) {
                        list.push(op.clone());
                    }
                }
            }
        }
        answer
    }
}

/// `parseStrategy`: a strategy as Jaeger's Thrift JSON (strategy type 0 probabilistic, 1 rate
/// limiting); an unknown type becomes the default probability.
fn parse(kind: &Option<String>, param: Option<f64>) -> Value {
    let param = param.unwrap_or(0.0);
    match kind.as_deref() {
        Some("probabilistic") => {
            json!({"strategyType": 0, "probabilisticSampling": {"samplingRate": param}})
        }
        Some("ratelimiting") => {
            json!({"strategyType": 1, "rateLimitingSampling": {"maxTracesPerSecond": param as i16}})
        }
        _ => parse(
            &Some("probabilistic".to_owned()),
            Some(JAEGER_DEFAULT_PROBABILITY),
        ),
    }
}

/// `parseServiceStrategies`: the service's strategy, and its operations' (probabilistic only)
/// with the service's probability as their default.
fn parse_service(strategy: &ServiceStrategy) -> Value {
    let mut answer = parse(&strategy.kind, strategy.param);
    let operations = strategy.operation_strategies.as_deref().unwrap_or_default();
    if operations.is_empty() {
        return answer;
    }
    let default = answer["probabilisticSampling"]["samplingRate"]
        .as_f64()
        .unwrap_or(JAEGER_DEFAULT_PROBABILITY);
    let list: Vec<Value> = operations
        .iter()
        .map(|op| (op, parse(&op.kind, op.param)))
        .filter(|(_, parsed)| parsed["strategyType"] == 0)
        .map(|(op, parsed)| {
            json!({
                "operation": op.operation.clone().unwrap_or_default(),
                "probabilisticSampling": parsed["probabilisticSampling"],
            })
        })
        .collect();
    answer["operationSampling"] = json!({
        "defaultSamplingProbability": default,
        "defaultLowerBoundTracesPerSecond": 0,
        "perOperationStrategies": list,
        "defaultUpperBoundTracesPerSecond": 0,
    });
    answer
}

/// A stand-in for Jaeger's `remote_sampling` extension serving `strategies` over HTTP.
pub struct FakeJaeger {
    /// Where the services fetch strategies: `http://127.0.0.1:{port}/sampling`.
    pub endpoint: String,
    fetches: Arc<Mutex<HashMap<String, usize>>>,
}

#[derive(Clone)]
struct Served {
    strategies: Arc<Strategies>,
    fetches: Arc<Mutex<HashMap<String, usize>>>,
}

impl FakeJaeger {
    /// Starts serving; it stops with the test's runtime.
    pub async fn serve(strategies: Strategies) -> Self {
        let fetches = Arc::<Mutex<HashMap<String, usize>>>::default();
        let served = Served {
            strategies: Arc::new(strategies),
            fetches: fetches.clone(),
        };
        // Jaeger's handler answers on every path, as here.
        let app = axum::Router::new().fallback(answer).with_state(served);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/sampling", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint, fetches }
    }

    /// Waits (up to twenty seconds, for a loaded machine) until each of `services` has asked
    /// for its strategies under its own name. That a request arrived says nothing of its
    /// answer being in use: the test asks the gateway for that.
    pub async fn asked_by(&self, services: &[&str]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let fetches = self.fetches.lock().unwrap().clone();
            if services.iter().all(|s| fetches.contains_key(*s)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "strategies asked for: {fetches:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn answer(
    State(served): State<Served>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(service) = query.get("service") else {
        let refusal = "'service' parameter must be provided once";
        return (StatusCode::BAD_REQUEST, refusal).into_response();
    };
    *served
        .fetches
        .lock()
        .unwrap()
        .entry(service.clone())
        .or_default() += 1;
    let body = served.strategies.answer(service).to_string();
    ([("content-type", "application/json")], body).into_response()
}

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::RawQuery;
use axum::routing::get;
use opentelemetry::Context;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};
use serde_json::json;

use super::*;

fn read(sampler: &str, arg: Option<&str>) -> (Sampling, Vec<String>) {
    let mut warnings = Vec::new();
    let sampling = Sampling::from_vars(Some(sampler), arg, &mut warnings);
    (sampling, warnings)
}

fn decide(sampler: &Sampler, parent: Option<&Context>, name: &str) -> SamplingDecision {
    let trace_id = TraceId::from(rand::random::<u128>());
    let result = sampler.should_sample(parent, trace_id, name, &SpanKind::Server, &[], &[]);
    result.decision
}

#[test]
fn without_a_setting_every_trace_is_sampled() {
    let mut warnings = Vec::new();
    assert_eq!(
        Sampling::from_vars(None, None, &mut warnings),
        Sampling::AlwaysOn
    );
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn the_specification_names_are_read_in_any_case() {
    for (sampler, arg, expected) in [
        ("parentbased_always_on", None, Sampling::AlwaysOn),
        ("parentbased_always_off", None, Sampling::AlwaysOff),
        (
            "ParentBased_TraceIdRatio",
            Some("0.25"),
            Sampling::TraceIdRatio(0.25),
        ),
        (
            "parentbased_traceidratio",
            None,
            Sampling::TraceIdRatio(1.0),
        ),
    ] {
        let (sampling, warnings) = read(sampler, arg);
        assert_eq!(sampling, expected, "{sampler}");
        assert!(warnings.is_empty(), "{sampler}: {warnings:?}");
    }
}

#[test]
fn a_sampler_that_is_not_parent_based_becomes_parent_based_with_a_warning() {
    let (sampling, warnings) = read("traceidratio", Some("0.5"));
    assert_eq!(sampling, Sampling::TraceIdRatio(0.5));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("using parentbased_traceidratio"),
        "{warnings:?}"
    );
}

#[test]
fn settings_that_cannot_be_used_are_warned_about_and_defaulted() {
    for (sampler, arg, expected) in [
        (
            "parentbased_traceidratio",
            "1.5",
            Sampling::TraceIdRatio(1.0),
        ),
        (
            "parentbased_traceidratio",
            "half",
            Sampling::TraceIdRatio(1.0),
        ),
        ("xray", "", Sampling::AlwaysOn),
        ("sometimes", "", Sampling::AlwaysOn),
    ] {
        let (sampling, warnings) = read(sampler, Some(arg));
        assert_eq!(sampling, expected, "{sampler} {arg}");
        assert_eq!(warnings.len(), 1, "{sampler} {arg}: {warnings:?}");
    }
}

#[test]
fn the_jaeger_remote_argument_is_read_as_the_specification_writes_it() {
    let (sampling, warnings) = read(
        "parentbased_jaeger_remote",
        Some(
            "endpoint=http://jaeger:5778/sampling, pollingIntervalMs=5000,initialSamplingRate=0.25",
        ),
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        sampling,
        Sampling::JaegerRemote(JaegerRemote {
            endpoint: "http://jaeger:5778/sampling".to_owned(),
            polling_interval: Duration::from_secs(5),
            initial_sampling_rate: 0.25,
        })
    );
    let (sampling, warnings) = read("parentbased_jaeger_remote", None);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(sampling, Sampling::JaegerRemote(JaegerRemote::default()));
}

#[test]
fn a_jaeger_remote_setting_that_cannot_be_used_keeps_its_default() {
    let (sampling, warnings) = read(
        "parentbased_jaeger_remote",
        Some("endpoint=jaeger:5778,pollingIntervalMs=0,initialSamplingRate=2,colour=blue"),
    );
    assert_eq!(sampling, Sampling::JaegerRemote(JaegerRemote::default()));
    let warnings = warnings.join("\n");
    for setting in [
        "endpoint",
        "pollingIntervalMs",
        "initialSamplingRate",
        "colour",
    ] {
        assert!(warnings.contains(setting), "{setting} in {warnings}");
    }
}

#[test]
fn every_sampler_follows_a_sampled_or_unsampled_parent() {
    let parent = |flags| {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(7),
            SpanId::from(7),
            flags,
            true,
            TraceState::default(),
        ))
    };
    let (sampled, unsampled) = (parent(TraceFlags::SAMPLED), parent(TraceFlags::default()));
    for sampling in [
        Sampling::AlwaysOn,
        Sampling::AlwaysOff,
        Sampling::TraceIdRatio(0.5),
    ] {
        let sampler = sampling.sampler("gateway", &mut Vec::new());
        assert_eq!(
            decide(&sampler, Some(&sampled), "GET /api/products"),
            SamplingDecision::RecordAndSample,
            "{sampling:?}"
        );
        assert_eq!(
            decide(&sampler, Some(&unsampled), "GET /api/products"),
            SamplingDecision::Drop,
            "{sampling:?}"
        );
    }
}

#[test]
fn without_a_runtime_the_remote_sampler_falls_back_to_its_initial_rate() {
    let remote = Sampling::JaegerRemote(JaegerRemote {
        initial_sampling_rate: 0.0,
        ..JaegerRemote::default()
    });
    let mut warnings = Vec::new();
    let sampler = remote.sampler("gateway", &mut warnings);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(decide(&sampler, None, "x"), SamplingDecision::Drop);
}

/// What Jaeger 2.15's `remote_sampling` extension answers over HTTP for a service with
/// operation strategies: the JSON of its Thrift model, the strategy type as a number.
const JAEGER_ANSWER: &str = r#"{"strategyType":0,"probabilisticSampling":{"samplingRate":0},"operationSampling":{"defaultSamplingProbability":0,"defaultLowerBoundTracesPerSecond":0,"perOperationStrategies":[{"operation":"POST /api/orders","probabilisticSampling":{"samplingRate":1}}],"defaultUpperBoundTracesPerSecond":0}}"#;

#[test]
fn jaegers_thrift_json_and_the_proto_json_both_reach_the_sdk_in_the_shape_it_reads() {
    let read = |body: &str| -> Value {
        serde_json::from_slice(&readable_strategies(Bytes::from(body.to_owned()))).unwrap()
    };
    let thrift = read(JAEGER_ANSWER);
    assert_eq!(thrift["strategyType"], "PROBABILISTIC");
    assert_eq!(
        thrift["operationSampling"],
        serde_json::from_str::<Value>(JAEGER_ANSWER).unwrap()["operationSampling"]
    );
    assert_eq!(
        read(r#"{"strategyType":1,"rateLimitingSampling":{"maxTracesPerSecond":5}}"#),
        json!({"strategyType": "RATE_LIMITING", "rateLimitingSampling": {"maxTracesPerSecond": 5}})
    );
    // Proto JSON leaves out whatever is at its default.
    assert_eq!(
        read(
            r#"{"operationSampling":{"perOperationStrategies":[{"operation":"a","probabilisticSampling":{}}]}}"#
        ),
        json!({
            "strategyType": "PROBABILISTIC",
            "operationSampling": {
                "defaultSamplingProbability": 0,
                "defaultLowerBoundTracesPerSecond": 0,
                "defaultUpperBoundTracesPerSecond": 0,
                "perOperationStrategies": [
                    {"operation": "a", "probabilisticSampling": {"samplingRate": 0}}
                ]
            }
        })
    );
    // A type the answer states wins over the strategies it carries.
    assert_eq!(
        read(
            r#"{"strategyType":0,"probabilisticSampling":{"samplingRate":0.5},"rateLimitingSampling":{"maxTracesPerSecond":5}}"#
        )["strategyType"],
        "PROBABILISTIC"
    );
    assert_eq!(
        read(r#"{"strategyType":"PROBABILISTIC","rateLimitingSampling":{}}"#)["strategyType"],
        "PROBABILISTIC"
    );
    // Without one (proto JSON at its default), the strategy present says.
    assert_eq!(
        read(r#"{"rateLimitingSampling":{"maxTracesPerSecond":5}}"#)["strategyType"],
        "RATE_LIMITING"
    );
    assert_eq!(
        readable_strategies(Bytes::from_static(b"not json")),
        Bytes::from_static(b"not json")
    );
}

/// Serves [`JAEGER_ANSWER`] at `/sampling`, each answer `delay` after its request; gives the
/// endpoint and the query strings asked so far.
async fn serve_strategies(delay: Duration) -> (String, Arc<Mutex<Vec<String>>>) {
    let queries = Arc::new(Mutex::new(Vec::new()));
    let seen = queries.clone();
    let strategies = Router::new().route(
        "/sampling",
        get(move |RawQuery(query): RawQuery| async move {
            seen.lock().unwrap().push(query.unwrap_or_default());
            tokio::time::sleep(delay).await;
            ([("content-type", "application/json")], JAEGER_ANSWER)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/sampling", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, strategies).await });
    (endpoint, queries)
}

/// A remote sampler polling `endpoint` every 100 ms, sampling nothing until it has strategies.
fn polling_sampler(endpoint: String) -> Sampler {
    let remote = Sampling::JaegerRemote(JaegerRemote {
        endpoint,
        polling_interval: Duration::from_millis(100),
        initial_sampling_rate: 0.0,
    });
    let mut warnings = Vec::new();
    let sampler = remote.sampler("gateway", &mut warnings);
    assert!(warnings.is_empty(), "{warnings:?}");
    sampler
}

/// Waits until `sampler` keeps an order placement (initial rate 0: the strategies arrived).
/// The deadline is generous: on a loaded machine the first fetch may come late; a sampler that
/// never applies them fails here all the same.
async fn until_strategies_apply(sampler: &Sampler, queries: &Mutex<Vec<String>>) {
    let started = Instant::now();
    while decide(sampler, None, "POST /api/orders") == SamplingDecision::Drop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "strategies never applied; fetched {:?}",
            queries.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_sampler_applies_the_strategies_jaeger_serves() {
    let (endpoint, queries) = serve_strategies(Duration::ZERO).await;
    let sampler = polling_sampler(endpoint);

    // Nothing until the strategies arrive (initial rate 0), then every order placement.
    until_strategies_apply(&sampler, &queries).await;
    for _ in 0..100 {
        assert_eq!(
            decide(&sampler, None, "POST /api/orders"),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(
            decide(&sampler, None, "GET /api/products"),
            SamplingDecision::Drop
        );
    }
    assert_eq!(queries.lock().unwrap()[0], "service=gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_answered_slower_than_the_polling_interval_still_apply() {
    // Three intervals per answer: a fetch may take longer than the interval between fetches.
    let (endpoint, queries) = serve_strategies(Duration::from_millis(300)).await;
    let sampler = polling_sampler(endpoint);
    until_strategies_apply(&sampler, &queries).await;
}

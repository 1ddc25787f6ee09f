//! The policy on captured lines: a subscriber with the OpenTelemetry layer (parent-based, so a
//! remote parent's sampled flag decides) and the ECS layer writing into memory.

use std::collections::BTreeMap;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use rand::{Rng as _, SeedableRng as _};
use serde_json::Value;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

use super::*;
use crate::telemetry::ecs::tests::Captured;
use crate::telemetry::{EcsLayer, ServiceIdentity, TelemetryConfig};

fn policy(sample: &str, rules: &str) -> LogSampling {
    LogSampling::parse(Some(sample), Some(rules)).unwrap()
}

/// The lines `write` logs in `service` under `policy`, and how many the policy left out.
fn lines_of(service: &str, policy: &LogSampling, write: impl FnOnce()) -> (Vec<Value>, u64) {
    let provider = SdkTracerProvider::builder().build();
    let captured = Captured::default();
    let sampled_out = SampledOut::default();
    let ecs = EcsLayer::new(ServiceIdentity::new(service), Box::new(captured.clone()))
        .with_sampling(policy.clone(), sampled_out.clone());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(ecs);
    tracing::subscriber::with_default(subscriber, write);
    (captured.lines(), sampled_out.get())
}

/// Runs `handle` as a request of trace `trace` on `route`, continuing a caller's span whose
/// flags say whether the trace is `sampled`.
fn request(trace: u128, sampled: bool, route: &str, handle: impl FnOnce()) {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let caller = SpanContext::new(
        TraceId::from(trace),
        SpanId::from(1),
        flags,
        true,
        TraceState::default(),
    );
    let span = tracing::info_span!("http.server", http.route = route);
    let _ = span.set_parent(Context::new().with_remote_span_context(caller));
    span.in_scope(handle);
}

/// `n` trace ids from a seeded generator: the same every run, as random as real ones.
fn trace_ids(n: usize) -> Vec<u128> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    (0..n).map(|_| rng.random()).collect()
}

fn messages(lines: &[Value]) -> Vec<&str> {
    lines.iter().filter_map(|l| l["message"].as_str()).collect()
}

#[test]
fn warn_and_error_lines_of_unsampled_requests_are_always_written() {
    let (lines, sampled_out) = lines_of("order", &policy("0", ""), || {
        request(1, false, "/orders", || {
            tracing::info!("info");
            tracing::warn!("warn");
            tracing::error!("error");
        });
    });
    assert_eq!(messages(&lines), ["warn", "error"]);
    assert_eq!(sampled_out, 1);
}

#[test]
fn every_line_of_a_sampled_trace_is_written() {
    let (lines, sampled_out) = lines_of("order", &policy("0", ""), || {
        request(1, true, "/orders", || {
            tracing::debug!("debug");
            tracing::info!("info");
        });
    });
    assert_eq!(messages(&lines), ["debug", "info"]);
    assert_eq!(sampled_out, 0);
}

#[test]
fn audit_lines_are_written_whatever_the_share() {
    let (lines, _) = lines_of("payment", &policy("0", ""), || {
        request(1, false, "/charges", || {
            crate::audit!("payment-captured", payment.id = "p-1", "payment captured");
            tracing::info!(event.dataset = "ordertrail.other", "not audit");
            tracing::info!("charged");
        });
    });
    assert_eq!(messages(&lines), ["payment captured"]);
    assert_eq!(lines[0]["event.dataset"], AUDIT_DATASET);
}

#[test]
fn lines_outside_any_trace_are_written() {
    let (lines, _) = lines_of("order", &policy("0", ""), || tracing::info!("listening"));
    assert_eq!(messages(&lines), ["listening"]);
}

#[test]
fn unsampled_info_lines_are_kept_at_about_the_share() {
    let ids = trace_ids(2000);
    for (share, low, high) in [("0.1", 160, 240), ("0.5", 920, 1080), ("0", 0, 0)] {
        let (lines, sampled_out) = lines_of("gateway", &policy(share, ""), || {
            for &id in &ids {
                request(id, false, "/api/products", || {
                    tracing::info!("request completed")
                });
            }
        });
        let kept = lines.len() as u64;
        assert!(
            (low..=high).contains(&kept),
            "share {share}: {kept} of 2000"
        );
        assert_eq!(kept + sampled_out, 2000, "share {share}");
    }
}

#[test]
fn a_requests_lines_are_kept_or_left_out_together_in_every_service() {
    let ids = trace_ids(300);
    let policy = policy("0.3", "");
    // Each service's lines of each trace, by trace id.
    let mut per_trace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for service in ["gateway", "order"] {
        let (lines, _) = lines_of(service, &policy, || {
            for &id in &ids {
                request(id, false, "/orders", || {
                    tracing::info!("received");
                    tracing::info_span!("checkout").in_scope(|| tracing::debug!("reserving"));
                    tracing::info!("request completed");
                });
            }
        });
        for line in lines {
            let trace = line["trace.id"].as_str().unwrap().to_owned();
            per_trace.entry(trace).or_default().push(service.to_owned());
        }
    }
    // Both services' three lines of a trace, or none.
    for (trace, services) in &per_trace {
        assert_eq!(services.len(), 6, "{trace}: {services:?}");
    }
    assert!(
        (60..=120).contains(&per_trace.len()),
        "{} traces of 300 kept",
        per_trace.len()
    );
}

#[test]
fn a_route_rule_wins_over_target_rules_and_the_longest_target_over_the_default() {
    let policy = policy(
        "1",
        "http.route=/api/products:0, ordertrail_inventory:0, ordertrail_inventory::routes:1",
    );
    let (lines, sampled_out) = lines_of("inventory", &policy, || {
        request(1, false, "/api/products", || {
            tracing::info!(target: "ordertrail_inventory::routes", "products read");
        });
        request(2, false, "/reserve", || {
            tracing::info!(target: "ordertrail_inventory::routes", "reserved");
            tracing::info!(target: "ordertrail_inventory::routes::stock", "stock read");
            tracing::info!(target: "ordertrail_inventory::store", "stock written");
            tracing::info!(target: "ordertrail_inventory_other", "other crate");
        });
    });
    assert_eq!(messages(&lines), ["reserved", "stock read", "other crate"]);
    assert_eq!(sampled_out, 2);
}

#[test]
fn a_route_rule_applies_to_the_lines_of_spans_under_the_server_span() {
    let policy = policy("1", "http.route=/api/products:0");
    let (lines, _) = lines_of("gateway", &policy, || {
        request(1, false, "/api/products", || {
            tracing::info_span!("catalogue").in_scope(|| tracing::info!("inner"));
        });
        request(1, false, "/api/orders", || tracing::info!("kept"));
    });
    assert_eq!(messages(&lines), ["kept"]);
}

#[test]
fn a_read_is_thinned_in_every_service_it_crosses_only_with_each_hops_route_named() {
    let ids = trace_ids(200);
    // The same read: `/api/products` in the gateway, `/products` in inventory.
    let read = |rules: &str| {
        let policy = policy("1", rules);
        let mut per_trace: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (service, route) in [("gateway", "/api/products"), ("inventory", "/products")] {
            let (lines, _) = lines_of(service, &policy, || {
                for &id in &ids {
                    request(id, false, route, || tracing::info!("request completed"));
                }
            });
            for line in lines {
                let trace = line["trace.id"].as_str().unwrap().to_owned();
                per_trace.entry(trace).or_default().push(service);
            }
        }
        per_trace
    };
    // The gateway's route alone: inventory's lines of the same requests are all written.
    let gateway_only = read("http.route=/api/products:0");
    assert_eq!(gateway_only.len(), 200);
    assert!(gateway_only.values().all(|s| s == &["inventory"]));
    // Each hop's route with the same share: a request's lines in both services, or none.
    let both = read("http.route=/api/products:0.3,http.route=/products:0.3");
    assert!(
        both.values().all(|s| s == &["gateway", "inventory"]),
        "{both:?}"
    );
    assert!(
        (30..=90).contains(&both.len()),
        "{} of 200 kept",
        both.len()
    );
}

/// Trace ids from a seeded generator, for root spans.
#[derive(Debug)]
struct SeededIds(std::sync::Mutex<rand::rngs::StdRng>);

impl opentelemetry_sdk::trace::IdGenerator for SeededIds {
    fn new_trace_id(&self) -> TraceId {
        TraceId::from(self.0.lock().unwrap().random::<u128>())
    }
    fn new_span_id(&self) -> SpanId {
        SpanId::from(self.0.lock().unwrap().random::<u64>())
    }
}

#[test]
fn the_share_of_unsampled_requests_does_not_follow_the_head_samplers_ratio() {
    // The SDK's ratio sampler reads the low bits of the trace id; were the log share to read
    // the same bits, no request it leaves unsampled would ever log at a share below its ratio.
    let provider = SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(0.1))
        .with_id_generator(SeededIds(std::sync::Mutex::new(
            rand::rngs::StdRng::seed_from_u64(9),
        )))
        .build();
    let captured = Captured::default();
    let sampled_out = SampledOut::default();
    let ecs = EcsLayer::new(ServiceIdentity::new("gateway"), Box::new(captured.clone()))
        .with_sampling(policy("0.1", ""), sampled_out.clone());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(ecs);
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..3000 {
            tracing::info_span!("http.server").in_scope(|| tracing::info!("request completed"));
        }
    });
    // A tenth sampled, all kept; a tenth of the other nine tenths kept: 19 %.
    let kept = captured.lines().len();
    assert!((480..=660).contains(&kept), "{kept} of 3000 kept");
    assert_eq!(kept as u64 + sampled_out.get(), 3000);
}

#[test]
fn the_mix_of_a_trace_id_never_changes() {
    // Every service, of every version running side by side, must choose the same traces.
    let id = TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
    assert_eq!(mix(id), MIX_OF_THE_EXAMPLE_ID);
}

/// `mix` of the W3C example trace id, computed apart from this code.
const MIX_OF_THE_EXAMPLE_ID: u64 = 17_075_242_194_095_905_466;

#[test]
fn settings_parse_into_shares_and_rules() {
    let policy = policy(
        "0.25",
        "http.route=/api/products:0.01, ordertrail_order::saga:1,",
    );
    assert!(!policy.keeps_everything());
    assert_eq!(policy.default, Share(1 << 62));
    assert_eq!(
        policy.route_share("/api/products"),
        Some(Share(184_467_440_737_095_520))
    );
    assert_eq!(policy.route_share("/api/orders"), None);
    assert_eq!(
        policy.target_share("ordertrail_order::saga::steps"),
        Share::ALL
    );
    assert_eq!(
        policy.target_share("ordertrail_order::store"),
        Share(1 << 62)
    );
    assert!(LogSampling::default().keeps_everything());
    assert!(
        LogSampling::parse(Some("1"), Some("ordertrail_order:1"))
            .unwrap()
            .keeps_everything()
    );
}

#[test]
fn a_setting_that_does_not_parse_is_refused_with_its_variable() {
    for (sample, rules, variable) in [
        (Some("lots"), None, SAMPLE_VARIABLE),
        (Some("1.5"), None, SAMPLE_VARIABLE),
        (Some("NaN"), None, SAMPLE_VARIABLE),
        (None, Some("ordertrail_order"), RULES_VARIABLE),
        (None, Some("ordertrail_order:-1"), RULES_VARIABLE),
        (None, Some("url.path=/x:0"), RULES_VARIABLE),
        (None, Some("http.route=products:0"), RULES_VARIABLE),
        (None, Some("not a target:0"), RULES_VARIABLE),
    ] {
        let err = LogSampling::parse(sample, rules).unwrap_err();
        assert!(err.starts_with(variable), "{sample:?} {rules:?}: {err}");
    }
}

#[test]
fn the_environment_sets_the_policy_and_the_guard_counts_what_it_left_out() {
    let vars = [
        ("OTEL_SDK_DISABLED", "true"),
        (SAMPLE_VARIABLE, "0"),
        (RULES_VARIABLE, "http.route=/api/orders:1"),
    ];
    let config = TelemetryConfig::from_vars("gateway", |name| {
        vars.iter()
            .find(|(known, _)| *known == name)
            .map(|(_, value)| (*value).to_owned())
    });
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let captured = Captured::default();
    let (subscriber, guard, _) = super::super::build(&config, Box::new(captured.clone()));
    tracing::subscriber::with_default(subscriber, || {
        request(1, false, "/api/products", || tracing::info!("read"));
        request(1, false, "/api/orders", || tracing::info!("ordered"));
    });
    assert_eq!(messages(&captured.lines()), ["ordered"]);
    assert_eq!(guard.log_lines_sampled_out(), 1);
}

#[test]
fn a_setting_that_does_not_parse_is_warned_about_and_every_line_kept() {
    let config = TelemetryConfig::from_vars("gateway", |name| {
        (name == RULES_VARIABLE).then(|| "ordertrail_order=0".to_owned())
    });
    assert_eq!(config.log_sampling, LogSampling::default());
    let warnings = config.warnings.join("\n");
    assert!(warnings.contains(RULES_VARIABLE), "{warnings}");
    assert!(warnings.contains("keeping every log line"), "{warnings}");
}

//! deploy/ and the pinned versions agree on metrics and sampling: Jaeger's config (alone and
//! with either tail-sampling file merged) uses only components and keys Jaeger 2.15.0 builds and
//! accepts, its pipelines are wired, its Monitor tab queries the names its exporter writes,
//! Prometheus scrapes that exporter, the strategies file it serves is mounted, every container
//! has a memory limit, the runtimes' heaps fit under theirs, the RAM budget in deploy/README.md
//! is compose's and fits in 3.5 GiB, and `max_traces` fits checkouts measured here.

use std::collections::{BTreeMap, BTreeSet};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;
use serde_yaml_ng::Value as Yaml;

use crate::deploy::{compose, read, repo, string};
use crate::support::{DECLINED_CARD, GOOD_CARD, TestStack, order};

const JAEGER_CONFIG: &str = "deploy/jaeger/config.yaml";
const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";

/// The component types Jaeger 2.15.0 is built with, by section: cmd/jaeger/internal/
/// components.go at tag v2.15.0 (jaegertracing/jaeger), the types from each factory's
/// `MustNewType` (collector v0.145.0 names the OTLP exporters otlp_grpc and otlp_http and keeps
/// otlp and otlphttp as deprecated aliases).
const JAEGER_COMPONENTS: [(&str, &[&str]); 5] = [
    (
        "extensions",
        &[
            "healthcheckv2",
            "pprof",
            "zpages",
            "basicauth",
            "sigv4auth",
            "jaeger_mcp",
            "jaeger_query",
            "jaeger_storage",
            "remote_sampling",
            "expvar",
            "storage_cleaner",
            "remote_storage",
        ],
    ),
    ("receivers", &["otlp", "nop", "jaeger", "kafka", "zipkin"]),
    (
        "exporters",
        &[
            "debug",
            "otlp_grpc",
            "otlp",
            "otlp_http",
            "otlphttp",
            "nop",
            "jaeger_storage_exporter",
            "kafka",
            "prometheus",
        ],
    ),
    (
        "processors",
        &[
            "batch",
            "memory_limiter",
            "tail_sampling",
            "attributes",
            "filter",
            "adaptive_sampling",
        ],
    ),
    ("connectors", &["forward", "spanmetrics"]),
];

/// The settings each component type used in config.yaml accepts, as dotted paths (`*` any
/// name, `[]` each item of a list). The collector refuses unknown keys at start, so a key
/// outside these is a Jaeger that does not start. Sources, at the versions Jaeger 2.15.0's
/// go.mod pins:
/// - jaeger_query, jaeger_storage, remote_sampling, jaeger_storage_exporter: Jaeger v2.15.0,
///   cmd/jaeger/internal/extension/{jaegerquery/config.go, jaegerquery/internal/flags.go,
///   remotesampling/config.go}, cmd/internal/storageconfig/config.go,
///   internal/config/promcfg/config.go, internal/storage/v2/memory/config.go;
/// - spanmetrics: connector/spanmetricsconnector/config.go, v0.142.0 (contrib);
/// - tail_sampling: processor/tailsamplingprocessor/config.go, v0.142.0;
/// - prometheus: exporter/prometheusexporter/config.go, v0.144.0;
/// - otlp receiver, batch: collector v0.145.0; healthcheckv2: contrib v0.144.0.
///
/// The contrib keys listed are the long-standing ones, present in those files both in the
/// 2022 versions and in v0.135 to v0.150 (the module at exactly v0.142.0 was not at hand).
const ACCEPTED_SETTINGS: [(&str, &[&str]); 10] = [
    (
        "jaeger_query",
        &[
            "storage.traces",
            "storage.traces_archive",
            "storage.metrics",
            "ui.config_file",
            "ui.assets_path",
            "ui.log_access",
            "base_path",
            "bearer_token_propagation",
            "max_clock_skew_adjust",
            "enable_tracing",
            "http.endpoint",
            "grpc.endpoint",
        ],
    ),
    (
        "jaeger_storage",
        &[
            "backends.*.memory.max_traces",
            "metric_backends.*.prometheus.endpoint",
            "metric_backends.*.prometheus.connect_timeout",
            "metric_backends.*.prometheus.token_file_path",
            "metric_backends.*.prometheus.token_override_from_context",
            "metric_backends.*.prometheus.metric_namespace",
            "metric_backends.*.prometheus.latency_unit",
            "metric_backends.*.prometheus.normalize_calls",
            "metric_backends.*.prometheus.normalize_duration",
        ],
    ),
    (
        "remote_sampling",
        &[
            "file.path",
            "file.reload_interval",
            "file.default_sampling_probability",
            "http.endpoint",
            "grpc.endpoint",
        ],
    ),
    (
        "healthcheckv2",
        &[
            "use_v2",
            "http.endpoint",
            "http.status.enabled",
            "http.status.path",
        ],
    ),
    (
        "otlp",
        &["protocols.grpc.endpoint", "protocols.http.endpoint"],
    ),
    (
        "batch",
        &["timeout", "send_batch_size", "send_batch_max_size"],
    ),
    ("jaeger_storage_exporter", &["trace_storage"]),
    (
        "spanmetrics",
        &[
            "namespace",
            "histogram.unit",
            "histogram.explicit.buckets",
            "histogram.exponential.max_size",
            "dimensions[].name",
            "dimensions[].default",
            "exclude_dimensions",
            "aggregation_temporality",
            "metrics_flush_interval",
            "metrics_expiration",
            "exemplars.enabled",
            "resource_metrics_key_attributes",
        ],
    ),
    (
        "tail_sampling",
        &[
            "decision_wait",
            "num_traces",
            "expected_new_traces_per_sec",
            "policies[].name",
            "policies[].type",
            "policies[].latency.threshold_ms",
            "policies[].status_code.status_codes",
            "policies[].probabilistic.sampling_percentage",
            "policies[].probabilistic.hash_salt",
            "policies[].string_attribute.key",
            "policies[].string_attribute.values",
            "policies[].numeric_attribute.key",
            "policies[].numeric_attribute.min_value",
            "policies[].numeric_attribute.max_value",
            "policies[].rate_limiting.spans_per_second",
        ],
    ),
    (
        "prometheus",
        &[
            "endpoint",
            "namespace",
            "const_labels",
            "send_timestamps",
            "metric_expiration",
            "resource_to_telemetry_conversion.enabled",
            "enable_open_metrics",
            "add_metric_suffixes",
        ],
    ),
];

/// The tail-sampling policy types of processor/tailsamplingprocessor/config.go (v0.142.0, and
/// every version since 2022) whose settings [`ACCEPTED_SETTINGS`] lists; each policy's settings
/// sit under the key named like its type.
const TAIL_SAMPLING_POLICIES: [&str; 6] = [
    "latency",
    "status_code",
    "probabilistic",
    "string_attribute",
    "numeric_attribute",
    "rate_limiting",
];

/// Heap a JVM needs beyond `-Xmx` and `-XX:MaxDirectMemorySize`: metaspace (Logstash's JRuby
/// classes take ~100 MB), the JIT's code cache and thread stacks.
const JVM_BEYOND_HEAP_AND_DIRECT: u64 = 192 << 20;
/// Memory Node needs beyond `--max-old-space-size`: the young generation, compiled code,
/// Buffers and native allocations; ~250-300 MB for Kibana.
const NODE_BEYOND_OLD_SPACE: u64 = 300 << 20;
/// The stack's budget in use, README's promise.
const RAM_BUDGET: u64 = 3584 << 20;

/// Bytes Jaeger's memory store holds per byte of a trace's OTLP protobuf: it keeps each trace as
/// pdata (the collector's Go structs of the OTLP messages). A span struct is ~250 bytes against
/// ~60 on the wire, an attribute ~48 bytes of structs beside its key and value (each its own
/// allocation, rounded up to Go's size classes) against ~4 bytes of tags and lengths, and the
/// resource of each batch is copied into every trace it carries. 3 is that estimate for spans
/// like ours (ten-odd short attributes each), not a measurement of Jaeger itself.
const STORE_BYTES_PER_WIRE_BYTE: u64 = 3;

/// The collector's merge of several `--config` files (confmap, koanf): maps merge key by key,
/// anything else (lists included) is replaced by the later file's value.
fn merge(base: &mut Yaml, overlay: &Yaml) {
    match (base, overlay) {
        (Yaml::Mapping(base), Yaml::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// Jaeger's configuration as started with `JAEGER_TAIL_SAMPLING=<switch>`.
fn jaeger_config(switch: &str) -> Yaml {
    let mut config: Yaml = serde_yaml_ng::from_str(&read(JAEGER_CONFIG)).unwrap();
    let overlay: Yaml =
        serde_yaml_ng::from_str(&read(&format!("deploy/jaeger/tail-sampling-{switch}.yaml")))
            .unwrap();
    // A file of comments only is no configuration at all (confmap: an empty Conf).
    if !overlay.is_null() {
        merge(&mut config, &overlay);
    }
    config
}

/// The dotted paths of every setting under `value`; a list of mappings adds `[]`.
fn settings_of(value: &Yaml, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Yaml::Mapping(mapping) if !mapping.is_empty() => {
            for (key, inner) in mapping {
                let path = match prefix {
                    "" => string(key),
                    _ => format!("{prefix}.{}", string(key)),
                };
                settings_of(inner, &path, out);
            }
        }
        Yaml::Sequence(items) if items.iter().all(Yaml::is_mapping) && !items.is_empty() => {
            for item in items {
                settings_of(item, &format!("{prefix}[]"), out);
            }
        }
        _ if prefix.is_empty() => {}
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// Whether `path` is one of `accepted`, where `*` stands for any one name.
fn accepted(path: &str, accepted: &[&str]) -> bool {
    accepted.iter().any(|pattern| {
        let (mut a, mut b) = (pattern.split('.'), path.split('.'));
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some("*"), Some(_)) => {}
                (Some(x), Some(y)) if x == y => {}
                _ => return false,
            }
        }
    })
}

/// The type of a component id (`otlp`, `traces/spanmetrics` -> `traces`).
fn type_of(id: &str) -> &str {
    id.split('/').next().unwrap()
}

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| items.iter().map(string).collect())
        .unwrap_or_default()
}

/// The default of a compose value `${VAR:-default}` (the value itself when it is literal).
fn default_of(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A size in bytes, in compose's (`512m`), Go's (`400MiB`), the JVM's (`384m`) or Prometheus'
/// (`1GB`, powers of two) notation.
fn bytes(size: &str) -> u64 {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &size[digits.len()..];
    let number: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("a size: {size:?}"));
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => panic!("unknown unit {other:?} in {size:?}"),
    };
    number << shift
}

/// The port of an endpoint (`0.0.0.0:8889`, `http://prometheus:9090`, `jaeger:8889`).
fn port(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn jaeger_uses_only_components_and_settings_its_pinned_version_accepts() {
    for switch in ["off", "on"] {
        let config = jaeger_config(switch);
        let components = BTreeMap::from(JAEGER_COMPONENTS);
        let mut defined: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (section, known) in &components {
            for (id, settings) in config[*section].as_mapping().into_iter().flatten() {
                let id = string(id);
                let kind = type_of(&id);
                assert!(
                    known.contains(&kind),
                    "{switch}: {section}.{id}: Jaeger 2.15.0 has no {kind}"
                );
                let allowed = ACCEPTED_SETTINGS
                    .iter()
                    .find(|(name, _)| *name == kind)
                    .unwrap_or_else(|| panic!("{kind}: its settings are not listed here"))
                    .1;
                let mut found = BTreeSet::new();
                settings_of(settings, "", &mut found);
                let unknown: Vec<&String> =
                    found.iter().filter(|p| !accepted(p, allowed)).collect();
                assert!(
                    unknown.is_empty(),
                    "{switch}: {section}.{id} sets {unknown:?}, which {kind} does not accept"
                );
                defined.entry(section).or_default().insert(id);
            }
        }

        // Every extension started is defined; every pipeline uses defined components, and each
        // connector both ends one pipeline and starts another.
        let service = &config["service"];
        for extension in strings(&service["extensions"]) {
            assert!(defined["extensions"].contains(&extension), "{extension}");
        }
        let (mut exported_to, mut received_from) = (BTreeSet::new(), BTreeSet::new());
        for (name, pipeline) in service["pipelines"].as_mapping().unwrap() {
            let name = string(name);
            assert!(
                ["traces", "metrics", "logs"].contains(&type_of(&name)),
                "pipeline {name}"
            );
            for (role, section) in [
                ("receivers", "receivers"),
                ("processors", "processors"),
                ("exporters", "exporters"),
            ] {
                for id in strings(&pipeline[role]) {
                    let connector = defined["connectors"].contains(&id);
                    assert!(
                        defined.get(section).is_some_and(|d| d.contains(&id))
                            || (connector && role != "processors"),
                        "{switch}: pipeline {name} uses {role} {id}, which is not defined"
                    );
                    if connector && role == "exporters" {
                        exported_to.insert(id.clone());
                    }
                    if connector && role == "receivers" {
                        received_from.insert(id);
                    }
                }
            }
            assert!(
                !strings(&pipeline["receivers"]).is_empty()
                    && !strings(&pipeline["exporters"]).is_empty(),
                "{name}"
            );
        }
        assert_eq!(exported_to, defined["connectors"], "{switch}");
        assert_eq!(received_from, defined["connectors"], "{switch}");

        for policy in config["processors"]["tail_sampling"]["policies"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let kind = string(&policy["type"]);
            assert!(TAIL_SAMPLING_POLICIES.contains(&kind.as_str()), "{kind}");
            assert!(policy.get(kind.as_str()).is_some(), "{kind}'s settings");
        }
    }
}

#[test]
fn tail_sampling_is_off_by_default_and_one_setting_turns_it_on() {
    let compose = compose();
    let jaeger = &compose["services"]["jaeger"];
    let command = strings(&jaeger["command"]);
    assert_eq!(
        command,
        [
            "--config",
            "/etc/jaeger/config.yaml",
            "--config",
            "/etc/jaeger/tail-sampling-${JAEGER_TAIL_SAMPLING:-off}.yaml"
        ]
    );
    assert!(
        read(".env.example").contains("\nJAEGER_TAIL_SAMPLING=off\n"),
        ".env.example documents the switch, off"
    );

    // Off: the overlay adds nothing; Jaeger stores what it receives.
    let base: Yaml = serde_yaml_ng::from_str(&read(JAEGER_CONFIG)).unwrap();
    assert_eq!(jaeger_config("off"), base);
    let stored = |config: &Yaml| strings(&config["service"]["pipelines"]["traces"]["processors"]);
    assert!(!stored(&base).contains(&"tail_sampling".to_owned()));

    // On: tail sampling before the store, and only there: the span metrics see every span.
    let on = jaeger_config("on");
    assert_eq!(stored(&on)[0], "tail_sampling");
    for (name, pipeline) in on["service"]["pipelines"].as_mapping().unwrap() {
        let sampled = strings(&pipeline["processors"]).contains(&"tail_sampling".to_owned());
        let stores = strings(&pipeline["exporters"]).contains(&"jaeger_storage_exporter".into());
        let counts = strings(&pipeline["exporters"]).contains(&"spanmetrics".into());
        assert_eq!(
            sampled, stores,
            "{name:?}: tail sampling decides what is stored"
        );
        assert!(
            !(sampled && counts),
            "{name:?}: span metrics count every span"
        );
    }
    let policies: BTreeMap<String, Yaml> = on["processors"]["tail_sampling"]["policies"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| (string(&p["type"]), p.clone()))
        .collect();
    assert_eq!(
        strings(&policies["status_code"]["status_code"]["status_codes"]),
        ["ERROR"],
        "every trace with an error"
    );
    let threshold = policies["latency"]["latency"]["threshold_ms"]
        .as_u64()
        .unwrap();
    let share = policies["probabilistic"]["probabilistic"]["sampling_percentage"]
        .as_f64()
        .unwrap();
    assert!(
        (0.0..100.0).contains(&share) && share > 0.0,
        "a share of the rest"
    );
    // The slow threshold is a bucket boundary of the span metrics: what tail sampling keeps as
    // slow is what the latency histogram counts above it.
    let buckets = strings(&on["connectors"]["spanmetrics"]["histogram"]["explicit"]["buckets"]);
    assert!(buckets.contains(&format!("{threshold}ms")), "{buckets:?}");
    // A trace's spans come in batches from four services every few seconds: the decision
    // waits longer than the services' batch delay (OTEL_BSP_SCHEDULE_DELAY, 5 s).
    let wait = string(&on["processors"]["tail_sampling"]["decision_wait"]);
    assert!(
        wait.strip_suffix('s').unwrap().parse::<u64>().unwrap() > 5,
        "{wait}"
    );
}

#[test]
fn jaegers_monitor_tab_reads_what_its_exporter_writes_and_prometheus_scrapes() {
    let config = jaeger_config("off");
    let compose = compose();
    let services = &compose["services"];
    let spanmetrics = &config["connectors"]["spanmetrics"];
    let exporter = &config["exporters"]["prometheus"];
    let query = &config["extensions"]["jaeger_query"];
    let storage = &config["extensions"]["jaeger_storage"];
    let backend =
        &storage["metric_backends"][string(&query["storage"]["metrics"]).as_str()]["prometheus"];

    // Names: the exporter writes namespace.calls as <namespace>_calls_total and the duration
    // histogram as <namespace>_duration_<unit>_bucket (OTLP -> Prometheus translation, with the
    // suffixes it adds by default); Jaeger's reader (internal/storage/metricstore/prometheus/
    // metricstore/reader.go, v2.15.0) queries <metric_namespace>_calls[_total] and
    // <metric_namespace>_duration[_milliseconds|_seconds]_bucket.
    assert_eq!(
        string(&backend["metric_namespace"]),
        string(&spanmetrics["namespace"]).replace('.', "_")
    );
    assert_eq!(backend["normalize_calls"], Yaml::Bool(true));
    assert_eq!(backend["normalize_duration"], Yaml::Bool(true));
    assert!(
        exporter
            .get("add_metric_suffixes")
            .is_none_or(|v| v == &Yaml::Bool(true))
    );
    assert_eq!(
        string(&backend["latency_unit"]),
        string(&spanmetrics["histogram"]["unit"])
    );
    assert!(["ms", "s"].contains(&string(&backend["latency_unit"]).as_str()));
    // Exemplars: made by the connector, carried by OpenMetrics, stored by Prometheus.
    assert_eq!(spanmetrics["exemplars"]["enabled"], Yaml::Bool(true));
    assert_eq!(exporter["enable_open_metrics"], Yaml::Bool(true));
    let prometheus = &services["prometheus"];
    assert!(strings(&prometheus["command"]).contains(&"--enable-feature=exemplar-storage".into()));
    // The services' own metrics reach the exporter too.
    let pipelines = config["service"]["pipelines"].as_mapping().unwrap();
    assert!(pipelines.iter().any(|(name, pipeline)| {
        type_of(&string(name)) == "metrics"
            && strings(&pipeline["receivers"]).contains(&"otlp".into())
            && strings(&pipeline["exporters"]).contains(&"prometheus".into())
    }));

    // Prometheus: pinned, bounded, scraping the exporter's port on the jaeger service; Jaeger
    // asks it on the port it serves.
    let image = string(&prometheus["image"]);
    let tag = image
        .strip_prefix("prom/prometheus:v")
        .expect("prom/prometheus:v<x.y.z>");
    assert_eq!(tag.split('.').count(), 3, "a pinned version: {image}");
    let scrape: Yaml = serde_yaml_ng::from_str(&read(PROMETHEUS_CONFIG)).unwrap();
    let targets: Vec<String> = scrape["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"].as_sequence().unwrap().clone())
        .flat_map(|c| strings(&c["targets"]))
        .collect();
    let exporter_target = format!("jaeger:{}", port(&string(&exporter["endpoint"])));
    assert!(targets.contains(&exporter_target), "{targets:?}");
    let exporter_job = scrape["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|job| strings(&job["static_configs"][0]["targets"]).contains(&exporter_target))
        .unwrap();
    assert_eq!(
        exporter_job["honor_labels"],
        Yaml::Bool(true),
        "each series keeps its service's job"
    );
    assert_eq!(string(&backend["endpoint"]), "http://prometheus:9090");
    assert!(
        strings(&prometheus["ports"])
            .iter()
            .all(|p| p.starts_with("127.0.0.1:"))
    );
    let retention = &scrape["storage"]["tsdb"]["retention"];
    assert!(retention["time"].as_str().is_some(), "retention by time");
    assert!(bytes(&string(&retention["size"])) > 0, "retention by size");
    let volumes = strings(&prometheus["volumes"]);
    assert!(volumes.contains(&format!(
        "./{PROMETHEUS_CONFIG}:/etc/prometheus/prometheus.yml:ro"
    )));
    assert!(
        strings(&prometheus["healthcheck"]["test"])
            .join(" ")
            .contains(":9090/-/ready")
    );
    let check = &services["e2e"];
    assert_eq!(
        check["environment"]["PROMETHEUS_URL"],
        "http://prometheus:9090"
    );
    assert_eq!(
        check["depends_on"]["prometheus"]["condition"],
        "service_healthy"
    );
}

#[test]
fn jaeger_serves_the_strategies_file_compose_mounts_on_the_port_the_services_ask() {
    let config = jaeger_config("off");
    let compose = compose();
    let sampling = &config["extensions"]["remote_sampling"];
    let path = string(&sampling["file"]["path"]);
    // The mount that holds the path, and the file behind it in the repository.
    let mount = strings(&compose["services"]["jaeger"]["volumes"])
        .into_iter()
        .filter_map(|v| {
            let mut parts = v.split(':');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .find(|(_, target)| path.starts_with(&format!("{target}/")) || path == *target)
        .unwrap_or_else(|| panic!("no volume holds {path}"));
    let file = format!(
        "{}{}",
        mount.0.trim_start_matches("./"),
        &path[mount.1.len()..]
    );
    let strategies: serde_json::Value = serde_json::from_str(&read(&file))
        .unwrap_or_else(|err| panic!("{file} is not JSON: {err}"));
    assert!(
        strategies.get("service_strategies").is_some()
            || strategies.get("default_strategy").is_some(),
        "{file}: Jaeger's strategies format"
    );
    // Every config file Jaeger is started with is in that folder too.
    for file in [
        "config.yaml",
        "tail-sampling-on.yaml",
        "tail-sampling-off.yaml",
    ] {
        assert!(repo(&format!("deploy/jaeger/{file}")).exists());
    }
    assert_eq!(port(&string(&sampling["http"]["endpoint"])), 5778);
    assert!(
        string(&config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]).ends_with(":4317")
    );
}

#[test]
fn every_container_has_a_memory_limit_and_the_stack_fits_its_ram_budget() {
    let compose = compose();
    let services = compose["services"].as_mapping().unwrap();
    let limit = |name: &str| -> u64 {
        let value = &compose["services"][name]["mem_limit"];
        bytes(&default_of(&string(value)))
    };
    let env = |name: &str, variable: &str| -> String {
        default_of(&string(&compose["services"][name]["environment"][variable]))
    };
    for (name, service) in services {
        assert!(
            service.get("mem_limit").is_some(),
            "{name:?} has no memory limit"
        );
    }

    // What the runtimes inside may take stays under each limit.
    let gomemlimit = bytes(&env("jaeger", "GOMEMLIMIT"));
    assert!(
        gomemlimit <= limit("jaeger") * 85 / 100,
        "Jaeger's GOMEMLIMIT leaves room under its limit"
    );
    let java = env("logstash", "LS_JAVA_OPTS");
    let option = |prefix: &str| {
        java.split_whitespace()
            .find_map(|o| o.strip_prefix(prefix))
            .map(bytes)
            .unwrap_or_else(|| panic!("LS_JAVA_OPTS without {prefix}"))
    };
    assert!(
        option("-Xmx") + option("-XX:MaxDirectMemorySize=") + JVM_BEYOND_HEAP_AND_DIRECT
            <= limit("logstash"),
        "Logstash: heap + direct memory + the rest under its limit"
    );
    let node = env("kibana", "NODE_OPTIONS");
    let old_space: u64 = node
        .strip_prefix("--max-old-space-size=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (old_space << 20) + NODE_BEYOND_OLD_SPACE <= limit("kibana"),
        "Kibana: Node's heap and the rest under its limit"
    );
    let es_heap = env("elasticsearch", "ES_JAVA_OPTS");
    let es_heap = es_heap
        .split_whitespace()
        .find_map(|o| o.strip_prefix("-Xmx"))
        .map(bytes)
        .unwrap();
    assert!(
        es_heap <= limit("elasticsearch") / 2,
        "Elasticsearch: heap at most half"
    );

    // deploy/README.md's budget: one row per long-running container, its limit as compose's
    // default, and what it uses, which adds up to the budget.
    let readme = read("deploy/README.md");
    let rows: BTreeMap<String, (u64, u64)> = readme
        .split("\n## RAM\n")
        .nth(1)
        .expect("deploy/README.md, ## RAM")
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`');
            let limit = cells[2].split_whitespace().next()?.trim_matches('`');
            let used = cells[3].trim_matches('*').strip_suffix(" MiB")?;
            (!name.starts_with("**")).then(|| {
                (
                    name.to_owned(),
                    (bytes(limit), used.parse::<u64>().unwrap() << 20),
                )
            })
        })
        .collect();
    let long_running: BTreeSet<String> = services
        .iter()
        .filter(|(_, s)| s.get("restart").is_none_or(|r| r != "no"))
        .map(|(name, _)| string(name))
        .collect();
    assert_eq!(
        rows.keys().cloned().collect::<BTreeSet<_>>(),
        long_running,
        "deploy/README.md's RAM table lists the long-running containers"
    );
    for (name, (table_limit, used)) in &rows {
        assert_eq!(*table_limit, limit(name), "{name}: the table's limit");
        assert!(used < table_limit, "{name}: uses less than its limit");
    }
    let in_use: u64 = rows.values().map(|(_, used)| used).sum();
    assert!(
        in_use <= RAM_BUDGET,
        "{} MiB in use, over the budget of {} MiB",
        in_use >> 20,
        RAM_BUDGET >> 20
    );
}

/// The spans of `trace_id` as Jaeger's store keeps them: per export request, the resource and
/// scope of the batch with only this trace's spans.
fn trace_as_stored(requests: &[ExportTraceServiceRequest], trace_id: &str) -> TracesData {
    let hex = |id: &[u8]| id.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let resource_spans = requests
        .iter()
        .flat_map(|request| request.resource_spans.iter().cloned())
        .filter_map(|mut resource| {
            for scope in &mut resource.scope_spans {
                scope.spans.retain(|span| hex(&span.trace_id) == trace_id);
            }
            resource.scope_spans.retain(|scope| !scope.spans.is_empty());
            (!resource.scope_spans.is_empty()).then_some(resource)
        })
        .collect();
    TracesData { resource_spans }
}

/// Measures a confirmed and a declined checkout as Jaeger receives them, and checks that
/// `max_traces` of the larger fit in half of Jaeger's GOMEMLIMIT. Prints the measurement:
/// `cargo test --test e2e deploy_metrics::jaeger -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_keeps_max_traces_checkouts_in_half_its_gomemlimit() {
    let mut stack = TestStack::start().await;
    let mut largest = 0;
    for (card, root) in [
        (GOOD_CARD, "inventory.commit"),
        (DECLINED_CARD, "payment.charge"),
    ] {
        let answer = stack
            .post_order(&order("TRAIL-MUG", 1, card), None, None)
            .await;
        let trace_id = answer.trace_id();
        let spans = stack
            .trace(&trace_id, &["POST /api/orders", "checkout", root])
            .await;
        let stored = trace_as_stored(&stack.raw, &trace_id);
        let wire = stored.encoded_len() as u64;
        println!(
            "checkout with card …{} ({}): {} spans, {} OTLP protobuf bytes, {} bytes a span, \
             {} export requests",
            &card[12..],
            answer.status,
            spans.len(),
            wire,
            wire / spans.len() as u64,
            stored.resource_spans.len(),
        );
        assert!(spans.len() >= 20, "a whole checkout: {}", spans.len());
        largest = largest.max(wire);
    }

    let config = jaeger_config("off");
    let max_traces =
        config["extensions"]["jaeger_storage"]["backends"]["memstore"]["memory"]["max_traces"]
            .as_u64()
            .unwrap();
    let compose = compose();
    let gomemlimit = bytes(&default_of(&string(
        &compose["services"]["jaeger"]["environment"]["GOMEMLIMIT"],
    )));
    let store = max_traces * largest * STORE_BYTES_PER_WIRE_BYTE;
    println!(
        "max_traces {max_traces} x {largest} bytes x {STORE_BYTES_PER_WIRE_BYTE} = {} MiB; \
         GOMEMLIMIT {} MiB",
        store >> 20,
        gomemlimit >> 20
    );
    assert!(
        store <= gomemlimit / 2,
        "max_traces {max_traces} of checkouts need ~{} MiB, more than half of GOMEMLIMIT",
        store >> 20
    );
    assert!(
        max_traces >= 1000,
        "the store keeps at least the last thousand traces"
    );
}

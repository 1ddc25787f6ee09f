//! deploy/ and the pinned versions agree on metrics and sampling: Jaeger's config (alone and
//! with either tail-sampling file merged) uses only components and keys Jaeger 2.15.0 builds and
//! accepts, its pipelines are wired, its Monitor tab queries the names its exporter writes,
//! Prometheus scrapes that exporter, the strategies file it serves is mounted, every container
//! has a memory limit, the runtimes' heaps fit under theirs, the RAM budget in deploy/README.md
//! is compose's and fits in 3.5 GiB, and `max_traces` fits checkouts measured here.

mod memory;
mod pinned;

use std::collections::{BTreeMap, BTreeSet};

use ordertrail_shared::telemetry::Sampling;
use serde_yaml_ng::Value as Yaml;

use crate::deploy::{compose, read, repo, string};
use pinned::{ACCEPTED_SETTINGS, JAEGER_COMPONENTS, TAIL_SAMPLING_POLICIES};

const JAEGER_CONFIG: &str = "deploy/jaeger/config.yaml";
const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";

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
    // The switch names a file: exactly "on" and "off" have one (any other value is a Jaeger
    // that does not start, as .env.example says).
    let switches: BTreeSet<String> = std::fs::read_dir(repo("deploy/jaeger"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let switch = name.strip_prefix("tail-sampling-")?.strip_suffix(".yaml")?;
            Some(switch.to_owned())
        })
        .collect();
    assert_eq!(switches, BTreeSet::from(["off".into(), "on".into()]));
    assert!(
        read(".env.example").contains("`on` or `off`"),
        ".env.example says which values JAEGER_TAIL_SAMPLING takes"
    );

    // Off: the overlay adds nothing; Jaeger stores what it receives.
    let base: Yaml = serde_yaml_ng::from_str(&read(JAEGER_CONFIG)).unwrap();
    assert_eq!(jaeger_config("off"), base);
    let stored = |config: &Yaml| strings(&config["service"]["pipelines"]["traces"]["processors"]);
    assert!(!stored(&base).contains(&"tail_sampling".to_owned()));

    // On: tail sampling before the store, and only there: the span metrics see every span.
    // Either way the memory limiter comes first in every pipeline, so that an overload is
    // refused at the receiver before any processor holds it.
    let on = jaeger_config("on");
    assert_eq!(stored(&on)[..2], ["memory_limiter", "tail_sampling"]);
    for config in [&base, &on] {
        for (name, pipeline) in config["service"]["pipelines"].as_mapping().unwrap() {
            assert_eq!(
                strings(&pipeline["processors"]).first().map(String::as_str),
                Some("memory_limiter"),
                "{name:?}: the memory limiter first"
            );
        }
    }
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
fn one_setting_switches_compose_to_jaegers_sampling_strategies() {
    let compose = compose();
    let environment = &compose["services"]["gateway"]["environment"];
    let sampler = default_of(&string(&environment["OTEL_TRACES_SAMPLER"]));
    let arg = default_of(&string(&environment["OTEL_TRACES_SAMPLER_ARG"]));
    let sampling = |sampler: &str| {
        let mut warnings = Vec::new();
        let sampling = Sampling::from_vars(Some(sampler), Some(&arg), &mut warnings);
        (sampling, warnings)
    };
    // The default sampler ignores the argument, and says nothing about it.
    assert_eq!(sampling(&sampler), (Sampling::AlwaysOn, Vec::new()));

    // Switched: Jaeger's strategies on the Compose network, every trace until the first answer.
    let (switched, warnings) = sampling("parentbased_jaeger_remote");
    assert!(warnings.is_empty(), "{warnings:?}");
    let Sampling::JaegerRemote(remote) = switched else {
        panic!("{switched:?}")
    };
    let endpoint = reqwest::Url::parse(&remote.endpoint).unwrap();
    let served = string(&jaeger_config("off")["extensions"]["remote_sampling"]["http"]["endpoint"]);
    assert_eq!(endpoint.host_str(), Some("jaeger"), "{endpoint}");
    assert_eq!(endpoint.port(), Some(port(&served)), "{endpoint}");
    assert!(compose["services"]["jaeger"].is_mapping());
    assert_eq!(remote.initial_sampling_rate, 1.0);
    // .env.example leaves the argument to compose.
    let example = read(".env.example");
    assert!(
        !example
            .lines()
            .any(|line| line.starts_with("OTEL_TRACES_SAMPLER_ARG=")),
        ".env.example sets OTEL_TRACES_SAMPLER_ARG"
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

//! deploy/k8s/ and the telemetry agree: every signal the services export reaches a Jaeger
//! pipeline that receives it; the Monitor tab reads, through Prometheus, what every collector's
//! exporter writes, with compose's settings; switching the services' sampler alone fetches the
//! strategies every collector serves from compose's file; stack-check's Job is given and may
//! reach every URL stack-check reads; each Jaeger's Go runtime is bounded under its limit;
//! collectors behind an autoscaler let their gRPC connections go.

use std::collections::BTreeSet;

use ordertrail_shared::telemetry::Sampling;
use serde_json::Value;

use super::{
    OVERLAYS, allowed, build, container, environment, find, host_port, of_kind, selects, strings,
};
use crate::deploy::{compose, read, string, variables_of};

/// The pod template of a Deployment, StatefulSet, Job or CronJob.
pub(super) fn pod(workload: &Value) -> &Value {
    match workload["kind"].as_str() {
        Some("CronJob") => &workload["spec"]["jobTemplate"]["spec"]["template"],
        _ => &workload["spec"]["template"],
    }
}

/// The labels of a workload's pods.
pub(super) fn labels(workload: &Value) -> &Value {
    &pod(workload)["metadata"]["labels"]
}

/// Every workload the overlay runs.
pub(super) fn workloads(objects: &[Value]) -> impl Iterator<Item = &Value> {
    objects.iter().filter(|o| {
        ["Deployment", "StatefulSet", "Job", "CronJob"].contains(&o["kind"].as_str().unwrap_or(""))
    })
}

/// The workloads behind a Service, each with the container port its `port` leads to.
pub(super) fn behind<'a>(objects: &'a [Value], service: &str, port: u16) -> Vec<(&'a Value, u16)> {
    let service = find(objects, "Service", service);
    let target = &service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("Service {} has no port {port}", service["metadata"]["name"]))["targetPort"];
    let selector = serde_json::json!({"matchLabels": service["spec"]["selector"]});
    let found: Vec<(&Value, u16)> = workloads(objects)
        .filter(|w| selects(&selector, labels(w)))
        .map(|w| {
            let number = match target.as_u64() {
                Some(number) => number,
                None => {
                    pod(w)["spec"]["containers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                        .find(|p| p["name"] == *target)
                        .unwrap_or_else(|| panic!("{} has no port {target}", w["metadata"]["name"]))
                        ["containerPort"]
                        .as_u64()
                        .unwrap()
                }
            };
            (w, u16::try_from(number).unwrap())
        })
        .collect();
    assert!(
        !found.is_empty(),
        "Service {} selects no pod",
        service["metadata"]["name"]
    );
    found
}

/// The Jaeger configuration a workload starts with: the file after `--config`.
pub(super) fn jaeger_config(objects: &[Value], workload: &Value) -> Value {
    let args = strings(&pod(workload)["spec"]["containers"][0]["args"]);
    mounted(
        objects,
        workload,
        args[args.iter().position(|a| *a == "--config").unwrap() + 1],
    )
}

/// The YAML file at `path` in a workload's container, from the ConfigMap mounted there.
fn mounted(objects: &[Value], workload: &Value, path: &str) -> Value {
    let spec = &pod(workload)["spec"];
    let container = &spec["containers"][0];
    let (folder, file) = path.rsplit_once('/').unwrap();
    let (volume, key) = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|mount| {
            let at = mount["mountPath"].as_str().unwrap();
            match mount["subPath"].as_str() {
                Some(sub) if at == path => Some((&mount["name"], sub)),
                None if at == folder => Some((&mount["name"], file)),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("nothing mounted at {path}"));
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == *volume)
        .unwrap();
    let map = find(
        objects,
        "ConfigMap",
        volume["configMap"]["name"].as_str().unwrap(),
    );
    serde_yaml_ng::from_str(map["data"][key].as_str().unwrap()).unwrap()
}

/// The type of a pipeline or component id (`traces/spanmetrics` -> `traces`).
fn type_of(id: &str) -> &str {
    id.split('/').next().unwrap()
}

/// The port of an endpoint (`0.0.0.0:8889`).
fn port_of(endpoint: &Value) -> u16 {
    endpoint
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The names of the pipelines of `signal` that start at `receiver`.
fn pipelines_from<'a>(config: &'a Value, signal: &str, receiver: &str) -> Vec<&'a str> {
    config["service"]["pipelines"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, pipeline)| {
            type_of(name) == signal && strings(&pipeline["receivers"]).contains(&receiver)
        })
        .map(|(name, _)| name.as_str())
        .collect()
}

#[test]
fn every_signal_the_services_export_reaches_a_jaeger_pipeline_that_receives_it() {
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        for (role, _) in super::PORTS {
            let environment = environment(&objects, container(find(&objects, "Deployment", role)));
            let value = |name: &str| environment.get(name).cloned().flatten();
            if value("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                continue;
            }
            // As shared::telemetry reads them: spans always, metrics unless turned off; logs go
            // to stdout, never over OTLP.
            let mut signals = vec![("traces", value("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))];
            if value("OTEL_METRICS_EXPORTER").as_deref() != Some("none") {
                signals.push(("metrics", value("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")));
            }
            for (signal, endpoint) in signals {
                let endpoint = endpoint
                    .or_else(|| value("OTEL_EXPORTER_OTLP_ENDPOINT"))
                    .unwrap();
                let (host, port) = host_port(&endpoint);
                for (jaeger, container_port) in behind(&objects, host, port) {
                    let config = jaeger_config(&objects, jaeger);
                    let name = &jaeger["metadata"]["name"];
                    assert_eq!(
                        port_of(&config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]),
                        container_port,
                        "{overlay}: {name} receives OTLP/gRPC where {endpoint} leads"
                    );
                    assert!(
                        !pipelines_from(&config, signal, "otlp").is_empty(),
                        "{overlay}: {role} exports {signal} to {endpoint}, and {name} has no \
                         {signal} pipeline receiving otlp: it refuses every export"
                    );
                }
            }
        }
    }
}

#[test]
fn the_monitor_tab_reads_through_prometheus_what_every_collector_exports_as_in_compose() {
    let compose: Value = serde_yaml_ng::from_str(&read("deploy/jaeger/config.yaml")).unwrap();
    let ui: Value = serde_json::from_str(&read("deploy/jaeger/ui-config.json")).unwrap();
    let compose_backend = compose["extensions"]["jaeger_query"]["storage"]["metrics"]
        .as_str()
        .unwrap();
    let compose_prometheus =
        &compose["extensions"]["jaeger_storage"]["metric_backends"][compose_backend]["prometheus"];
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        let policies: Vec<&Value> = of_kind(&objects, "NetworkPolicy").collect();

        // The query asks Prometheus for the span metrics, under compose's names.
        for (query, _) in behind(&objects, "jaeger-query", 16686) {
            let config = jaeger_config(&objects, query);
            let backend = config["extensions"]["jaeger_query"]["storage"]["metrics"].as_str();
            if ui["monitor"]["menuEnabled"] != true && backend.is_none() {
                continue;
            }
            let backend = backend.unwrap_or_else(|| {
                panic!(
                    "{overlay}: the UI shows the Monitor tab (deploy/jaeger/ui-config.json) and \
                     the query has no metrics storage"
                )
            });
            let prometheus =
                &config["extensions"]["jaeger_storage"]["metric_backends"][backend]["prometheus"];
            for (key, value) in compose_prometheus.as_object().unwrap() {
                if key != "endpoint" {
                    assert_eq!(&prometheus[key], value, "{overlay}: {key} as in compose");
                }
            }
            let (host, port) = host_port(prometheus["endpoint"].as_str().unwrap());
            for (store, container_port) in behind(&objects, host, port) {
                assert_eq!(store["metadata"]["name"], "prometheus");
                assert!(
                    allowed(&policies, labels(query), labels(store), container_port),
                    "{overlay}: the query may not ask Prometheus"
                );
            }
        }

        // Every collector makes compose's span metrics and serves them on its exporter's port,
        // where Prometheus scrapes each collector pod.
        let prometheus = find(&objects, "StatefulSet", "prometheus");
        let scrape = {
            let args = strings(&container(prometheus)["args"]);
            let path = args
                .iter()
                .find_map(|a| a.strip_prefix("--config.file="))
                .unwrap();
            mounted(&objects, prometheus, path)
        };
        for (collector, _) in behind(&objects, "jaeger-collector", 4317) {
            let config = jaeger_config(&objects, collector);
            for (section, id) in [("connectors", "spanmetrics"), ("exporters", "prometheus")] {
                assert_eq!(
                    config[section][id], compose[section][id],
                    "{overlay}: {section}.{id} as in compose"
                );
            }
            let spans_to_metrics = config["service"]["pipelines"]
                .as_object()
                .unwrap()
                .iter()
                .any(|(name, p)| {
                    type_of(name) == "traces" && strings(&p["exporters"]).contains(&"spanmetrics")
                });
            assert!(
                spans_to_metrics,
                "{overlay}: no traces pipeline feeds spanmetrics"
            );
            let to_exporter = config["service"]["pipelines"]
                .as_object()
                .unwrap()
                .iter()
                .any(|(name, p)| {
                    type_of(name) == "metrics"
                        && strings(&p["receivers"]).contains(&"spanmetrics")
                        && strings(&p["receivers"]).contains(&"otlp")
                        && strings(&p["exporters"]).contains(&"prometheus")
                });
            assert!(
                to_exporter,
                "{overlay}: span and OTLP metrics do not reach the exporter"
            );

            let exporter = port_of(&config["exporters"]["prometheus"]["endpoint"]);
            let own = &config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
                ["prometheus"]["port"];
            let own = u16::try_from(own.as_u64().unwrap()).unwrap();
            for (port, job) in [(exporter, "jaeger-exporter"), (own, "jaeger")] {
                let job = scrape["scrape_configs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|j| j["job_name"] == job)
                    .unwrap_or_else(|| panic!("{overlay}: no scrape job {job}"));
                let sd = &job["dns_sd_configs"][0];
                let service = sd["names"][0].as_str().unwrap();
                let headless = find(&objects, "Service", service);
                assert_eq!(
                    headless["spec"]["clusterIP"], "None",
                    "{service}: one address per pod"
                );
                let sd_port = u16::try_from(sd["port"].as_u64().unwrap()).unwrap();
                let pods = behind(&objects, service, sd_port);
                assert!(
                    pods.iter()
                        .any(|(w, p)| w["metadata"] == collector["metadata"] && *p == port),
                    "{overlay}: {service}:{sd_port} does not lead to {} on {port}",
                    collector["metadata"]["name"]
                );
                assert!(
                    allowed(&policies, labels(prometheus), labels(collector), port),
                    "{overlay}: Prometheus may not scrape {} on {port}",
                    collector["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn switching_the_sampler_alone_fetches_the_strategies_every_collector_serves_as_compose_does() {
    let compose: Value = serde_yaml_ng::from_str(&read("deploy/jaeger/config.yaml")).unwrap();
    let compose_sampling = &compose["extensions"]["remote_sampling"];
    let strategies: Value =
        serde_json::from_str(&read("deploy/jaeger/sampling-strategies.json")).unwrap();
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        let policies: Vec<&Value> = of_kind(&objects, "NetworkPolicy").collect();
        for (role, _) in super::PORTS {
            let deployment = find(&objects, "Deployment", role);
            let environment = environment(&objects, container(deployment));
            let value = |name: &str| environment.get(name).cloned().flatten();
            let arg = value("OTEL_TRACES_SAMPLER_ARG");
            let sampling = |sampler: &str| {
                let mut warnings = Vec::new();
                let sampling = Sampling::from_vars(Some(sampler), arg.as_deref(), &mut warnings);
                (sampling, warnings)
            };
            // As set: every trace, and the argument ignored without a word.
            let sampler = value("OTEL_TRACES_SAMPLER").unwrap();
            assert_eq!(
                sampling(&sampler),
                (Sampling::AlwaysOn, Vec::new()),
                "{overlay} {role}"
            );

            // Switched alone: a collector's strategies, every trace until the first answer.
            let (switched, warnings) = sampling("parentbased_jaeger_remote");
            assert!(warnings.is_empty(), "{overlay} {role}: {warnings:?}");
            let Sampling::JaegerRemote(remote) = switched else {
                panic!("{overlay} {role}: {switched:?}")
            };
            assert_eq!(remote.initial_sampling_rate, 1.0, "{overlay} {role}");
            let (host, port) = host_port(&remote.endpoint);
            for (jaeger, container_port) in behind(&objects, host, port) {
                let name = &jaeger["metadata"]["name"];
                let config = jaeger_config(&objects, jaeger);
                assert!(
                    strings(&config["service"]["extensions"]).contains(&"remote_sampling"),
                    "{overlay}: {name} serves no strategies"
                );
                let served = &config["extensions"]["remote_sampling"];
                assert_eq!(
                    port_of(&served["http"]["endpoint"]),
                    container_port,
                    "{overlay}: {name} serves its strategies where {} leads",
                    remote.endpoint
                );
                assert_eq!(
                    served["file"]["reload_interval"], compose_sampling["file"]["reload_interval"],
                    "{overlay}: {name} rereads the file as compose's Jaeger does"
                );
                let path = served["file"]["path"].as_str().unwrap();
                assert_eq!(
                    mounted(&objects, jaeger, path),
                    strategies,
                    "{overlay}: {name}'s {path} is deploy/jaeger/sampling-strategies.json"
                );
                assert!(
                    allowed(
                        &policies,
                        labels(deployment),
                        labels(jaeger),
                        container_port
                    ),
                    "{overlay}: {role} may not fetch the strategies from {name}"
                );
            }
        }
    }
}

#[test]
fn stack_checks_job_is_given_and_reaches_every_url_stack_check_reads() {
    let urls: Vec<String> = variables_of(env!("CARGO_BIN_EXE_stack-check"), &[])
        .into_iter()
        .filter(|name| name.ends_with("_URL"))
        .collect();
    assert!(urls.contains(&"PROMETHEUS_URL".to_owned()), "{urls:?}");
    for overlay in OVERLAYS {
        let Some(mut objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        objects.extend(build(&format!("overlays/{overlay}/stack-check")).unwrap());
        let policies: Vec<&Value> = of_kind(&objects, "NetworkPolicy").collect();
        let job = find(&objects, "Job", "stack-check");
        let environment = environment(&objects, container(job));
        for name in &urls {
            let url = environment.get(name).cloned().flatten().unwrap_or_else(|| {
                panic!("{overlay}: the Job sets no {name}: stack-check would ask localhost")
            });
            let (host, port) = host_port(&url);
            // ECK's Service of an Elasticsearch: its pods' HTTP port.
            let (to, port) = match host.strip_suffix("-es-http") {
                Some(cluster) => {
                    let elasticsearch = find(&objects, "Elasticsearch", cluster);
                    let labels =
                        elasticsearch["spec"]["nodeSets"][0]["podTemplate"]["metadata"]["labels"]
                            .clone();
                    (labels, port)
                }
                None => {
                    let (workload, port) = behind(&objects, host, port)[0];
                    (labels(workload).clone(), port)
                }
            };
            assert!(
                allowed(&policies, labels(job), &to, port),
                "{overlay}: stack-check may not reach {name}={url}"
            );
        }
    }
}

/// A Kubernetes quantity or a Go size (`512Mi`, `1Gi`, `400MiB`) in bytes.
pub(super) fn bytes(size: &str) -> u64 {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let shift = match &size[digits.len()..] {
        "Ki" | "KiB" => 10,
        "Mi" | "MiB" => 20,
        "Gi" | "GiB" => 30,
        other => panic!("unit {other:?} of {size:?}"),
    };
    digits.parse::<u64>().unwrap() << shift
}

/// The memory limit of a container.
pub(super) fn memory_limit(container: &Value) -> u64 {
    bytes(container["resources"]["limits"]["memory"].as_str().unwrap())
}

#[test]
fn every_jaeger_collects_its_garbage_before_its_limit_and_holds_compose_s_traces_per_byte() {
    // Compose's sizing, measured (tests/e2e/deploy_metrics/memory.rs): max_traces checkouts fit
    // in half of its GOMEMLIMIT.
    let compose_jaeger: Value =
        serde_yaml_ng::from_str(&read("deploy/jaeger/config.yaml")).unwrap();
    let compose_traces = compose_jaeger["extensions"]["jaeger_storage"]["backends"]["memstore"]
        ["memory"]["max_traces"]
        .as_u64()
        .unwrap();
    let compose_limit = string(&compose()["services"]["jaeger"]["environment"]["GOMEMLIMIT"]);
    let compose_limit = bytes(
        compose_limit
            .split_once(":-")
            .map_or(compose_limit.as_str(), |(_, default)| {
                default.trim_end_matches('}')
            }),
    );
    let mut checked = 0;
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        for workload in workloads(&objects) {
            let container = &pod(workload)["spec"]["containers"][0];
            if !container["image"]
                .as_str()
                .unwrap()
                .starts_with("jaegertracing/jaeger:")
            {
                continue;
            }
            let name = &workload["metadata"]["name"];
            let environment = environment(&objects, container);
            let gomemlimit = environment
                .get("GOMEMLIMIT")
                .cloned()
                .flatten()
                .unwrap_or_else(|| panic!("{overlay} {name}: no GOMEMLIMIT, so Go collects late and the kernel kills it at its limit"));
            let gomemlimit = bytes(&gomemlimit);
            assert!(
                gomemlimit <= memory_limit(container) * 85 / 100,
                "{overlay} {name}: GOMEMLIMIT leaves room under its limit"
            );
            let config = jaeger_config(&objects, workload);
            for (backend, settings) in config["extensions"]["jaeger_storage"]["backends"]
                .as_object()
                .unwrap()
            {
                if let Some(traces) = settings["memory"]["max_traces"].as_u64() {
                    assert!(
                        u128::from(traces) * u128::from(compose_limit)
                            <= u128::from(compose_traces) * u128::from(gomemlimit),
                        "{overlay} {name}: {backend} keeps more traces per byte of GOMEMLIMIT \
                         than compose's measured sizing"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "dev's Jaeger, prod's collector and query");
}

/// A collector duration (`1m`, `30s`) in seconds.
fn seconds(duration: &str) -> u64 {
    let (number, unit) = duration.split_at(duration.len() - 1);
    number.parse::<u64>().unwrap() * if unit == "m" { 60 } else { 1 }
}

#[test]
fn autoscaled_collectors_let_grpc_connections_go_so_that_new_ones_get_load() {
    let mut checked = BTreeSet::new();
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        for (collector, _) in behind(&objects, "jaeger-collector", 4317) {
            let name = collector["metadata"]["name"].as_str().unwrap();
            let autoscaled = of_kind(&objects, "HorizontalPodAutoscaler").any(|hpa| {
                hpa["spec"]["scaleTargetRef"]["name"] == name
                    && hpa["spec"]["maxReplicas"].as_u64().unwrap() > 1
            });
            if !autoscaled && collector["spec"]["replicas"].as_u64().unwrap_or(1) <= 1 {
                continue;
            }
            let config = jaeger_config(&objects, collector);
            let age =
                config["receivers"]["otlp"]["protocols"]["grpc"]["keepalive"]["server_parameters"]
                    ["max_connection_age"]
                    .as_str()
                    .unwrap_or_else(|| {
                        panic!(
                            "{overlay} {name}: several replicas and no max_connection_age: each \
                         service pod stays on the collector it first reached"
                        )
                    });
            assert!(seconds(age) <= 300, "{overlay} {name}: {age}");
            checked.insert(overlay);
        }
    }
    assert!(checked.contains("prod"), "prod's collectors are autoscaled");
}

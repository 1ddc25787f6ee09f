//! deploy/ and the code agree: every file parses, every field the services log is mapped in
//! the component template both index templates are composed of, Logstash routes the datasets the services emit, and compose runs each
//! role with the variables, ports and upstreams the binary reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

use crate::support::{DECLINED_CARD, GOOD_CARD, ROLES, TestStack, order};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
}

/// The compose file with its `<<` merges applied.
fn compose() -> Yaml {
    let mut compose: Yaml = serde_yaml_ng::from_str(&read("docker-compose.yml")).unwrap();
    compose.apply_merge().unwrap();
    for (_, service) in compose["services"].as_mapping_mut().unwrap().iter_mut() {
        service.apply_merge().unwrap();
        if let Some(environment) = service.get_mut("environment") {
            environment.apply_merge().unwrap();
        }
    }
    compose
}

/// The dotted names of every field mapped under `properties`, objects included.
fn mapped_fields(properties: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    for (name, mapping) in properties.as_object().unwrap() {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        out.insert(path.clone());
        if let Some(inner) = mapping.get("properties") {
            mapped_fields(inner, &path, out);
        }
    }
}

/// The dotted names of every field the template at `path` maps.
pub fn template_fields(path: &str) -> BTreeSet<String> {
    let template: Value = serde_json::from_str(&read(path)).unwrap();
    let mut fields = BTreeSet::new();
    mapped_fields(
        &template["template"]["mappings"]["properties"],
        "",
        &mut fields,
    );
    fields
}

/// The environment variables a command of the binary reads, from its `--help`.
fn variables_of(binary: &str, args: &[&str]) -> BTreeSet<String> {
    let help = Command::new(binary)
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_owned())
        .collect()
}

fn string(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

#[test]
fn every_file_under_deploy_parses() {
    let mut files = Vec::new();
    files_under(&repo("deploy"), &mut files);
    let mut parsed = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.display();
        match file.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            Some("ndjson") => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{name}: {e}"));
                }
            }
            Some("yaml" | "yml") => {
                serde_yaml_ng::from_str::<Yaml>(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            _ => continue,
        }
        parsed += 1;
    }
    assert!(
        parsed >= 9,
        "only {parsed} JSON/NDJSON/YAML files under deploy/"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_the_services_log_is_mapped_and_routed() {
    let mut stack = TestStack::start().await;
    // Every path that logs: success, replay, decline, out of stock, bad input, reads, and a
    // service down.
    stack
        .post_order(&order("TRAIL-MUG", 1, GOOD_CARD), Some("k"), None)
        .await;
    stack
        .post_order(&order("TRAIL-MUG", 1, GOOD_CARD), Some("k"), None)
        .await;
    stack
        .post_order(&order("TRAIL-MUG", 1, DECLINED_CARD), None, None)
        .await;
    stack
        .post_order(&order("TRAIL-MAP", 99, GOOD_CARD), None, None)
        .await;
    stack
        .post_order(&order("TRAIL-MUG", 1, "4242424242424241"), None, None)
        .await;
    stack.get("/api/orders/none").await;
    stack.stop("payment").await;
    stack
        .post_order(&order("TRAIL-MUG", 1, GOOD_CARD), None, None)
        .await;
    let logs = stack.logs();

    let logged: BTreeSet<String> = logs
        .iter()
        .flat_map(|line| line.as_object().unwrap().keys().cloned())
        .collect();
    let mapped = template_fields("deploy/elasticsearch/ordertrail-mappings.json");
    let unmapped: Vec<&String> = logged
        .iter()
        .filter(|field| !mapped.contains(*field))
        .collect();
    assert!(
        unmapped.is_empty(),
        "ordertrail-mappings.json does not map {unmapped:?}"
    );
    for template in [
        "deploy/elasticsearch/logs-template.json",
        "deploy/elasticsearch/audit-template.json",
    ] {
        let template: Value = serde_json::from_str(&read(template)).unwrap();
        let composed = template["composed_of"].as_array().unwrap();
        assert!(
            composed.contains(&"ordertrail-mappings".into()),
            "{template} does not use the mappings"
        );
    }

    let datasets: BTreeSet<&str> = logs
        .iter()
        .map(|line| line["event.dataset"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<String> = ROLES
        .iter()
        .map(|role| format!("ordertrail.{role}"))
        .chain(["ordertrail.audit".to_owned()])
        .collect();
    assert_eq!(
        datasets,
        expected.iter().map(String::as_str).collect(),
        "the datasets the services emit"
    );
    let pipeline = read("deploy/logstash/pipeline/ordertrail.conf");
    assert!(
        pipeline.contains(r#"[event.dataset] == "ordertrail.audit""#),
        "Logstash routes the audit dataset by its dotted key"
    );
    assert!(pipeline.contains("codec => json_lines") && pipeline.contains("port => 5000"));
}

#[test]
fn compose_runs_each_role_with_the_variables_ports_and_upstreams_the_binary_reads() {
    let compose = compose();
    let services = &compose["services"];
    let binary = env!("CARGO_BIN_EXE_ordertrail");
    let ports = BTreeMap::from([
        ("gateway", 8080),
        ("order", 8081),
        ("payment", 8082),
        ("inventory", 8083),
    ]);
    let telemetry: BTreeSet<String> = ordertrail_shared::telemetry::VARIABLES
        .iter()
        .map(|v| (*v).to_owned())
        .collect();

    for (role, port) in &ports {
        let service = &services[*role];
        let command: Vec<String> = service["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(string)
            .collect();
        assert_eq!(command, ["ordertrail", "serve", role], "{role}'s command");

        let reads: BTreeSet<String> = variables_of(binary, &["serve", role])
            .union(&telemetry)
            .cloned()
            .collect();
        let environment: BTreeMap<String, String> = service["environment"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| (string(k), string(v)))
            .collect();
        let unread: Vec<&String> = environment.keys().filter(|k| !reads.contains(*k)).collect();
        assert!(
            unread.is_empty(),
            "{role} sets variables the binary does not read: {unread:?}"
        );

        assert_eq!(environment["LISTEN_ADDR"], format!("0.0.0.0:{port}"));
        assert_eq!(environment["OTEL_SERVICE_NAME"], *role);
        assert_eq!(
            environment["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://jaeger:4317"
        );
        assert_eq!(environment["LOGSTASH_ADDR"], "logstash:5000");
        for (variable, upstream) in [
            ("ORDER_URL", "order"),
            ("PAYMENT_URL", "payment"),
            ("INVENTORY_URL", "inventory"),
        ] {
            if let Some(url) = environment.get(variable) {
                assert_eq!(
                    *url,
                    format!("http://{upstream}:{}", ports[upstream]),
                    "{role} {variable}"
                );
            }
        }
        let health: Vec<String> = service["healthcheck"]["test"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(string)
            .collect();
        assert_eq!(
            health,
            [
                "CMD",
                "ordertrail",
                "healthcheck",
                &format!("http://127.0.0.1:{port}/health/ready")
            ]
        );
    }

    // stack-check reads only what compose gives it.
    let check = &services["e2e"];
    let reads = variables_of(env!("CARGO_BIN_EXE_stack-check"), &[]);
    for (key, _) in check["environment"].as_mapping().unwrap() {
        assert!(
            reads.contains(&string(key)),
            "e2e sets {key:?}, which stack-check does not read"
        );
    }

    // Only the gateway and the two UIs are published, on 127.0.0.1.
    let mut published = BTreeMap::new();
    for (name, service) in services.as_mapping().unwrap() {
        for port in service
            .get("ports")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
        {
            published.insert(string(name), string(port));
        }
    }
    let expected = BTreeMap::from([
        ("gateway".to_owned(), "127.0.0.1:8080:8080".to_owned()),
        ("jaeger".to_owned(), "127.0.0.1:16686:16686".to_owned()),
        ("kibana".to_owned(), "127.0.0.1:5601:5601".to_owned()),
    ]);
    assert_eq!(published, expected);

    // Jaeger listens where the services send, and links to Kibana; Kibana links back.
    let jaeger = read("deploy/jaeger/config.yaml");
    assert!(
        jaeger.contains(":4317"),
        "Jaeger's OTLP gRPC receiver is on 4317"
    );
    assert!(read("deploy/jaeger/ui-config.json").contains("http://localhost:5601/"));
    assert!(
        read("deploy/kibana/ordertrail.ndjson").contains("http://localhost:16686/trace/{{value}}")
    );
}

//! deploy/ and the code agree: every file parses, every field the services log is mapped in
//! the component template both index templates are composed of, Filebeat reads the four
//! services' stdout (and only theirs), decodes it without losing or doubling a field, and
//! sends it to the port of Logstash's beats input, Logstash routes the datasets the services
//! emit, and compose runs each role with the variables, ports and upstreams the binary reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

use crate::support::{DECLINED_CARD, GOOD_CARD, ROLES, TestStack, order};

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn read(path: &str) -> String {
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
pub fn compose() -> Yaml {
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
pub fn variables_of(binary: &str, args: &[&str]) -> BTreeSet<String> {
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

/// A Filebeat setting by its dotted path. Filebeat (go-ucfg) reads `a.b: x` and `a: {b: x}`
/// alike, so every split of the path into keys is tried.
fn setting<'a>(value: &'a Yaml, path: &str) -> Option<&'a Yaml> {
    fn lookup<'a>(value: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
        if path.is_empty() {
            return Some(value);
        }
        let mapping = value.as_mapping()?;
        (1..=path.len()).rev().find_map(|n| {
            mapping
                .get(path[..n].join(".").as_str())
                .and_then(|inner| lookup(inner, &path[n..]))
        })
    }
    lookup(value, &path.split('.').collect::<Vec<_>>())
}

/// The dotted paths of every setting in a Filebeat mapping; a list is a setting of its own.
fn settings_of(value: &Yaml, prefix: &str, out: &mut BTreeSet<String>) {
    match value.as_mapping() {
        Some(mapping) => {
            for (key, inner) in mapping {
                let key = string(key);
                let path = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                settings_of(inner, &path, out);
            }
        }
        None => {
            out.insert(prefix.to_owned());
        }
    }
}

/// Fails if `value` holds a setting outside `known`: Filebeat ignores a misspelt setting
/// silently, so a typo would otherwise only show as a stack that ships nothing.
fn assert_known_settings(value: &Yaml, known: &[&str], what: &str) {
    let mut found = BTreeSet::new();
    settings_of(value, "", &mut found);
    let unknown: Vec<&String> = found
        .iter()
        .filter(|path| !known.contains(&path.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what}: unexpected settings {unknown:?}"
    );
}

fn filebeat() -> Yaml {
    serde_yaml_ng::from_str(&read(FILEBEAT_CONFIG)).unwrap()
}

/// The fields Filebeat drops with `drop_fields` processors (global ones run after it added
/// its own fields).
fn filebeat_drops(filebeat: &Yaml) -> Vec<String> {
    let processors = setting(filebeat, "processors").and_then(Yaml::as_sequence);
    processors
        .into_iter()
        .flatten()
        .filter_map(|p| setting(p, "drop_fields.fields"))
        .filter_map(Yaml::as_sequence)
        .flatten()
        .map(string)
        .collect()
}

/// Whether `field` is `dropped` or inside it.
fn is_within(field: &str, dropped: &str) -> bool {
    field == dropped || field.starts_with(&format!("{dropped}."))
}

/// The body of each plugin in a section (`input`, `filter`, `output`) of a Logstash pipeline,
/// by plugin name; comments and quoted strings are skipped.
fn logstash_plugins(pipeline: &str, section: &str) -> Vec<(String, String)> {
    let code: String = pipeline
        .lines()
        .map(|line| line.split('#').next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let start = code
        .find(&format!("{section} {{"))
        .unwrap_or_else(|| panic!("no {section} section"));
    let mut plugins = Vec::new();
    let (mut depth, mut name, mut body, mut quoted) = (0, String::new(), String::new(), false);
    for c in code[start + section.len()..].chars() {
        if c == '"' {
            quoted = !quoted;
        }
        match c {
            '{' if !quoted => {
                depth += 1;
                if depth <= 2 {
                    body.clear();
                    continue;
                }
            }
            '}' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                if depth == 1 {
                    plugins.push((name.trim().to_owned(), body.clone()));
                    name.clear();
                    continue;
                }
            }
            _ => {}
        }
        match depth {
            1 => name.push(c),
            d if d >= 2 => body.push(c),
            _ => {}
        }
    }
    plugins
}

/// The value of `setting => value` in a Logstash plugin body.
fn logstash_setting(body: &str, setting: &str) -> Option<String> {
    body.lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(setting)?.trim().strip_prefix("=>"))
        .map(|value| value.trim().trim_matches('"').to_owned())
}

/// The port of the pipeline's beats input, and that it is the only input.
fn beats_port() -> u16 {
    let inputs = logstash_plugins(&read(LOGSTASH_PIPELINE), "input");
    let names: Vec<&str> = inputs.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["beats"],
        "Logstash's inputs: Filebeat's beats input only"
    );
    logstash_setting(&inputs[0].1, "port")
        .expect("the beats input's port")
        .parse()
        .unwrap()
}

pub fn string(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

const FILEBEAT_CONFIG: &str = "deploy/filebeat/filebeat.yml";
const LOGSTASH_PIPELINE: &str = "deploy/logstash/pipeline/ordertrail.conf";
const MAPPINGS: &str = "deploy/elasticsearch/ordertrail-mappings.json";

/// Every field Filebeat 8.19 adds to an event of the filestream input in filebeat.yml, beside
/// the decoded line, and where it comes from in Filebeat's source (elastic/beats). Each must be
/// dropped by filebeat.yml's processors or mapped.
const FILEBEAT_ADDS: [(&str, &str); 20] = [
    ("log.offset", "libbeat/reader/readfile/metafields.go"),
    ("log.file.path", "libbeat/reader/readfile/metafields.go"),
    (
        "log.file.device_id",
        "libbeat/reader/readfile/fs_metafields_other.go",
    ),
    (
        "log.file.inode",
        "libbeat/reader/readfile/fs_metafields_other.go",
    ),
    (
        "log.file.fingerprint",
        "metafields.go, with file_identity.fingerprint",
    ),
    (
        "stream",
        "container parser: libbeat/reader/readjson/docker_json.go",
    ),
    ("input.type", "filebeat/input/v2: the input's type"),
    (
        "container.id",
        "libbeat/autodiscover/providers/docker/docker.go",
    ),
    (
        "container.name",
        "libbeat/autodiscover/providers/docker/docker.go",
    ),
    (
        "container.image.name",
        "libbeat/autodiscover/providers/docker/docker.go",
    ),
    (
        "docker.container.labels",
        "libbeat/autodiscover/providers/docker/docker.go",
    ),
    (
        "agent.ephemeral_id",
        "libbeat/publisher/processing/default.go",
    ),
    ("agent.id", "libbeat/publisher/processing/default.go"),
    ("agent.name", "libbeat/publisher/processing/default.go"),
    ("agent.type", "libbeat/publisher/processing/default.go"),
    ("agent.version", "libbeat/publisher/processing/default.go"),
    ("host.name", "libbeat/publisher/processing/default.go"),
    // Added without overwriting: a line's own ecs.version stays (expand_keys makes it one).
    ("ecs.version", "libbeat/publisher/processing/default.go"),
    // ndjson add_error_key, on a line that is not JSON or whose @timestamp does not parse.
    (
        "error.message",
        "libbeat/common/jsontransform/jsonhelper.go",
    ),
    ("error.type", "libbeat/common/jsontransform/jsonhelper.go"),
];

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
        parsed >= 10,
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
    let mapped = template_fields(MAPPINGS);
    let unmapped: Vec<&String> = logged
        .iter()
        .filter(|field| !mapped.contains(*field))
        .collect();
    assert!(
        unmapped.is_empty(),
        "ordertrail-mappings.json does not map {unmapped:?}"
    );
    // Filebeat expands the dotted keys into objects (expand_keys), and Elasticsearch maps
    // them so: a key that is both a value and the object of another key cannot be expanded,
    // nor mapped.
    let clashes: Vec<(&String, &String)> = logged
        .iter()
        .flat_map(|a| logged.iter().map(move |b| (a, b)))
        .filter(|(a, b)| b.starts_with(&format!("{a}.")))
        .collect();
    assert!(
        clashes.is_empty(),
        "a field and its own sub-field: {clashes:?}"
    );

    // What Filebeat adds is dropped or mapped, and it drops nothing the services log.
    let drops = filebeat_drops(&filebeat());
    let kept: Vec<&str> = FILEBEAT_ADDS
        .iter()
        .map(|(field, _)| *field)
        .filter(|field| !drops.iter().any(|dropped| is_within(field, dropped)))
        .collect();
    let unmapped: Vec<&&str> = kept
        .iter()
        .filter(|field| !mapped.contains(**field))
        .collect();
    assert!(
        unmapped.is_empty(),
        "Filebeat adds {unmapped:?}: drop them in filebeat.yml or map them"
    );
    assert!(
        kept.contains(&"container.name"),
        "container.name is the only origin of a line that is not JSON"
    );
    let lost: Vec<(&String, &String)> = logged
        .iter()
        .flat_map(|field| drops.iter().map(move |dropped| (field, dropped)))
        .filter(|(field, dropped)| is_within(field, dropped))
        .collect();
    assert!(
        lost.is_empty(),
        "filebeat.yml drops fields the services log: {lost:?}"
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
    // Filebeat expands "event.dataset" into [event][dataset] before Logstash sees it.
    let filters = logstash_plugins(&read(LOGSTASH_PIPELINE), "filter");
    assert!(
        filters
            .iter()
            .any(|(name, _)| name.contains(r#"[event][dataset] == "ordertrail.audit""#)),
        "Logstash routes the audit dataset by its expanded field"
    );
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
        .chain(ordertrail_shared::db::VARIABLES)
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
        assert!(
            !environment.contains_key("LOGSTASH_ADDR"),
            "{role}: Filebeat ships the logs in compose, not the service"
        );
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

    // Only the gateway and the UIs (Jaeger, Kibana, Prometheus) are published, on 127.0.0.1.
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
        ("prometheus".to_owned(), "127.0.0.1:9090:9090".to_owned()),
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

#[test]
fn filebeat_reads_the_four_services_only_and_sends_to_the_beats_input() {
    let compose = compose();
    let services = &compose["services"];
    let filebeat = filebeat();

    assert_known_settings(
        &filebeat,
        &[
            "filebeat.autodiscover.providers",
            "filebeat.registry.path",
            "processors",
            "output.logstash.hosts",
            "output.logstash.backoff.init",
            "output.logstash.backoff.max",
            "queue.mem.events",
            "queue.mem.flush.min_events",
            "queue.mem.flush.timeout",
            "http.enabled",
            "http.host",
            "http.port",
        ],
        "filebeat.yml",
    );
    assert!(
        setting(&filebeat, "filebeat.inputs").is_none(),
        "a static input would read beyond the four services"
    );

    // Output: Logstash's beats input, on the compose service and the port it listens on.
    let hosts: Vec<String> = setting(&filebeat, "output.logstash.hosts")
        .and_then(Yaml::as_sequence)
        .expect("output.logstash.hosts")
        .iter()
        .map(string)
        .collect();
    assert_eq!(hosts, [format!("logstash:{}", beats_port())]);
    assert!(
        services["logstash"]["image"]
            .as_str()
            .unwrap()
            .starts_with("docker.elastic.co/logstash/logstash:")
    );

    // Input: the Docker provider, one filestream input per labelled container, scoped to that
    // container's log directory; the ECS JSON decoded as the pipeline and mappings expect.
    let providers = setting(&filebeat, "filebeat.autodiscover.providers")
        .and_then(Yaml::as_sequence)
        .expect("autodiscover providers");
    assert_eq!(providers.len(), 1);
    let provider = &providers[0];
    assert_known_settings(
        provider,
        &["type", "host", "cleanup_timeout", "templates"],
        "the autodiscover provider",
    );
    assert_eq!(provider["type"], "docker");
    let mut labels = BTreeSet::new();
    for template in provider["templates"].as_sequence().expect("templates") {
        let condition = setting(template, "condition.equals")
            .and_then(Yaml::as_mapping)
            .expect("a template on an equals condition");
        for (key, value) in condition {
            let label = string(key)
                .strip_prefix("docker.container.labels.")
                .expect("a condition on a container label")
                .to_owned();
            assert_eq!(string(value), "true");
            labels.insert(label);
        }
        for input in template["config"].as_sequence().expect("config") {
            assert_known_settings(
                input,
                &[
                    "type",
                    "id",
                    "paths",
                    "file_identity.native",
                    "backoff.init",
                    "backoff.max",
                    "parsers",
                ],
                "the filestream input",
            );
            assert_eq!(input["type"], "filestream");
            assert!(
                string(&input["id"]).contains("${data.docker.container.id}"),
                "one input id per container, or the registry mixes their positions"
            );
            for path in input["paths"].as_sequence().expect("paths") {
                assert!(
                    string(path)
                        .starts_with("/var/lib/docker/containers/${data.docker.container.id}/"),
                    "{path:?} reads beyond the matched container"
                );
            }
            let parsers = input["parsers"].as_sequence().expect("parsers");
            let names: Vec<String> = parsers
                .iter()
                .map(|p| string(p.as_mapping().unwrap().keys().next().unwrap()))
                .collect();
            assert_eq!(
                names,
                ["container", "ndjson"],
                "Docker's format, then the line"
            );
            let ndjson = &parsers[1]["ndjson"];
            assert_eq!(ndjson["target"], "", "the line's fields at the top level");
            for option in ["overwrite_keys", "expand_keys", "add_error_key"] {
                assert_eq!(ndjson[option], Yaml::Bool(true), "ndjson {option}");
            }
        }
    }
    let label = labels.into_iter().collect::<Vec<_>>();
    assert_eq!(
        label.len(),
        1,
        "one label selects the containers: {label:?}"
    );
    let label = &label[0];

    // Only the four services carry the label, and they log to json-file (Filebeat's path).
    let mut labelled = BTreeSet::new();
    for (name, service) in services.as_mapping().unwrap() {
        if service["labels"][label.as_str()] == "true" {
            labelled.insert(string(name));
            assert_eq!(service["logging"]["driver"], "json-file", "{name:?}");
        }
    }
    assert_eq!(
        labelled,
        ROLES.iter().map(|r| (*r).to_owned()).collect(),
        "containers whose stdout Filebeat reads"
    );

    // Compose: the config and the logs read-only, the registry on a named volume, same
    // version as the rest of the Elastic stack, started after Logstash is healthy.
    let service = &services["filebeat"];
    let image = string(&service["image"]);
    let (repository, tag) = image.split_once(':').unwrap();
    assert_eq!(repository, "docker.elastic.co/beats/filebeat");
    assert_eq!(
        string(&services["logstash"]["image"])
            .split_once(':')
            .unwrap()
            .1,
        tag,
        "Filebeat runs the Elastic stack's version"
    );
    let volumes: Vec<String> = service["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(string)
        .collect();
    for mount in [
        format!("./{FILEBEAT_CONFIG}:/usr/share/filebeat/filebeat.yml:ro"),
        "/var/lib/docker/containers:/var/lib/docker/containers:ro".to_owned(),
        "/var/run/docker.sock:/var/run/docker.sock:ro".to_owned(),
    ] {
        assert!(volumes.contains(&mount), "filebeat mounts {mount}");
    }
    let data = volumes
        .iter()
        .find_map(|v| v.strip_suffix(":/usr/share/filebeat/data"))
        .expect("the registry's volume");
    assert!(
        compose["volumes"].get(data).is_some(),
        "{data} is a named volume"
    );
    assert!(
        string(setting(&filebeat, "filebeat.registry.path").unwrap()).starts_with("${path.data}/")
    );
    let writable: Vec<&String> = volumes
        .iter()
        .filter(|v| !v.ends_with(":ro") && !v.starts_with(&format!("{data}:")))
        .collect();
    assert!(
        writable.is_empty(),
        "filebeat writes only its registry: {writable:?}"
    );
    assert_eq!(service["user"], "root");
    assert_eq!(service["cap_drop"][0], "ALL");
    assert_eq!(
        service["depends_on"]["logstash"]["condition"],
        "service_healthy"
    );
    assert!(
        service["mem_limit"].as_str().is_some(),
        "filebeat has a memory limit"
    );
    let health = service["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(string)
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(setting(&filebeat, "http.enabled"), Some(&Yaml::Bool(true)));
    let endpoint = format!(
        "http://{}:{}/",
        string(setting(&filebeat, "http.host").unwrap()),
        string(setting(&filebeat, "http.port").unwrap())
    );
    assert!(health.contains(&endpoint), "healthcheck asks {endpoint}");
    assert_eq!(
        services["e2e"]["depends_on"]["filebeat"]["condition"],
        "service_healthy"
    );
}

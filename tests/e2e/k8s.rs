//! deploy/k8s/ and the code agree: each overlay builds with `kubectl kustomize`; the services
//! run with only variables the binary reads, on the ports and health routes it serves, with a
//! grace period longer than its drain and flush; the NetworkPolicies allow exactly the calls
//! the configured URLs make; every custom resource fits its operator's CRD schema
//! (deploy/k8s/schemas/); the setup Job gets every file and variable deploy/setup/setup.sh reads.
//! The telemetry path ([`telemetry`]), Elasticsearch's indices and Kibana ([`elastic`]), the
//! capacity figures ([`capacity`]) and the instructions ([`operations`]) have their own files. Skipped, with the reason printed, where
//! kubectl is not installed.

mod capacity;
mod elastic;
mod operations;
mod telemetry;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::deploy::variables_of;
use crate::support::{ROLES, TestStack};

const OVERLAYS: [&str; 2] = ["dev", "prod"];

/// The ports the services listen on, as compose publishes and calls them.
const PORTS: [(&str, u16); 4] = [
    ("gateway", 8080),
    ("order", 8081),
    ("payment", 8082),
    ("inventory", 8083),
];

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The objects `kubectl kustomize` builds from `dir` (under deploy/k8s), or `None` when kubectl
/// is missing. The setup ConfigMaps come from files outside deploy/k8s, hence the restrictor.
fn build(dir: &str) -> Option<Vec<Value>> {
    let output = match Command::new("kubectl")
        .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
        .arg(repo(&format!("deploy/k8s/{dir}")))
        .output()
    {
        Ok(output) => output,
        Err(err) => {
            eprintln!("skipped: kubectl is not installed here ({err}); .ci/run checks with it");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let objects: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|object| !object.is_null())
        .collect();
    assert!(!objects.is_empty(), "{dir} builds nothing");
    Some(objects)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// The one container of a workload's pod template.
fn container(workload: &Value) -> &Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "{}", workload["metadata"]["name"]);
    &containers[0]
}

/// Every variable a container gets, with its value where the manifests hold it: `env` values,
/// the data of `envFrom` ConfigMaps, and `None` for values from Secrets or the downward API.
fn environment(objects: &[Value], container: &Value) -> BTreeMap<String, Option<String>> {
    let mut variables = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .expect("envFrom ConfigMaps only, so that every variable is visible here");
        for (key, value) in find(objects, "ConfigMap", name)["data"]
            .as_object()
            .unwrap()
        {
            variables.insert(key.clone(), value.as_str().map(str::to_owned));
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        variables.insert(
            variable["name"].as_str().unwrap().to_owned(),
            variable["value"].as_str().map(str::to_owned),
        );
    }
    variables
}

/// `host` and `port` of an `http://host:port` URL.
fn host_port(url: &str) -> (&str, u16) {
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let authority = authority.rsplit('@').next().unwrap();
    let (host, port) = authority.rsplit_once(':').unwrap();
    (host, port.parse().unwrap())
}

#[test]
fn every_overlay_runs_each_role_with_the_variables_ports_and_upstreams_the_binary_reads() {
    let binary = env!("CARGO_BIN_EXE_ordertrail");
    // What the shared library reads itself, besides each role's own options (its --help).
    let shared: BTreeSet<String> = ordertrail_shared::telemetry::VARIABLES
        .iter()
        .chain(ordertrail_shared::db::VARIABLES)
        .map(|v| (*v).to_owned())
        .collect();
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        for (role, port) in PORTS {
            let deployment = find(&objects, "Deployment", role);
            let container = container(deployment);
            assert_eq!(strings(&container["args"]), ["ordertrail", "serve", role]);
            let image = container["image"].as_str().unwrap();
            let repository = image.rsplit_once(':').unwrap().0;
            assert!(
                repository == "ordertrail" || repository.ends_with("/ordertrail"),
                "{overlay} {role}: the compose image, not {image}"
            );
            if overlay == "dev" {
                assert_eq!(image, "ordertrail:local", "the image compose builds");
            }

            let environment = environment(&objects, container);
            let reads: BTreeSet<String> = variables_of(binary, &["serve", role])
                .union(&shared)
                .cloned()
                .collect();
            let unread: Vec<&String> = environment.keys().filter(|k| !reads.contains(*k)).collect();
            assert!(
                unread.is_empty(),
                "{overlay} {role} sets variables the binary does not read: {unread:?}"
            );
            let value = |name: &str| environment[name].as_deref().unwrap();
            assert_eq!(value("OTEL_SERVICE_NAME"), role);
            assert_eq!(value("LISTEN_ADDR"), format!("0.0.0.0:{port}"));
            assert!(value("OTEL_RESOURCE_ATTRIBUTES").contains(overlay));
            assert_eq!(
                container["ports"],
                json!([{"name": "http", "containerPort": port}]),
                "{role} listens where its Service sends"
            );
            let service = find(&objects, "Service", role);
            assert_eq!(
                service["spec"]["ports"],
                json!([{"name": "http", "port": port, "targetPort": "http"}])
            );
            assert_eq!(
                environment.contains_key("DATABASE_URL"),
                role != "gateway",
                "{role}: a database URL from its Secret exactly when it owns a database"
            );

            // Every upstream URL names a Service of the stack on the port its pods listen on.
            for variable in ["ORDER_URL", "INVENTORY_URL", "PAYMENT_URL"] {
                if let Some(url) = environment.get(variable) {
                    let (host, port) = host_port(url.as_deref().unwrap());
                    let upstream = variable.trim_end_matches("_URL").to_lowercase();
                    assert_eq!(host, upstream, "{role} {variable}");
                    assert_eq!(
                        Some(&port),
                        PORTS.iter().find(|p| p.0 == host).map(|p| &p.1)
                    );
                }
            }
            let (host, port) = host_port(value("OTEL_EXPORTER_OTLP_ENDPOINT"));
            let collector = find(&objects, "Service", host);
            assert!(
                collector["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["port"] == port && p["name"] == "otlp-grpc"),
                "the OTLP endpoint is the collector's gRPC port"
            );
            assert_eq!(value("OTEL_EXPORTER_OTLP_PROTOCOL"), "grpc");
        }
    }

    // stack-check reads what its Job gives it.
    let reads = variables_of(env!("CARGO_BIN_EXE_stack-check"), &[]);
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}/stack-check")) else {
            return;
        };
        let job = find(&objects, "Job", "stack-check");
        let container = container(job);
        assert_eq!(strings(&container["args"]), ["stack-check"]);
        for name in environment(&objects, container).keys() {
            assert!(
                reads.contains(name),
                "stack-check's Job sets {name}, which stack-check does not read"
            );
        }
    }
}

/// The value of `const NAME: Duration = Duration::from_secs(N);` in a source file.
fn seconds_of(file: &str, name: &str) -> u64 {
    let source = std::fs::read_to_string(repo(file)).unwrap();
    let line = source
        .lines()
        .find(|line| line.contains(&format!("const {name}: Duration")))
        .unwrap_or_else(|| panic!("{name} in {file}"));
    line.split("from_secs(")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_ask_the_health_routes_and_the_grace_period_outlasts_drain_and_flush() {
    let drain = seconds_of("shared/src/http/service.rs", "DRAIN_TIMEOUT");
    let flush = seconds_of("shared/src/telemetry/mod.rs", "SHUTDOWN_TIMEOUT");
    let mut paths = BTreeSet::new();
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        for (role, _) in PORTS {
            let deployment = find(&objects, "Deployment", role);
            let container = container(deployment);
            for (probe, path) in [
                ("readinessProbe", "/health/ready"),
                ("livenessProbe", "/health/live"),
                ("startupProbe", "/health/live"),
            ] {
                assert_eq!(
                    container[probe]["httpGet"],
                    json!({"path": path, "port": "http"}),
                    "{overlay} {role} {probe}"
                );
                paths.insert(path);
            }
            // SIGTERM comes after the preStop sleep; the grace period counts from its start.
            let sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
                .as_u64()
                .expect("a preStop sleep action: the kubelet waits, no process in the container");
            assert!(sleep >= 1, "endpoint removal needs time to spread");
            let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap();
            assert!(
                grace > sleep + drain + flush,
                "{overlay} {role}: {grace} s of grace for {sleep} s preStop + {drain} s drain \
                 + {flush} s flush"
            );
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true);
            assert_eq!(security["allowPrivilegeEscalation"], false);
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
            let pod = &deployment["spec"]["template"]["spec"]["securityContext"];
            assert_eq!(pod["runAsNonRoot"], true);
            assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault");
        }
    }

    // The routes the probes ask are the ones each service answers, with a 200 when healthy.
    let stack = TestStack::start().await;
    let http = reqwest::Client::new();
    for role in ROLES {
        for path in &paths {
            let url = format!("http://127.0.0.1:{}{path}", stack.ports[role]);
            let status = http.get(&url).send().await.unwrap().status();
            assert_eq!(status, 200, "{role} {path}");
        }
    }
}

/// Whether a `matchLabels`-only selector selects `labels` (an empty selector selects all).
fn selects(selector: &Value, labels: &Value) -> bool {
    assert!(
        selector.get("matchExpressions").is_none(),
        "matchLabels only, so that this test reads the selectors right"
    );
    selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// Whether a rule's `ports` let `port` through (no ports: all of them).
fn lets_through(rule: &Value, port: u16) -> bool {
    match rule["ports"].as_array() {
        None => true,
        Some(ports) => ports
            .iter()
            .any(|p| p["port"].as_u64().expect("numeric ports") == u64::from(port)),
    }
}

/// Whether a rule's peers (`to` or `from`) include a pod of this namespace with `labels`.
fn includes(rule: &Value, peers: &str, labels: &Value) -> bool {
    match rule[peers].as_array() {
        None => true,
        Some(peers) => peers.iter().any(|peer| {
            peer.get("namespaceSelector").is_none()
                && peer.get("ipBlock").is_none()
                && selects(&peer["podSelector"], labels)
        }),
    }
}

/// Whether the policies let a pod labelled `from` open a connection to a pod labelled `to` on
/// `port`: the egress of the one and the ingress of the other must both allow it.
fn allowed(policies: &[&Value], from: &Value, to: &Value, port: u16) -> bool {
    let side = |pod: &Value, direction: &str, rules: &str, peers: &str, peer: &Value| {
        let applying: Vec<&&Value> = policies
            .iter()
            .filter(|p| selects(&p["spec"]["podSelector"], pod))
            .filter(|p| strings(&p["spec"]["policyTypes"]).contains(&direction))
            .collect();
        applying.is_empty()
            || applying.iter().any(|p| {
                p["spec"][rules]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|rule| lets_through(rule, port) && includes(rule, peers, peer))
            })
    };
    side(from, "Egress", "egress", "to", to) && side(to, "Ingress", "ingress", "from", from)
}

#[test]
fn network_policies_allow_exactly_the_calls_the_configured_urls_make() {
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        let policies: Vec<&Value> = of_kind(&objects, "NetworkPolicy").collect();
        let deny = find(&objects, "NetworkPolicy", "default-deny");
        assert_eq!(
            deny["spec"]["podSelector"],
            json!({}),
            "default deny, every pod"
        );
        assert_eq!(strings(&deny["spec"]["policyTypes"]), ["Ingress", "Egress"]);

        // The pods a service may talk to, by a name for this test, with their labels.
        let template = |kind: &str, name: &str| {
            find(&objects, kind, name)["spec"]["template"]["metadata"]["labels"].clone()
        };
        let mut pods: BTreeMap<String, Value> = ROLES
            .iter()
            .map(|role| ((*role).to_owned(), template("Deployment", role)))
            .collect();
        // The pods behind a Service, found by its selector.
        let behind = |service: &str| -> Value {
            let selector = &find(&objects, "Service", service)["spec"]["selector"];
            let workloads = of_kind(&objects, "Deployment").chain(of_kind(&objects, "StatefulSet"));
            let labels: Vec<Value> = workloads
                .map(|w| w["spec"]["template"]["metadata"]["labels"].clone())
                .filter(|labels| selects(&json!({"matchLabels": selector}), labels))
                .collect();
            assert!(!labels.is_empty(), "Service {service} selects no pod");
            labels[0].clone()
        };

        // The calls the configuration makes: upstream URLs, the OTLP endpoint, the sampling
        // strategies' endpoint (called once OTEL_TRACES_SAMPLER alone is switched), the database.
        let mut expected = BTreeSet::new();
        for role in ROLES {
            let container = container(find(&objects, "Deployment", role));
            let environment = environment(&objects, container);
            for (variable, value) in &environment {
                let Some(value) = value.as_deref() else {
                    continue;
                };
                let url = match variable.as_str() {
                    "OTEL_TRACES_SAMPLER_ARG" => value
                        .split(',')
                        .find_map(|part| part.trim().strip_prefix("endpoint=")),
                    _ => Some(value).filter(|v| v.starts_with("http://")),
                };
                let Some(url) = url else {
                    continue;
                };
                let (host, port) = host_port(url);
                pods.entry(host.to_owned()).or_insert_with(|| behind(host));
                expected.insert((role.to_owned(), host.to_owned(), port));
                assert!(
                    variable.ends_with("_URL") || variable.starts_with("OTEL_"),
                    "{role} {variable}"
                );
            }
            if environment.contains_key("DATABASE_URL") {
                let secret = container["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == "DATABASE_URL")
                    .unwrap()["valueFrom"]["secretKeyRef"]["name"]
                    .as_str()
                    .unwrap();
                // A database is named by the pods that serve it: in dev one server holds all.
                let (database, labels) = match objects
                    .iter()
                    .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == secret)
                {
                    // dev: the Secret's URL names the Service of the StatefulSet.
                    Some(secret) => {
                        let host = host_port(secret["stringData"]["uri"].as_str().unwrap()).0;
                        (host.to_owned(), behind(host))
                    }
                    // prod: CloudNativePG makes <cluster>-app and labels its pods cnpg.io/cluster.
                    None => {
                        let cluster = secret.strip_suffix("-app").unwrap();
                        find(&objects, "Cluster", cluster);
                        (cluster.to_owned(), json!({"cnpg.io/cluster": cluster}))
                    }
                };
                pods.insert(database.clone(), labels);
                expected.insert((role.to_owned(), database, 5432));
            }
        }

        // What the policies allow between those pods, on every port any of them uses.
        let ports: BTreeSet<u16> = expected.iter().map(|(_, _, port)| *port).collect();
        let mut actual = BTreeSet::new();
        for (from, from_labels) in &pods {
            if !ROLES.contains(&from.as_str()) {
                continue;
            }
            for (to, to_labels) in &pods {
                for port in &ports {
                    if from != to && allowed(&policies, from_labels, to_labels, *port) {
                        actual.insert((from.clone(), to.clone(), *port));
                    }
                }
            }
        }
        assert_eq!(
            actual, expected,
            "{overlay}: calls allowed vs calls configured"
        );

        // Nothing else leaves a service: every egress rule names pods (or the cluster DNS).
        for policy in &policies {
            let applies_to_a_service = ROLES
                .iter()
                .any(|role| selects(&policy["spec"]["podSelector"], &pods[*role]));
            for rule in policy["spec"]["egress"].as_array().into_iter().flatten() {
                if !applies_to_a_service {
                    continue;
                }
                let to = rule["to"].as_array().expect("egress to named peers only");
                let dns = lets_through(rule, 53)
                    && to.iter().all(|peer| {
                        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                            == "kube-system"
                    });
                assert!(
                    dns || to.iter().all(|peer| peer.get("namespaceSelector").is_none()
                        && peer.get("ipBlock").is_none()),
                    "{}: a service's egress beyond this namespace's pods",
                    policy["metadata"]["name"]
                );
            }
        }

        // From outside, only the gateway, and only through the Ingress.
        let ingresses: Vec<&Value> = of_kind(&objects, "Ingress").collect();
        assert_eq!(ingresses.len(), 1);
        let paths = ingresses[0]["spec"]["rules"][0]["http"]["paths"]
            .as_array()
            .unwrap();
        assert!(
            paths
                .iter()
                .all(|p| p["backend"]["service"]["name"] == "gateway")
        );
        for service in of_kind(&objects, "Service") {
            let kind = service["spec"]["type"].as_str().unwrap_or("ClusterIP");
            assert_eq!(
                kind, "ClusterIP",
                "{} is exposed",
                service["metadata"]["name"]
            );
        }
    }
}

/// A CRD's openAPIV3Schema made into JSON Schema with the API server's own strictness: an
/// object rejects fields it does not declare unless it preserves unknown fields (the server
/// prunes them, or refuses them under kubectl's default strict field validation), an
/// int-or-string takes either, and `nullable` admits null.
fn structural(schema: &Value) -> Value {
    let Some(object) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = serde_json::Map::new();
    for (key, value) in object {
        let value = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(name, inner)| (name.clone(), structural(inner)))
                    .collect(),
            ),
            "items" | "additionalProperties" => structural(value),
            "anyOf" | "allOf" | "oneOf" => {
                Value::Array(value.as_array().unwrap().iter().map(structural).collect())
            }
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    let preserves = object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if object.contains_key("properties")
        && !preserves
        && !object.contains_key("additionalProperties")
    {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    if object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.remove("anyOf");
        out.insert("type".into(), json!(["integer", "string"]));
    }
    if object.get("nullable") == Some(&Value::Bool(true))
        && let Some(kind) = out.get("type").and_then(Value::as_str).map(str::to_owned)
    {
        out.insert("type".into(), json!([kind, "null"]));
    }
    out.into()
}

/// The names of the files directly in `folder` that git tracks (all of them without git): a
/// file not committed yet is work in progress, not part of the stack.
fn committed_files(folder: &str) -> Vec<String> {
    let listed = Command::new("git")
        .args(["ls-files", "--", folder])
        .current_dir(repo(""))
        .output()
        .ok()
        .filter(|output| output.status.success());
    match listed {
        Some(output) => String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|path| path.strip_prefix(&format!("{folder}/")))
            .filter(|name| !name.contains('/'))
            .map(str::to_owned)
            .collect(),
        None => std::fs::read_dir(repo(folder))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect(),
    }
}

/// What is wrong with a custom resource against its vendored schema (deploy/k8s/schemas/).
fn schema_errors(object: &Value) -> Vec<String> {
    let (group, version) = object["apiVersion"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap();
    let kind = object["kind"].as_str().unwrap().to_lowercase();
    let file = format!("deploy/k8s/schemas/{group}_{version}_{kind}.json");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo(&file)).unwrap_or_else(|err| panic!("{file}: {err}")),
    )
    .unwrap();
    let mut schema = structural(&schema);
    // The API server checks metadata itself; the CRD schema leaves it open.
    schema["properties"]["metadata"] = json!({"type": "object"});
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(object)
        .map(|error| format!("{}: {error}", error.instance_path))
        .collect()
}

#[test]
fn custom_resources_fit_the_operators_schemas() {
    let mut checked = BTreeSet::new();
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        for object in &objects {
            let api_version = object["apiVersion"].as_str().unwrap();
            let group = api_version.split_once('/').map_or("", |(group, _)| group);
            // Built-in groups have no dot (apps, batch, policy) or end in .k8s.io.
            if !group.contains('.') || group.ends_with(".k8s.io") {
                continue;
            }
            let errors = schema_errors(object);
            assert!(
                errors.is_empty(),
                "{overlay} {} {}: {errors:#?}",
                object["kind"],
                object["metadata"]["name"]
            );
            checked.insert(object["kind"].as_str().unwrap().to_owned());
        }
    }
    if checked.is_empty() {
        return;
    }
    assert_eq!(
        checked,
        ["Beat", "Cluster", "Elasticsearch", "Kibana"]
            .map(String::from)
            .into(),
    );

    // The check can fail: a misspelt field, a wrong type and an unknown enum value are found.
    let objects = build("overlays/prod").unwrap();
    let mut elasticsearch = find(&objects, "Elasticsearch", "ordertrail").clone();
    elasticsearch["spec"]["nodeSets"][0]["cout"] = json!(3);
    elasticsearch["spec"]["nodeSets"][0]["count"] = json!("three");
    let mut cluster = find(&objects, "Cluster", "orders-db").clone();
    cluster["spec"]["primaryUpdateStrategy"] = json!("whenever");
    assert_eq!(
        schema_errors(&elasticsearch).len(),
        2,
        "{:?}",
        schema_errors(&elasticsearch)
    );
    assert_eq!(schema_errors(&cluster).len(), 1);
}

#[test]
fn the_setup_job_gets_every_file_and_variable_setup_reads() {
    let Some(objects) = build("overlays/dev") else {
        return;
    };
    let job = find(&objects, "Job", "ordertrail-setup");
    let container = container(job);
    // What the Job sees under /deploy: each mount's ConfigMap, or the ConfigMaps a projected
    // volume gathers (with `items` placing keys in sub-folders), by path.
    let volumes = job["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for mount in container["volumeMounts"].as_array().unwrap() {
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        let sources = match volume["projected"]["sources"].as_array() {
            Some(sources) => sources.iter().map(|s| &s["configMap"]).collect(),
            None => vec![&volume["configMap"]],
        };
        for source in sources.into_iter().filter(|s| s.is_object()) {
            let map = find(&objects, "ConfigMap", source["name"].as_str().unwrap());
            let data = map["data"].as_object().unwrap();
            let placed: Vec<(String, String)> = match source["items"].as_array() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        (
                            i["key"].as_str().unwrap().into(),
                            i["path"].as_str().unwrap().into(),
                        )
                    })
                    .collect(),
                None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (key, path) in placed {
                let content = data[&key].as_str().unwrap();
                seen.insert(
                    format!("{}/{path}", mount["mountPath"].as_str().unwrap()),
                    content,
                );
            }
        }
    }
    // Every file setup.sh reads from deploy/ is there, as committed.
    for (folder, wanted) in [
        ("setup", &["sh"][..]),
        ("elasticsearch", &["json"]),
        ("kibana", &["ndjson", "json"]),
        ("kibana/rules", &["json"]),
    ] {
        for name in committed_files(&format!("deploy/{folder}")) {
            if wanted.iter().any(|ext| name.ends_with(&format!(".{ext}"))) {
                let path = format!("/deploy/{folder}/{name}");
                let content =
                    std::fs::read_to_string(repo(&format!("deploy/{folder}/{name}"))).unwrap();
                let held = seen.get(&path).unwrap_or_else(|| {
                    panic!(
                        "{path} is not given to the setup Job: add it to the configMapGenerator \
                         in deploy/k8s/base/kustomization.yaml (and the Job's volume)"
                    )
                });
                assert_eq!(*held, content.as_str(), "{path} as in deploy/");
            }
        }
    }
    assert!(strings(&container["command"]).ends_with(&["/deploy/setup/setup.sh", "all"]));

    // The variables setup.sh requires (`${NAME:?...}`) are all set.
    let script = std::fs::read_to_string(repo("deploy/setup/setup.sh")).unwrap();
    let required: BTreeSet<&str> = script
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once(":?").map(|(name, _)| name))
        .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(required.contains("ELASTIC_PASSWORD"));
    let set = environment(&objects, container);
    for name in required {
        assert!(set.contains_key(name), "setup.sh needs {name}");
    }
}

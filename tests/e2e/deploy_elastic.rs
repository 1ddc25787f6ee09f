//! deploy/ agrees with itself and with the code on what runs in the Elastic stack: every field
//! an alert rule queries is mapped, every index a role names is created, the ILM policy the
//! templates name exists, the rules' connectors are provisioned, the saved objects reference
//! objects that exist, the viewer role grants what the saved search and the dashboard need and
//! nothing more, and `setup.sh` run twice against a stand-in for Elasticsearch and Kibana
//! writes on the first run only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::deploy::template_fields;
use crate::support::ROLES;

mod fake;

const SETUP: &str = "deploy/setup/setup.sh";
const MAPPINGS: &str = "deploy/elasticsearch/ordertrail-mappings.json";
const ALERTS_TEMPLATE: &str = "deploy/elasticsearch/alerts-template.json";
const NDJSON: &str = "deploy/kibana/ordertrail.ndjson";
const VIEWER_ROLE: &str = "deploy/kibana/role-ordertrail_viewer.json";
const WRITER_ROLE: &str = "deploy/elasticsearch/role-logstash_writer.json";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn json_file(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The value of `NAME="..."` in setup.sh, or the default of `NAME="${VAR:-default}"`.
fn setup_value(name: &str) -> String {
    let prefix = format!("{name}=\"");
    let line = read(SETUP)
        .lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("setup.sh sets no {name}"));
    let value = line.trim_end_matches('"');
    match value.split_once(":-") {
        Some((_, default)) => default.trim_end_matches('}').to_owned(),
        None => value.to_owned(),
    }
}

/// The words of `NAME=(...)` in setup.sh.
fn setup_list(name: &str) -> Vec<String> {
    let text = read(SETUP);
    let start = text
        .find(&format!("\n{name}=("))
        .unwrap_or_else(|| panic!("setup.sh has no list {name}"));
    let body = &text[start + name.len() + 3..];
    body[..body.find(')').unwrap()]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The connectors setup.sh provisions: id -> (type, update body).
fn connectors() -> BTreeMap<String, (String, Value)> {
    let text = read(SETUP);
    let start = text
        .find("\nCONNECTORS=(")
        .expect("setup.sh has CONNECTORS");
    let block = &text[start + 1..start + text[start..].find("\n)").unwrap()];
    let alerts_index = setup_value("ALERTS_INDEX");
    block
        .lines()
        .skip(1)
        .map(|line| {
            let entry = line.trim().trim_matches('"').replace("\\\"", "\"");
            let mut parts = entry.splitn(3, '|');
            let (id, kind, body) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let body = body.replace("$ALERTS_INDEX", &alerts_index);
            let body: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{id}: {e}"));
            (id.to_owned(), (kind.to_owned(), body))
        })
        .collect()
}

/// `text` with `"${name}"` replaced by `value` as a JSON value, as setup.sh's `fill` does.
fn fill(text: &str, name: &str, value: &str) -> String {
    let json = if value.parse::<f64>().is_ok() {
        value.to_owned()
    } else {
        Value::String(value.to_owned()).to_string()
    };
    text.replace(&format!("\"${{{name}}}\""), &json)
}

/// The rules: id -> (the rule as setup.sh sends it, with the defaults, and its query).
fn rules() -> BTreeMap<String, (Value, Value)> {
    let mut rules = BTreeMap::new();
    for entry in std::fs::read_dir(repo("deploy/kibana/rules")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        if id.ends_with(".query") {
            continue;
        }
        let slow_ns: u64 = setup_value("SLOW_CHECKOUT_MS").parse::<u64>().unwrap() * 1_000_000;
        let query = fill(
            &read(&format!("deploy/kibana/rules/{id}.query.json")),
            "SLOW_CHECKOUT_NS",
            &slow_ns.to_string(),
        );
        let mut rule = std::fs::read_to_string(&path).unwrap();
        for name in [
            "ALERT_INTERVAL",
            "ALERT_WINDOW_MINUTES",
            "CHECKOUT_FAILURE_RATE",
        ] {
            rule = fill(&rule, name, &setup_value(name));
        }
        rule = fill(&rule, "DEFINITION", "sha256:0000000000000000");
        let query: Value = serde_json::from_str(&query).unwrap_or_else(|e| panic!("{id}: {e}"));
        let mut rule: Value = serde_json::from_str(&rule).unwrap_or_else(|e| panic!("{id}: {e}"));
        rule["params"]["esQuery"] = query.to_string().into();
        assert!(
            !rule.to_string().contains("${"),
            "{id}: a placeholder setup.sh does not fill"
        );
        rules.insert(id.to_owned(), (rule, query));
    }
    assert_eq!(rules.len(), 4, "four alert rules");
    rules
}

/// Every field a query DSL object names: (field, the clause naming it).
fn queried_fields(query: &Value, out: &mut Vec<(String, String)>) {
    match query {
        Value::Object(map) => {
            for (key, value) in map {
                match key.as_str() {
                    "term" | "terms" | "range" | "match" | "match_phrase" | "prefix" => {
                        for field in value.as_object().unwrap().keys() {
                            out.push((field.clone(), key.clone()));
                        }
                    }
                    "exists" => out.push((value["field"].as_str().unwrap().into(), key.clone())),
                    _ => queried_fields(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| queried_fields(item, out)),
        _ => {}
    }
}

/// The fields a Painless script reads with `doc['field']`.
fn script_fields(source: &str) -> Vec<String> {
    source
        .split("doc['")
        .skip(1)
        .map(|rest| rest[..rest.find('\'').unwrap()].to_owned())
        .collect()
}

/// The dotted names of the leaves of a JSON object.
fn leaves(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, inner) in value.as_object().unwrap() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if inner.is_object() {
            leaves(inner, &path, out);
        } else {
            out.insert(path);
        }
    }
}

/// The saved objects of the ndjson file.
fn saved_objects() -> Vec<Value> {
    read(NDJSON)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Whether a Kibana/Elasticsearch index pattern (`*` wildcards) matches `name`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len())
                    .any(|skip| matches(tail, &name[head.len() + skip..]))
        }
    }
}

/// The indices and data streams setup.sh creates: its data streams (each from an index
/// template with `data_stream`) and the alerts index (from the alerts template).
fn created_indices() -> BTreeSet<String> {
    let mut created: BTreeSet<String> = setup_list("DATA_STREAMS").into_iter().collect();
    created.insert(setup_value("ALERTS_INDEX"));
    created
}

/// The index template file setup.sh puts for `name`, and its content.
fn index_template(name: &str) -> Value {
    json_file(&format!(
        "deploy/elasticsearch/{}-template.json",
        name.trim_start_matches("ordertrail-")
    ))
}

#[test]
fn every_field_an_alert_rule_queries_is_mapped() {
    let mapped = template_fields(MAPPINGS);
    let alerts_mapped = template_fields(ALERTS_TEMPLATE);
    let streams = setup_list("DATA_STREAMS");
    for (id, (rule, query)) in rules() {
        let params = &rule["params"];
        let indices: Vec<&str> = params["index"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap())
            .collect();
        assert!(
            indices.iter().all(|i| streams.iter().any(|s| s == i)),
            "{id} queries {indices:?}, not the data streams {streams:?}"
        );
        let runtime: BTreeMap<String, Value> = query
            .get("runtime_mappings")
            .map(|r| serde_json::from_value(r.clone()).unwrap())
            .unwrap_or_default();
        let mut fields = Vec::new();
        queried_fields(&query["query"], &mut fields);
        for script in runtime.values() {
            fields.extend(
                script_fields(script["script"]["source"].as_str().unwrap())
                    .into_iter()
                    .map(|f| (f, "runtime field".to_owned())),
            );
        }
        // The time field: mapped, or a date the rule's query computes.
        let time_field = params["timeField"].as_str().unwrap();
        match runtime.get(time_field) {
            Some(field) => assert_eq!(field["type"], "date", "{id}: timeField {time_field}"),
            None => fields.push((time_field.into(), "timeField".into())),
        }
        if let Some(agg) = params.get("aggField").and_then(Value::as_str) {
            assert!(
                runtime.contains_key(agg) || mapped.contains(agg),
                "{id}: aggField {agg} is neither mapped nor a runtime field of the rule"
            );
        }
        // What the actions read from the hits: `context.hits.0._source.<field>`.
        let actions = rule["actions"].to_string();
        for part in actions.split("_source.").skip(1) {
            let field = &part[..part.find("}}").unwrap()];
            fields.push((field.to_owned(), "an action's sample".into()));
        }
        let unmapped: Vec<&(String, String)> = fields
            .iter()
            .filter(|(field, _)| !mapped.contains(field))
            .collect();
        assert!(
            unmapped.is_empty(),
            "{id} uses fields ordertrail-mappings.json does not map: {unmapped:?}"
        );

        // The alert document the index connector writes fits the alerts index's mapping.
        for action in rule["actions"].as_array().unwrap() {
            if action["id"] != "ordertrail-alerts-index" {
                continue;
            }
            let mut written = BTreeSet::new();
            leaves(&action["params"]["documents"][0], "", &mut written);
            written.insert("@timestamp".into()); // the connector's executionTimeField
            let unmapped: Vec<&String> = written.difference(&alerts_mapped).collect();
            assert!(
                unmapped.is_empty(),
                "{id} writes alert fields alerts-template.json does not map: {unmapped:?}"
            );
            assert!(
                written.contains("trace.id"),
                "{id}: an alert without trace.id"
            );
        }
    }
}

#[test]
fn the_values_the_rules_match_are_the_ones_the_code_writes() {
    let rules = rules();
    let source_of = |dir: &str| {
        let mut files = Vec::new();
        let mut stack = vec![repo(dir)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(std::fs::read_to_string(path).unwrap());
                }
            }
        }
        files.join("\n")
    };
    let telemetry = source_of("shared/src/telemetry");
    let order = source_of("services/order/src");
    // The audit events the services write: `audit!("<action>", ...)`, whitespace aside.
    let audited: String = source_of("services")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let datasets: Vec<String> = ROLES.iter().map(|r| format!("ordertrail.{r}")).collect();
    let mut checked = 0;
    for (id, (_, query)) in &rules {
        let mut clauses = Vec::new();
        collect_clauses(query, &mut clauses);
        for (kind, field, value) in clauses {
            let found = match (kind.as_str(), field.as_str()) {
                (_, "event.dataset") => {
                    datasets.contains(&value)
                        || telemetry.contains(&format!("AUDIT_DATASET: &str = \"{value}\""))
                }
                (_, "event.action") => audited.contains(&format!("audit!(\"{value}\"")),
                (_, "order.status") => order.contains(&format!("\"{value}\"")),
                (_, "http.route") => order.contains(&format!(".route(\"{value}\"")),
                (_, "http.request.method") => ["GET", "POST"].contains(&value.as_str()),
                // The ECS writer spells levels in capitals (tracing's Level display).
                (_, "log.level") => ["ERROR", "WARN", "INFO"].contains(&value.as_str()),
                ("match_phrase", "message") => telemetry.contains(&value),
                _ => panic!("{id}: no check for {kind} on {field}; add one"),
            };
            assert!(
                found,
                "{id} matches {field} = {value:?}, which nothing writes"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} values checked");
}

/// The failure rate is computed from audit events, which the log sampling policy never drops
/// (`ORDERTRAIL_LOG_SAMPLE` below 1 thins the INFO lines of unsampled requests, so a rate over
/// ordinary lines would count every failure, a WARN line, and only some confirmations), and its
/// sample trace is a failed order's.
#[test]
fn the_checkout_failure_rate_counts_audit_events_and_samples_a_failed_order() {
    let (rule, query) = &rules()["ordertrail-checkout-failure-rate"];
    let params = &rule["params"];
    let mut clauses = Vec::new();
    collect_clauses(query, &mut clauses);
    let matched = |field: &str| -> BTreeSet<String> {
        clauses
            .iter()
            .filter(|(_, f, _)| f == field)
            .map(|(_, _, value)| value.clone())
            .collect()
    };
    assert_eq!(params["index"], json!(["ordertrail-audit"]));
    assert_eq!(
        matched("event.dataset"),
        BTreeSet::from([ordertrail_shared::telemetry::AUDIT_DATASET.to_owned()])
    );
    let (confirmed, failed) = ("order-confirmed", "order-failed");
    assert_eq!(
        matched("event.action"),
        BTreeSet::from([confirmed.to_owned(), failed.to_owned()]),
        "one event per order that ended, whichever way"
    );
    // Every checkout that ends writes exactly one of them (the order service's saga).
    let saga = [
        read("services/order/src/saga/mod.rs"),
        read("services/order/src/saga/compensation.rs"),
    ]
    .concat()
    .split_whitespace()
    .collect::<String>();
    for action in [confirmed, failed] {
        assert_eq!(
            saga.matches(&format!("audit!(\"{action}\"")).count(),
            1,
            "the saga writes {action} once"
        );
    }

    // The value is the average of a field that is 1 for a failed order, 0 for a confirmed one.
    assert_eq!(params["aggType"], "avg");
    let runtime = &query["runtime_mappings"];
    let failed_field = &runtime[params["aggField"].as_str().unwrap()];
    assert_eq!(failed_field["type"], "long");
    let source = failed_field["script"]["source"].as_str().unwrap();
    assert!(
        source.contains(&format!("== '{failed}' ? 1 : 0")),
        "{source}"
    );

    // The sample: Kibana sorts the hits newest first by the time field and the actions read
    // the first. The time field is @timestamp, plus, for a failed order only, a second value a
    // century later: the range filter matches either value (the event's own time), the
    // descending sort takes the larger, so every failure sorts before every confirmation.
    assert_eq!(params["excludeHitsFromPreviousRun"], false);
    let time = &runtime[params["timeField"].as_str().unwrap()];
    assert_eq!(time["type"], "date");
    let source = time["script"]["source"].as_str().unwrap();
    assert!(
        source.contains("doc['@timestamp'].value.toInstant().toEpochMilli()"),
        "{source}"
    );
    let emits: Vec<&str> = source.split("emit(").skip(1).collect();
    assert_eq!(emits.len(), 2, "{source}");
    assert!(emits[0].starts_with("t)"), "@timestamp itself: {source}");
    let later = emits[1].split('+').nth(1).unwrap().trim();
    let shift: u64 = later.split('L').next().unwrap().parse().unwrap();
    assert!(
        shift > 50 * 365 * 86_400_000,
        "the failures' second time is past any window: {shift} ms"
    );
    assert!(
        source.contains(&format!("== '{failed}') {{ emit(t +")),
        "only a failure gets the later time: {source}"
    );
    let actions = rule["actions"].to_string();
    assert!(actions.contains("{{context.hits.0._source.trace.id}}"));
}

/// (clause kind, field, value) of every term, terms and match_phrase clause.
fn collect_clauses(query: &Value, out: &mut Vec<(String, String, String)>) {
    match query {
        Value::Object(map) => {
            for (key, value) in map {
                if ["term", "terms", "match_phrase"].contains(&key.as_str()) {
                    for (field, matched) in value.as_object().unwrap() {
                        let values: Vec<&Value> = match matched {
                            Value::Array(items) => items.iter().collect(),
                            other => vec![other],
                        };
                        for v in values {
                            out.push((key.clone(), field.clone(), v.as_str().unwrap().into()));
                        }
                    }
                } else {
                    collect_clauses(value, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_clauses(i, out)),
        _ => {}
    }
}

#[test]
fn every_index_a_role_names_is_created_by_setup() {
    let created = created_indices();
    for name in &created {
        let template = index_template(name);
        let patterns = template["index_patterns"].as_array().unwrap();
        assert!(
            patterns.iter().any(|p| matches(p.as_str().unwrap(), name)),
            "{name}: its template does not match it"
        );
        let is_stream = setup_list("DATA_STREAMS").contains(name);
        assert_eq!(
            template.get("data_stream").is_some(),
            is_stream,
            "{name}: a data stream exactly when its template says so"
        );
    }
    let viewer = json_file(VIEWER_ROLE);
    let writer = json_file(WRITER_ROLE);
    for (role, indices) in [
        ("ordertrail_viewer", &viewer["elasticsearch"]["indices"]),
        ("logstash_writer", &writer["indices"]),
    ] {
        for entry in indices.as_array().unwrap() {
            for name in entry["names"].as_array().unwrap() {
                let name = name.as_str().unwrap();
                assert!(
                    created.iter().any(|c| matches(name, c)),
                    "{role} names {name}, which setup.sh does not create ({created:?})"
                );
            }
        }
    }
}

#[test]
fn the_viewer_role_grants_what_the_saved_objects_need_and_nothing_more() {
    let role = json_file(VIEWER_ROLE);
    let es = &role["elasticsearch"];
    assert_eq!(es["cluster"], json!([]), "no cluster privilege");
    assert_eq!(es["run_as"], json!([]), "no run_as");
    let mut readable = BTreeSet::new();
    for entry in es["indices"].as_array().unwrap() {
        for privilege in entry["privileges"].as_array().unwrap() {
            assert!(
                ["read", "view_index_metadata"].contains(&privilege.as_str().unwrap()),
                "the viewer may only read: {privilege}"
            );
        }
        for name in entry["names"].as_array().unwrap() {
            readable.insert(name.as_str().unwrap().to_owned());
        }
    }

    // Every index a data view searches is readable: each of its comma-separated patterns
    // matches only indices the role covers, and matches at least one.
    let objects = saved_objects();
    let created = created_indices();
    for view in objects.iter().filter(|o| o["type"] == "index-pattern") {
        let title = view["attributes"]["title"].as_str().unwrap();
        for pattern in title.split(',') {
            let hits: Vec<&String> = created.iter().filter(|c| matches(pattern, c)).collect();
            assert!(
                !hits.is_empty(),
                "data view {title}: {pattern} matches nothing"
            );
            for hit in hits {
                assert!(
                    readable.iter().any(|r| matches(r, hit)),
                    "data view {title} reads {hit}, which the viewer cannot"
                );
            }
        }
    }
    // Which feature's read privilege lets a user open each saved-object type, from Kibana's
    // feature definitions (x-pack/platform/plugins/shared/features/server/oss_features.ts):
    // Discover reads index patterns and searches; Dashboard reads those and visualizations.
    let grants: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("index-pattern", &["discover_v2", "dashboard_v2"][..]),
        ("search", &["discover_v2", "dashboard_v2"][..]),
        ("visualization", &["dashboard_v2"][..]),
        ("dashboard", &["dashboard_v2"][..]),
    ]);
    let kibana = role["kibana"].as_array().unwrap();
    assert_eq!(kibana.len(), 1, "one Kibana privilege entry");
    let kibana = &kibana[0];
    assert_eq!(
        kibana["spaces"],
        json!(["default"]),
        "the default space only"
    );
    assert_eq!(kibana["base"], json!([]), "no base privilege");
    let features = kibana["feature"].as_object().unwrap();
    for (feature, privileges) in features {
        assert_eq!(privileges, &json!(["read"]), "{feature}: read only");
    }
    let mut needed = BTreeSet::new();
    for object in &objects {
        let kind = object["type"].as_str().unwrap();
        let options = grants
            .get(kind)
            .unwrap_or_else(|| panic!("no feature known to read a {kind}"));
        let feature = options
            .iter()
            .find(|f| features.contains_key(**f))
            .unwrap_or_else(|| panic!("the viewer cannot read {} ({kind})", object["id"]));
        needed.insert(feature.to_string());
    }
    assert!(needed.contains("discover_v2") && needed.contains("dashboard_v2"));
    let granted: BTreeSet<String> = features.keys().cloned().collect();
    assert_eq!(
        granted, needed,
        "the viewer gets the features its objects need, no more"
    );
}

/// Every ILM policy an index template names is one setup.sh puts, from a file that exists, and
/// the plain alerts index's policy only deletes (a rollover needs a data stream or a write
/// alias: on a plain index ILM would stop at it with an error).
#[test]
fn every_ilm_policy_a_template_names_is_put_by_setup() {
    let script = read(SETUP);
    let put: BTreeMap<String, String> = [("ILM_POLICY", ""), ("ALERTS_ILM_POLICY", "-alerts")]
        .into_iter()
        .map(|(variable, suffix)| {
            let file = format!("ilm-policy{suffix}.json");
            assert!(
                script.contains(&format!(
                    "\"$ES_URL/_ilm/policy/${variable}\" \\\n    \"$(read_file \"$es/{file}\")\""
                )),
                "setup.sh puts ${variable} from {file}"
            );
            (setup_value(variable), file)
        })
        .collect();
    for name in setup_list("INDEX_TEMPLATES") {
        let template = index_template(&name);
        let policy = template["template"]["settings"]["index"]["lifecycle"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("index template {name} names no ILM policy"));
        let file = put.get(policy).unwrap_or_else(|| {
            panic!("{name} names the ILM policy {policy}, which setup.sh does not put")
        });
        let phases = &json_file(&format!("deploy/elasticsearch/{file}"))["policy"]["phases"];
        assert!(
            phases["delete"]["actions"]["delete"].is_object(),
            "{policy} ends in delete"
        );
        if template.get("data_stream").is_none() {
            let actions: Vec<&String> = phases
                .as_object()
                .unwrap()
                .values()
                .flat_map(|phase| phase["actions"].as_object().unwrap().keys())
                .collect();
            assert_eq!(
                actions,
                ["delete"],
                "{name} is a plain index: {policy} may only delete"
            );
        }
    }
}

#[test]
fn the_ilm_policy_the_templates_name_exists_and_ends_in_delete() {
    let policy_name = setup_value("ILM_POLICY");
    for stream in setup_list("DATA_STREAMS") {
        let template = index_template(&stream);
        assert_eq!(
            template["template"]["settings"]["index"]["lifecycle"]["name"],
            policy_name.as_str(),
            "{stream}: its template names the policy setup puts"
        );
    }
    let phases = &json_file("deploy/elasticsearch/ilm-policy.json")["policy"]["phases"];
    // Elasticsearch runs the phases in its own fixed order (hot, warm, cold, frozen, delete),
    // whatever their order in the file.
    let names: BTreeSet<&str> = phases
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["hot", "warm", "delete"]),
        "hot -> warm -> delete"
    );
    assert!(phases["hot"]["actions"]["rollover"].is_object());
    assert_eq!(
        phases["warm"]["actions"]["forcemerge"]["max_num_segments"],
        1
    );
    assert!(phases["delete"]["actions"]["delete"].is_object());
    let days = |phase: &str| -> u64 {
        let age = phases[phase]["min_age"].as_str().unwrap();
        age.strip_suffix('d')
            .unwrap_or_else(|| panic!("{phase}: min_age in days"))
            .parse()
            .unwrap()
    };
    assert!(days("warm") < days("delete"), "warm before delete");
}

/// `ordertrail forget` deletes by query from every backing index, so none may be write-blocked
/// before ILM deletes it. The actions that block writes in Elasticsearch 8.19: `readonly`
/// (`index.blocks.write`), `shrink` and `downsample` (their source, and the index they make),
/// `searchable_snapshot` (a mounted index is read-only). `forcemerge` no longer does since
/// elastic/elasticsearch#81162: its read-only step is a no-op step.
#[test]
fn no_ilm_action_blocks_the_deletions_forget_makes() {
    let phases = &json_file("deploy/elasticsearch/ilm-policy.json")["policy"]["phases"];
    let actions: Vec<String> = phases
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(phase, body)| {
            let names = body["actions"].as_object().unwrap().keys();
            names.map(move |action| format!("{phase}.{action}"))
        })
        .collect();
    let blocking = ["readonly", "shrink", "downsample", "searchable_snapshot"];
    let found: Vec<&String> = actions
        .iter()
        .filter(|a| blocking.iter().any(|b| a.ends_with(&format!(".{b}"))))
        .collect();
    assert!(found.is_empty(), "write-blocking ILM actions: {found:?}");
}

#[test]
fn the_rules_use_connectors_setup_provisions() {
    let connectors = connectors();
    assert_eq!(connectors["ordertrail-alerts-index"].0, ".index");
    assert_eq!(connectors["ordertrail-server-log"].0, ".server-log");
    let config = &connectors["ordertrail-alerts-index"].1["config"];
    assert_eq!(config["index"], setup_value("ALERTS_INDEX").as_str());
    assert_eq!(config["executionTimeField"], "@timestamp");
    for (id, (rule, _)) in rules() {
        let used: BTreeSet<&str> = rule["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|action| {
                // The es-query rule's one action group.
                assert_eq!(action["group"], "query matched", "{id}");
                action["id"].as_str().unwrap()
            })
            .collect();
        let provisioned: BTreeSet<&str> = connectors.keys().map(String::as_str).collect();
        assert_eq!(used, provisioned, "{id}: the index and the server log");
    }
}

#[test]
fn every_saved_object_reference_exists() {
    let objects = saved_objects();
    let ids: BTreeSet<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                o["type"].as_str().unwrap().into(),
                o["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    for object in &objects {
        let id = &object["id"];
        let references = object["references"].as_array().unwrap();
        let names: BTreeSet<&str> = references
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        for reference in references {
            let target = (
                reference["type"].as_str().unwrap().to_owned(),
                reference["id"].as_str().unwrap().to_owned(),
            );
            assert!(
                ids.contains(&target),
                "{id} references {target:?}, not in the file"
            );
        }
        let attributes = &object["attributes"];
        if let Some(source) = attributes["kibanaSavedObjectMeta"]["searchSourceJSON"].as_str() {
            let source: Value = serde_json::from_str(source).unwrap();
            if let Some(name) = source["indexRefName"].as_str() {
                assert!(names.contains(name), "{id}: {name} is not a reference");
            }
        }
        if let Some(panels) = attributes["panelsJSON"].as_str() {
            let panels: Vec<Value> = serde_json::from_str(panels).unwrap();
            for panel in panels {
                let name = panel["panelRefName"].as_str().unwrap();
                let reference = references
                    .iter()
                    .find(|r| r["name"].as_str().unwrap().ends_with(&format!(":{name}")))
                    .unwrap_or_else(|| panic!("{id}: panel {name} has no reference"));
                assert_eq!(reference["type"], panel["type"], "{id}: panel {name}");
            }
        }
    }
    // The recent alerts are on the dashboard.
    let dashboard = objects
        .iter()
        .find(|o| o["id"] == "ordertrail-overview")
        .unwrap();
    assert!(
        dashboard["references"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "ordertrail-recent-alerts"),
        "the dashboard shows the recent alerts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_writes_on_the_first_run_only_and_then_what_changed() {
    let stack = fake::Stack::start().await;

    let first = stack.run_setup(&[]).await;
    let written: BTreeSet<String> = first.iter().map(|w| w.to_string()).collect();
    for expected in [
        "POST /_security/user/kibana_system/_password",
        "PUT /_security/role/logstash_writer",
        "PUT /_security/user/logstash_internal",
        "PUT /_ilm/policy/ordertrail",
        "PUT /_ilm/policy/ordertrail-alerts",
        "PUT /_component_template/ordertrail-mappings",
        "PUT /_index_template/ordertrail-alerts",
        "PUT /_data_stream/ordertrail-logs",
        "PUT /ordertrail-alerts",
        "PUT /_security/user/ordertrail_viewer",
        "PUT /api/security/role/ordertrail_viewer",
        "POST /api/actions/connector/ordertrail-alerts-index",
        "POST /api/actions/connector/ordertrail-server-log",
        "POST /api/alerting/rule/ordertrail-checkout-failure-rate",
        "POST /api/alerting/rule/ordertrail-telemetry-loss",
    ] {
        assert!(
            written.contains(expected),
            "the first run did not {expected}"
        );
    }
    let rule = stack.stored("/api/alerting/rule/ordertrail-slow-checkouts");
    assert_eq!(rule["rule_type_id"], ".es-query");
    assert_eq!(rule["schedule"]["interval"], "1m");
    let query: Value = serde_json::from_str(rule["params"]["esQuery"].as_str().unwrap()).unwrap();
    assert_eq!(
        query["query"]["bool"]["filter"][3]["range"]["event.duration"]["gt"], 2_000_000_000u64,
        "the slow-checkout threshold in nanoseconds"
    );

    // The import is the one write the saved-objects API offers only as "replace by id".
    let import = "POST /api/saved_objects/_import?overwrite=true";
    let second = stack.run_setup(&[]).await;
    let second: Vec<String> = second.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        second,
        [import],
        "the second run wrote more than the import"
    );

    let changes = [
        ("ORDERTRAIL_ALERT_CHECKOUT_FAILURE_RATE", "0.5"),
        ("ORDERTRAIL_VIEWER_PASSWORD", "another-viewer-password"),
    ];
    let changed = stack.run_setup(&changes).await;
    let changed: Vec<String> = changed.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        changed,
        [
            "PUT /_security/user/ordertrail_viewer",
            import,
            "PUT /api/alerting/rule/ordertrail-checkout-failure-rate",
        ],
        "a new threshold and password rewrite that rule and that user only"
    );
    let rule = stack.stored("/api/alerting/rule/ordertrail-checkout-failure-rate");
    assert_eq!(rule["params"]["threshold"], json!([0.5]));
    assert_eq!(
        rule["consumer"], "stackAlerts",
        "an update keeps the consumer"
    );

    // An alerts index made before its template named an ILM policy gets the policy, once.
    stack.forget("/ordertrail-alerts/_settings");
    let older = stack.run_setup(&changes).await;
    let older: Vec<String> = older.iter().map(|w| w.to_string()).collect();
    assert_eq!(older, ["PUT /ordertrail-alerts/_settings", import]);
    assert_eq!(
        stack.stored("/ordertrail-alerts/_settings")["ordertrail-alerts"]["settings"]["index"]["lifecycle"]
            ["name"],
        "ordertrail-alerts"
    );
    let again = stack.run_setup(&changes).await;
    assert_eq!(again.len(), 1, "{again:?}");

    // No password is ever a curl argument, which every user of the machine could read in the
    // process list: the credentials and the bodies that hold passwords go through files.
    let arguments = stack.curl_arguments();
    assert!(
        arguments.lines().count() > 20,
        "the recording shim saw setup's curls: {arguments}"
    );
    for password in [
        "test-elastic",
        "test-kibana",
        "test-logstash",
        "test-viewer",
        "another-viewer-password",
    ] {
        assert!(
            !arguments.contains(password),
            "a curl was given the password {password:?} as an argument"
        );
    }
}

/// The same, read in the script: no curl takes credentials as an argument (`-u`, `--user`),
/// whichever code path runs.
#[test]
fn setup_gives_curl_no_credentials_as_arguments() {
    let script = read(SETUP);
    // The lines of each curl command: from `curl ` to the last line ending in a backslash.
    let mut in_curl = false;
    let mut curls = 0;
    for (number, line) in script.lines().enumerate() {
        let code = line.split(" #").next().unwrap().trim_start();
        if code.starts_with('#') {
            continue;
        }
        if code.contains("curl ") {
            in_curl = true;
            curls += 1;
        }
        if !in_curl {
            continue;
        }
        in_curl = code.ends_with('\\');
        let credentials = code.split_whitespace().find(|word| {
            *word == "-u"
                || *word == "--user"
                || word.starts_with("--user=")
                || (word.starts_with("-u") && !word.starts_with("--"))
        });
        assert!(
            credentials.is_none(),
            "setup.sh:{}: {credentials:?} puts credentials where the process list shows them",
            number + 1
        );
    }
    assert!(curls >= 2, "setup.sh's curls: {curls}");
    assert!(script.contains("--config <(credentials "));
}

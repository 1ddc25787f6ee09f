//! deploy/k8s/ and Elasticsearch agree: Jaeger's daily indices are deleted by the cleaner of the
//! Jaeger release that writes them, with its index prefix, user and address; every index has a
//! replica exactly where a second node can hold it (compose's single node stays green); Kibana's
//! heap and the rest of Node fit under its limit.

use serde_json::Value;

use super::telemetry::{behind, jaeger_config, labels, memory_limit, pod};
use super::{OVERLAYS, allowed, build, find, of_kind, strings};
use crate::deploy::read;

/// The variables jaeger-es-index-cleaner reads: its flags (cmd/es-index-cleaner/app/flags.go,
/// Jaeger v2.15.0) as viper maps them from the environment ('.' and '-' become '_').
const CLEANER_VARIABLES: [&str; 7] = [
    "INDEX_PREFIX",
    "ARCHIVE",
    "ROLLOVER",
    "TIMEOUT",
    "INDEX_DATE_SEPARATOR",
    "ES_USERNAME",
    "ES_PASSWORD",
];

/// Memory Node needs beyond `--max-old-space-size` (as tests/e2e/deploy_metrics/memory.rs).
const NODE_BEYOND_OLD_SPACE: u64 = 300 << 20;

/// The Secret key a container's variable comes from.
fn secret_of<'a>(container: &'a Value, name: &str) -> &'a Value {
    &container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no {name}"))["valueFrom"]["secretKeyRef"]
}

#[test]
fn jaegers_daily_indices_are_deleted_by_the_cleaner_of_its_release() {
    let mut checked = 0;
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        let policies: Vec<&Value> = of_kind(&objects, "NetworkPolicy").collect();
        for (collector, _) in behind(&objects, "jaeger-collector", 4317) {
            let config = jaeger_config(&objects, collector);
            let backend = config["exporters"]["jaeger_storage_exporter"]["trace_storage"]
                .as_str()
                .unwrap();
            let elasticsearch =
                &config["extensions"]["jaeger_storage"]["backends"][backend]["elasticsearch"];
            if elasticsearch.is_null() || elasticsearch["use_ilm"] == true {
                continue;
            }
            let indices = &elasticsearch["indices"];
            for kind in ["spans", "services"] {
                assert_eq!(indices[kind]["rollover_frequency"], "day", "{kind}");
                // The cleaner's default --index-date-separator is '-'.
                assert_eq!(indices[kind]["date_layout"], "2006-01-02", "{kind}");
            }

            let cleaners: Vec<&Value> = of_kind(&objects, "CronJob")
                .filter(|c| {
                    pod(c)["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap()
                        .starts_with("jaegertracing/jaeger-es-index-cleaner:")
                })
                .collect();
            assert_eq!(
                cleaners.len(),
                1,
                "{overlay}: Jaeger writes daily indices to Elasticsearch and nothing deletes them"
            );
            let cleaner = cleaners[0];
            let container = &pod(cleaner)["spec"]["containers"][0];
            let collector_container = &pod(collector)["spec"]["containers"][0];
            let tag = |c: &Value| {
                c["image"]
                    .as_str()
                    .unwrap()
                    .rsplit_once(':')
                    .unwrap()
                    .1
                    .to_owned()
            };
            assert_eq!(
                tag(container),
                tag(collector_container),
                "the same Jaeger release"
            );

            let args = strings(&container["args"]);
            assert_eq!(args.len(), 2, "NUM_OF_DAYS and the URL");
            let days: u32 = args[0].parse().unwrap();
            assert!((1..=30).contains(&days), "{days} days");
            assert_eq!(
                args[1], elasticsearch["server_urls"][0],
                "the collectors' Elasticsearch"
            );

            let env = container["env"].as_array().unwrap();
            for variable in env {
                let name = variable["name"].as_str().unwrap();
                assert!(
                    CLEANER_VARIABLES.contains(&name),
                    "the cleaner does not read {name}"
                );
            }
            let prefix = env.iter().find(|v| v["name"] == "INDEX_PREFIX").unwrap();
            assert_eq!(prefix["value"], indices["index_prefix"]);
            // The user the collectors write as, from the same Secret.
            let auth = &elasticsearch["auth"]["basic"];
            for (cleaner_variable, setting) in
                [("ES_USERNAME", "username"), ("ES_PASSWORD", "password")]
            {
                let reference = auth[setting].as_str().unwrap();
                let variable = reference
                    .strip_prefix("${env:")
                    .and_then(|r| r.strip_suffix('}'))
                    .unwrap();
                assert_eq!(
                    secret_of(container, cleaner_variable),
                    secret_of(collector_container, variable)
                );
            }

            let elasticsearch_pods = &find(&objects, "Elasticsearch", "ordertrail")["spec"]["nodeSets"]
                [0]["podTemplate"]["metadata"]["labels"];
            assert!(
                allowed(&policies, labels(cleaner), elasticsearch_pods, 9200),
                "{overlay}: the cleaner may not reach Elasticsearch"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 1, "prod's collectors write to Elasticsearch");
}

/// The replicas Elasticsearch gives an index of `settings` on `nodes` data nodes.
fn replicas(settings: &Value, nodes: u64) -> u64 {
    if let Some(range) = settings["auto_expand_replicas"].as_str() {
        let (low, high) = range.split_once('-').unwrap();
        let high = match high {
            "all" => nodes - 1,
            high => high.parse().unwrap(),
        };
        return (nodes - 1).clamp(low.parse().unwrap(), high);
    }
    match &settings["number_of_replicas"] {
        Value::Null => 1,
        Value::String(text) => text.parse().unwrap(),
        number => number.as_u64().unwrap(),
    }
}

#[test]
fn every_index_has_a_replica_exactly_where_a_second_node_can_hold_it() {
    let settings: Value =
        serde_json::from_str(&read("deploy/elasticsearch/ordertrail-settings.json")).unwrap();
    let settings = &settings["template"]["settings"]["index"];
    // Compose's single node: a replica could never be assigned and every index would be yellow.
    assert_eq!(
        replicas(settings, 1),
        0,
        "compose's single node stays green"
    );
    for template in ["logs", "audit", "alerts"] {
        let template: Value = serde_json::from_str(&read(&format!(
            "deploy/elasticsearch/{template}-template.json"
        )))
        .unwrap();
        let own = &template["template"]["settings"]["index"];
        assert!(
            own["number_of_replicas"].is_null() && own["auto_expand_replicas"].is_null(),
            "the replicas come from ordertrail-settings only"
        );
    }
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        let nodes: u64 = find(&objects, "Elasticsearch", "ordertrail")["spec"]["nodeSets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|set| set["count"].as_u64().unwrap())
            .sum();
        let mut all = vec![("ordertrail-*".to_owned(), replicas(settings, nodes))];
        for (collector, _) in behind(&objects, "jaeger-collector", 4317) {
            let config = jaeger_config(&objects, collector);
            for backend in config["extensions"]["jaeger_storage"]["backends"]
                .as_object()
                .unwrap()
                .values()
            {
                for (kind, index) in backend["elasticsearch"]["indices"]
                    .as_object()
                    .into_iter()
                    .flatten()
                {
                    if let Some(count) = index["replicas"].as_u64() {
                        all.push((format!("jaeger {kind}"), count));
                    }
                }
            }
        }
        for (index, count) in all {
            assert!(
                count < nodes,
                "{overlay}: {index} wants {count} replicas on {nodes} nodes: yellow"
            );
            assert!(
                nodes == 1 || count >= 1,
                "{overlay}: {index} has no replica on {nodes} nodes: losing one loses data"
            );
        }
    }
}

#[test]
fn kibanas_heap_and_the_rest_of_node_fit_under_its_limit() {
    for overlay in OVERLAYS {
        let Some(objects) = build(&format!("overlays/{overlay}")) else {
            return;
        };
        let kibana = find(&objects, "Kibana", "ordertrail");
        let container = kibana["spec"]["podTemplate"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "kibana")
            .unwrap();
        let options = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "NODE_OPTIONS")
            .unwrap()["value"]
            .as_str()
            .unwrap();
        let old_space: u64 = options
            .split_whitespace()
            .find_map(|o| o.strip_prefix("--max-old-space-size="))
            .expect("a bounded old generation")
            .parse()
            .unwrap();
        let limit = memory_limit(container);
        assert!(
            (old_space << 20) + NODE_BEYOND_OLD_SPACE <= limit,
            "{overlay}: Kibana's {old_space} MiB old generation and ~300 MiB more over its \
             {} MiB limit",
            limit >> 20
        );
    }
}

//! Memory: every container has a limit, the runtimes inside fit under theirs, the RAM table in
//! deploy/README.md is compose's and fits the budget, and Jaeger's `max_traces` of checkouts
//! measured here fits in half of its `GOMEMLIMIT`, with tail sampling's buffer in three quarters
//! and under the memory limiter's soft limit.

use std::collections::{BTreeMap, BTreeSet};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;

use super::{bytes, default_of, jaeger_config};
use crate::deploy::{compose, read, string};
use crate::support::{DECLINED_CARD, GOOD_CARD, TestStack, order};

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
/// `max_traces` of the larger fit in half of Jaeger's GOMEMLIMIT, and with tail sampling on, its
/// `num_traces` beside them in three quarters. Prints the measurement:
/// `cargo test --test e2e deploy_metrics::memory -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_keeps_its_store_and_tail_buffer_of_checkouts_under_its_memory_limits() {
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

    // Tail sampling on: its buffer holds traces beside the store, as the same pdata. Both fit
    // in three quarters of GOMEMLIMIT and under the memory limiter's soft limit, which refuses
    // new spans past it: the buffer is sized so that a full one is not an overload.
    let on = jaeger_config("on");
    let tail = &on["processors"]["tail_sampling"];
    let num_traces = tail["num_traces"].as_u64().unwrap();
    let buffer = num_traces * largest * STORE_BYTES_PER_WIRE_BYTE;
    let limiter = &on["processors"]["memory_limiter"];
    let mib = |key: &str| limiter[key].as_u64().unwrap_or_else(|| panic!("{key}")) << 20;
    let soft_limit = mib("limit_mib") - mib("spike_limit_mib");
    println!(
        "tail sampling: num_traces {num_traces} = {} MiB; with the store {} MiB; memory \
         limiter soft limit {} MiB",
        buffer >> 20,
        (store + buffer) >> 20,
        soft_limit >> 20
    );
    assert!(
        mib("limit_mib") < gomemlimit,
        "the memory limiter acts before the Go runtime's limit"
    );
    assert!(
        store + buffer <= gomemlimit / 4 * 3 && store + buffer <= soft_limit,
        "max_traces {max_traces} and num_traces {num_traces} of checkouts need ~{} MiB, more \
         than three quarters of GOMEMLIMIT ({} MiB) or the memory limiter's soft limit",
        (store + buffer) >> 20,
        gomemlimit >> 20
    );
    // The buffer holds decision_wait seconds of the rate it is said to expect.
    let wait: u64 = string(&tail["decision_wait"])
        .strip_suffix('s')
        .unwrap()
        .parse()
        .unwrap();
    let rate = tail["expected_new_traces_per_sec"].as_u64().unwrap();
    assert!(
        rate * wait <= num_traces,
        "{rate} new traces a second for {wait} s do not fit in num_traces {num_traces}"
    );
}

//! Head sampling across the four services: a ratio keeps about that share of traces, each of
//! them whole; the Jaeger remote strategies of `deploy/jaeger/sampling-strategies.json` are
//! fetched and applied per operation; an unsampled request still logs under its trace id and
//! says so in `traceresponse`.

mod jaeger;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use ordertrail_testkit::receiver::ReceivedSpan;
use ordertrail_testkit::topology::topology_problems;
use serde_json::json;

use crate::support::{Answer, GOOD_CARD, ROLES, Setup, TestStack, names, order};
use jaeger::{FakeJaeger, Strategies};

/// Requests in flight at once.
const CONCURRENCY: usize = 8;

/// The spans every confirmed order's trace holds, across the four services.
const CHECKOUT: [&str; 5] = [
    "POST /api/orders",
    "checkout",
    "payment.charge",
    "inventory.reserve",
    "inventory.commit",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ratio_keeps_about_its_share_of_traces_and_each_kept_trace_whole() {
    const RATIO: f64 = 0.25;
    const ORDERS: u64 = 300;
    let mut stack = TestStack::start_with(Setup {
        env: vec![
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
            ("OTEL_TRACES_SAMPLER_ARG", RATIO.to_string()),
        ],
        ..Setup::default()
    })
    .await;
    restock(&stack, "TRAIL-MUG", ORDERS as i64).await;

    let body = order("TRAIL-MUG", 1, GOOD_CARD);
    let answers = send(ORDERS as usize, |_| stack.post_order(&body, None, None)).await;

    assert!(
        answers.iter().all(|a| a.status == 201),
        "every order placed"
    );
    let (sampled, unsampled) = by_flag(&answers);
    let (low, high) = binomial_bounds(ORDERS, RATIO);
    let kept = sampled.len() as u64;
    println!("ratio {RATIO}: {kept} of {ORDERS} traces sampled, expected {low}..={high}");
    assert!(
        (low..=high).contains(&kept),
        "{kept} of {ORDERS} sampled at ratio {RATIO}, outside {low}..={high}"
    );
    let expected = sampled
        .iter()
        .map(|id| (id.clone(), &CHECKOUT[..]))
        .collect();
    let traces = exported(&mut stack, &expected, &unsampled).await;
    for (trace_id, spans) in &traces {
        assert_whole(trace_id, spans, &ROLES);
    }
    // Unsampled requests were served and logged like any other, in every service.
    for trace_id in unsampled.iter().take(10) {
        assert_logged_by_every_service(&stack, trace_id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_request_logs_under_its_trace_id_and_its_traceresponse_says_00() {
    let mut stack = TestStack::start_with(Setup {
        env: vec![("OTEL_TRACES_SAMPLER", "parentbased_always_off".to_owned())],
        ..Setup::default()
    })
    .await;

    let answer = stack
        .post_order(&order("TRAIL-TEE", 1, GOOD_CARD), None, None)
        .await;

    assert_eq!(answer.status, 201, "{}", answer.body);
    let traceresponse = answer.traceresponse.clone().expect("a traceresponse");
    assert!(traceresponse.ends_with("-00"), "{traceresponse}");
    let trace_id = answer.trace_id();
    assert!(
        trace_id.len() == 32 && trace_id != "0".repeat(32),
        "{trace_id}"
    );
    assert_logged_by_every_service(&stack, &trace_id).await;
    // A caller's unsampled trace is continued, unsampled, and keeps its id.
    let caller = "0af7651916cd43dd8448eb211c80319c";
    let answer = stack
        .post_order(
            &order("TRAIL-TEE", 1, GOOD_CARD),
            None,
            Some(&format!("00-{caller}-b7ad6b7169203331-00")),
        )
        .await;
    assert_eq!(answer.trace_id(), caller);
    assert!(answer.traceresponse.unwrap().ends_with("-00"));
    assert_logged_by_every_service(&stack, caller).await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = stack.all_spans();
    assert!(spans.is_empty(), "exported: {:#?}", names(&spans));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_remote_strategies_are_fetched_and_applied_per_operation() {
    let strategies = Strategies::deployed();
    let jaeger = FakeJaeger::serve(strategies.clone()).await;
    let mut stack = TestStack::start_with(Setup {
        env: vec![
            (
                "OTEL_TRACES_SAMPLER",
                "parentbased_jaeger_remote".to_owned(),
            ),
            (
                "OTEL_TRACES_SAMPLER_ARG",
                format!(
                    "endpoint={},pollingIntervalMs=100,initialSamplingRate=0",
                    jaeger.endpoint
                ),
            ),
        ],
        ..Setup::default()
    })
    .await;
    strategies_in_use(&stack).await;
    jaeger.asked_by(&ROLES).await;
    let placed = stack
        .post_order(&order("TRAIL-MUG", 1, GOOD_CARD), None, None)
        .await;
    let order_id = placed.body["order_id"].as_str().unwrap().to_owned();
    let body = order("TRAIL-MUG", 1, GOOD_CARD);

    let mut sampled_by_operation = BTreeMap::new();
    let (mut expected, mut unsampled) = (BTreeMap::new(), BTreeSet::new());
    for (operation, rate) in strategies.operations("gateway") {
        let n: u64 = if rate == 1.0 { 20 } else { 200 };
        let answers = match operation.as_str() {
            "POST /api/orders" => send(n as usize, |_| stack.post_order(&body, None, None)).await,
            "GET /api/orders/{order_id}" => {
                let path = format!("/api/orders/{order_id}");
                send(n as usize, |_| stack.get(&path)).await
            }
            "GET /api/products" => send(n as usize, |_| stack.get("/api/products")).await,
            other => panic!("the file names {other}, which this test does not know how to call"),
        };
        assert!(
            answers.iter().all(|a| a.status < 300),
            "{operation} answered"
        );
        let (kept, dropped) = by_flag(&answers);
        let (low, high) = binomial_bounds(n, rate);
        println!(
            "{operation} at {rate}: {} of {n} sampled, expected {low}..={high}",
            kept.len()
        );
        assert!(
            (low..=high).contains(&(kept.len() as u64)),
            "{operation} at {rate}: {} of {n} sampled, outside {low}..={high}",
            kept.len()
        );
        let spans = spans_of(&operation);
        expected.extend(kept.iter().map(|id| (id.clone(), spans)));
        sampled_by_operation.insert(operation, kept);
        unsampled.extend(dropped);
    }

    let traces = exported(&mut stack, &expected, &unsampled).await;
    for (operation, trace_ids) in &sampled_by_operation {
        for trace_id in trace_ids {
            let spans = &traces[trace_id];
            let services: &[&str] = match operation.as_str() {
                "POST /api/orders" => &ROLES,
                "GET /api/orders/{order_id}" => &["order", "gateway"],
                _ => &["inventory", "gateway"],
            };
            assert_whole(trace_id, spans, services);
            let root = spans
                .iter()
                .find(|s| s.kind == "server" && s.service_name == "gateway");
            assert_eq!(root.map(|s| s.name.as_str()), Some(operation.as_str()));
        }
    }
}

#[test]
fn the_deployed_strategies_file_is_jaegers_format_and_names_real_services() {
    // `Strategies::deployed` refuses a field Jaeger does not know; here, the values.
    let strategies = Strategies::deployed();
    let problems = strategies.problems(&ROLES);
    assert!(problems.is_empty(), "{problems:#?}");
    // Order placement is never thinned out, so a demo user sees every checkout.
    assert_eq!(
        strategies.operations("gateway").get("POST /api/orders"),
        Some(&1.0)
    );
}

/// Adds `units` to the stock of `sku`, at inventory directly.
async fn restock(stack: &TestStack, sku: &str, units: i64) {
    let url = format!("http://127.0.0.1:{}/restock", stack.ports["inventory"]);
    let body = json!({"items": [{"sku": sku, "quantity": units}]});
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Waits (up to twenty seconds, for a loaded machine) until the gateway samples an order
/// placement, which it does only once the strategies are in use (initial rate 0, every
/// `POST /api/orders` in the file). The probe's body is refused before anything is ordered;
/// its root span, and so the decision, is the same as an order's.
async fn strategies_in_use(stack: &TestStack) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let probe = stack.post_order(&json!({}), None, None).await;
        assert_eq!(
            probe.status / 100,
            4,
            "the probe is refused: {}",
            probe.body
        );
        let header = probe.traceresponse.expect("a traceresponse");
        if header.ends_with("-01") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never applied the strategies: {header}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `n` requests made by `request`, [`CONCURRENCY`] at a time.
async fn send<'a, F, R>(n: usize, request: R) -> Vec<Answer>
where
    R: Fn(usize) -> F,
    F: Future<Output = Answer> + 'a,
{
    futures::stream::iter(0..n)
        .map(request)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// The trace ids of `answers`, sampled (`traceresponse` flags `01`) and not (`00`).
fn by_flag(answers: &[Answer]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut sampled = BTreeSet::new();
    let mut unsampled = BTreeSet::new();
    for answer in answers {
        let header = answer.traceresponse.as_deref().expect("a traceresponse");
        match header.rsplit('-').next() {
            Some("01") => sampled.insert(answer.trace_id()),
            Some("00") => unsampled.insert(answer.trace_id()),
            _ => panic!("traceresponse {header} has neither flag"),
        };
    }
    (sampled, unsampled)
}

/// The spans a gateway operation's trace holds, at least.
fn spans_of(operation: &str) -> &'static [&'static str] {
    match operation {
        "POST /api/orders" => &CHECKOUT,
        "GET /api/orders/{order_id}" => &["GET /api/orders/{order_id}", "GET /orders/{order_id}"],
        _ => &["GET /api/products", "GET /products"],
    }
}

/// The exported spans of each sampled trace, once each holds the spans `expected` names for
/// it (or after ten seconds). Asserts that every sampled trace arrived whole and that no span
/// of an `unsampled` trace did.
async fn exported(
    stack: &mut TestStack,
    expected: &BTreeMap<String, &[&str]>,
    unsampled: &BTreeSet<String>,
) -> BTreeMap<String, Vec<ReceivedSpan>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let by_trace = |spans: Vec<ReceivedSpan>| {
        let mut traces: BTreeMap<String, Vec<ReceivedSpan>> = BTreeMap::new();
        for span in spans {
            traces.entry(span.trace_id.clone()).or_default().push(span);
        }
        traces
    };
    let complete = |id: &String, traces: &BTreeMap<String, Vec<ReceivedSpan>>| {
        traces.get(id).is_some_and(|spans| {
            expected[id]
                .iter()
                .all(|name| spans.iter().any(|s| s.name == *name))
        })
    };
    loop {
        let traces = by_trace(stack.all_spans());
        if expected.keys().all(|id| complete(id, &traces)) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stragglers of the last batches, and any span that should not have come.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traces = by_trace(stack.all_spans());
    let missing: Vec<&String> = expected
        .keys()
        .filter(|id| !complete(id, &traces))
        .collect();
    assert!(
        missing.is_empty(),
        "sampled traces not exported whole: {missing:?}"
    );
    let leaked: Vec<String> = unsampled
        .iter()
        .filter_map(|id| traces.get(id))
        .flat_map(|spans| names(spans))
        .collect();
    assert!(
        leaked.is_empty(),
        "spans of unsampled traces exported: {leaked:#?}"
    );
    traces
        .into_iter()
        .filter(|(id, _)| expected.contains_key(id))
        .collect()
}

/// Asserts that `spans` are one well-formed trace made by exactly `services`.
fn assert_whole(trace_id: &str, spans: &[ReceivedSpan], services: &[&str]) {
    assert_eq!(
        topology_problems(spans),
        Vec::<String>::new(),
        "trace {trace_id}: {:#?}",
        names(spans)
    );
    let made_by: BTreeSet<&str> = spans.iter().map(|s| s.service_name.as_str()).collect();
    assert_eq!(
        made_by,
        services.iter().copied().collect(),
        "trace {trace_id}: {:#?}",
        names(spans)
    );
}

/// Waits (up to five seconds) until each of the four services has logged a line of
/// `trace_id`, and fails naming those that have not.
async fn assert_logged_by_every_service(stack: &TestStack, trace_id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let logged: BTreeSet<String> = stack
            .logs()
            .iter()
            .filter(|l| l["trace.id"] == trace_id)
            .filter_map(|l| l["service.name"].as_str().map(str::to_owned))
            .collect();
        let silent: Vec<&&str> = ROLES.iter().filter(|r| !logged.contains(**r)).collect();
        if silent.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line of trace {trace_id} from {silent:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The counts a Binomial(`n`, `p`) variable falls outside of with probability below one in a
/// million (below half of that in each tail), from the exact distribution.
///
/// Each request's trace id is random, and the sampler keeps it when the id falls below the
/// rate, so the number kept out of `n` is binomial. A correct sampler fails this check once in
/// a million runs; a sampler that ignores the rate, or services deciding apart, lands far
/// outside.
fn binomial_bounds(n: u64, p: f64) -> (u64, u64) {
    if p <= 0.0 {
        return (0, 0);
    }
    if p >= 1.0 {
        return (n, n);
    }
    const TAIL: f64 = 0.5e-6;
    let ln_factorial: Vec<f64> = std::iter::once(0.0)
        .chain((1..=n).scan(0.0, |sum, k| {
            *sum += (k as f64).ln();
            Some(*sum)
        }))
        .collect();
    let pmf = |k: u64| {
        let ln_choose =
            ln_factorial[n as usize] - ln_factorial[k as usize] - ln_factorial[(n - k) as usize];
        (ln_choose + k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln()).exp()
    };
    let (mut low, mut below) = (0, 0.0);
    while below + pmf(low) <= TAIL {
        below += pmf(low);
        low += 1;
    }
    let (mut high, mut above) = (n, 0.0);
    while above + pmf(high) <= TAIL {
        above += pmf(high);
        high -= 1;
    }
    (low, high)
}

#[test]
fn binomial_bounds_are_tight_around_the_mean_and_exact_at_the_ends() {
    assert_eq!(binomial_bounds(300, 0.0), (0, 0));
    assert_eq!(binomial_bounds(20, 1.0), (20, 20));
    let (low, high) = binomial_bounds(300, 0.25);
    // Mean 75, standard deviation 7.5: about five deviations either side.
    assert!(
        (35..=45).contains(&low) && (105..=115).contains(&high),
        "{low}..={high}"
    );
}

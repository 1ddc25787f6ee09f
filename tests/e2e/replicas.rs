//! Replicas on PostgreSQL: three order services and two of each other service as real
//! processes, one database per service shared by its replicas, each service's replicas behind
//! the test kit's round-robin balancer (a Kubernetes Service's stand-in) that the services call
//! it by. The load goes through both gateways, the copies of one idempotency key to different
//! ones; one order replica is killed (SIGKILL) mid-load and started again. Afterwards every
//! invariant holds in the databases, no order was worked on by two workers at once (from the
//! spans), and no payment was captured or refunded twice (from the audit lines).
//!
//! The recovery sweep runs every 100 ms on every order replica and takes orders that stood
//! still for 3 s, the lease of a claim: shorter than every checkout that charges a card,
//! slowed by a latency fault on the payment replicas, so that only the orders' claims keep the
//! three sweeps off live checkouts and off each other's work, and so that the killed replica
//! surely dies with checkouts under way. The lease is seconds long so that a loaded 2-core
//! machine (nine processes and PostgreSQL) does not stall a holder past two thirds of it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ordertrail_testkit::receiver::ReceivedSpan;

use crate::support::ledger::{Ledger, report};
use crate::support::load::{self, Load, Retry, Sent};
use crate::support::{Databases, Setup, TestStack, one_load_at_a_time, sweep};

/// Keys sent, one every [`PACE`]: about fourteen seconds of load; with the copies of some keys
/// and the clients' retries, a few hundred requests.
const KEYS: usize = 350;
/// The pause between two keys.
const PACE: Duration = Duration::from_millis(40);
/// How long the killed order replica stays down.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// The sweep's stall time, and so the lease of a claim (a checkout renews it every third).
const STALLED_AFTER: Duration = Duration::from_secs(3);
/// Added to every charge: a checkout that charges outlasts the stall time, so the sweeps see
/// live orders standing still, and some eighty checkouts are under way at any time. Below the
/// order service's 5 s call timeout, so that a charge is not given up as unanswered.
const SLOW_CHARGE_MS: u64 = 3400;
/// Units added to each product but the limited map before the load, so that orders still
/// reach payment when the kill comes (the map still sells out).
const RESTOCK: i64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_order_replicas_and_two_of_each_service_on_postgresql_keep_every_invariant_through_a_kill()
 {
    let test = "three_order_replicas_and_two_of_each_service_on_postgresql_keep_every_invariant_through_a_kill";
    let Some(postgres) = Databases::postgres_from_env(test) else {
        return;
    };
    let _alone = one_load_at_a_time().await;
    let begun = Instant::now();
    let mut env = sweep("100ms", &format!("{}ms", STALLED_AFTER.as_millis()));
    env.push(("ORDERTRAIL_REPLICATED", "true".to_owned()));
    let mut stack = TestStack::start_with(Setup {
        databases: postgres,
        env,
        replicas: vec![
            ("order", 3),
            ("payment", 2),
            ("inventory", 2),
            ("gateway", 2),
        ],
        ..Setup::default()
    })
    .await;
    let started_in = begun.elapsed();
    slow_down_charges(&mut stack).await;
    restock(&stack).await;
    let initial = stack.stocks().await;

    let gateways = stack.gateways("/api/orders");
    assert_eq!(gateways.len(), 2);
    let load = Load::across(gateways, 1, Retry::UntilFinal);
    let running = tokio::spawn(paced(load.clone(), load::jobs(KEYS)));

    // A quarter in, every order replica has checkouts under way: kill one, bring it back.
    let give_up = Instant::now() + Duration::from_secs(30);
    while load.answered() < KEYS / 4 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    stack.kill_replica("order", 1).await;
    tokio::time::sleep(DOWN_FOR).await;
    stack.restart_replica("order", 1).await;
    let back_at = Instant::now();
    let sent = running.await.unwrap();
    let loaded_in = begun.elapsed() - started_in;
    let ledger = Ledger::settled(&stack, Duration::from_secs(20)).await;

    // The services export every 100 ms: let the last spans arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = stack.all_spans();
    let overlaps = overlapping_work(&spans);
    let logs = stack.logs();
    let twice = audited_twice(&logs);
    let recovered = logs
        .iter()
        .filter(|l| l["message"] == "open order recovered")
        .count();
    let claims_lost = logs
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("claim on the order lost"))
        })
        .count();
    let violations = ledger.violations(&initial, &sent);
    let reached: BTreeSet<&str> = sent
        .iter()
        .filter(|s| s.overlaps(killed_at, back_at))
        .map(|s| s.key.as_str())
        .collect();
    println!(
        "replicas on postgresql: started in {started_in:?}, load and kill {loaded_in:?}, all in {:?}; order replica killed after {} answers, back after {:?}; {} keys reached by the outage; {recovered} orders finished by the sweeps, {claims_lost} claims lost; {} checkouts, {} recoveries, {} overlapping\n{}\n{}\n{}",
        begun.elapsed(),
        sent.iter().filter(|s| s.ended <= killed_at).count(),
        back_at - killed_at,
        reached.len(),
        spans.iter().filter(|s| s.name == "checkout").count(),
        spans.iter().filter(|s| s.name == "order.recover").count(),
        overlaps.len(),
        load::summary(&sent),
        ledger.figures(&initial),
        report(&violations)
    );

    assert!(
        overlaps.is_empty(),
        "two workers drove one order at once: {overlaps:#?}"
    );
    assert!(
        twice.is_empty(),
        "money moved twice for one order: {twice:#?}"
    );
    assert!(
        violations.values().all(Vec::is_empty),
        "{}",
        report(&violations)
    );
    let unexpected = load::failed_outside(&sent, &reached);
    assert!(
        unexpected.is_empty(),
        "5xx or no answer outside the outage: {unexpected:#?}\nthe services' errors: {:#?}",
        stack.error_lines()
    );
    let unfinished = load::without_final_answer(&sent);
    assert!(unfinished.is_empty(), "no final answer: {unfinished:#?}");
    // The run did what it is for: checkouts outlasted the stall time while their replica
    // lived, the kill left orders for the sweeps, and copies of a key met on two gateways.
    let slowest_checkout = spans
        .iter()
        .filter(|s| s.name == "checkout")
        .map(|s| s.end_unix_nanos.saturating_sub(s.start_unix_nanos))
        .max()
        .unwrap_or_default();
    assert!(
        Duration::from_nanos(slowest_checkout) > STALLED_AFTER,
        "no checkout outlasted the stall time"
    );
    assert!(recovered > 0, "the kill left no order to the sweeps");
    assert!(
        sent.iter().any(|s| s.label() == "409 request in progress"),
        "no copy of a key arrived while its first was running"
    );
}

/// Every charge waits [`SLOW_CHARGE_MS`]: a rule set on each payment replica through its own
/// internal route (one call through the balancer would reach one replica only).
async fn slow_down_charges(stack: &mut TestStack) {
    let rules = format!(
        r#"[{{"kind": "latency", "service": "payment", "route": "POST /payments", "delay_ms": {SLOW_CHARGE_MS}}}]"#
    );
    for replica in 0..2 {
        let set = reqwest::Client::new()
            .put(stack.replica_url("payment", replica, "/internal/faults"))
            .header("content-type", "application/json")
            .body(rules.clone())
            .send()
            .await
            .unwrap();
        assert!(set.status().is_success(), "{}", set.status());
    }
}

/// Adds [`RESTOCK`] units of every product but TRAIL-MAP, through inventory's balancer.
async fn restock(stack: &TestStack) {
    let url = format!("http://127.0.0.1:{}/restock", stack.ports["inventory"]);
    let items: Vec<_> = stack
        .stocks()
        .await
        .into_keys()
        .filter(|sku| sku != "TRAIL-MAP")
        .map(|sku| serde_json::json!({"sku": sku, "quantity": RESTOCK}))
        .collect();
    let response = reqwest::Client::new()
        .post(url)
        .json(&serde_json::json!({ "items": items }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Sends one job every [`PACE`], each with its copies and retries, however long the answers
/// take: a bounded, steady load rather than a burst. Every request, in no order.
async fn paced(load: Load, jobs: Vec<load::Job>) -> Vec<Sent> {
    let start = tokio::time::Instant::now();
    let mut sending = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.into_iter().enumerate() {
        tokio::time::sleep_until(start + PACE * i as u32).await;
        let load = load.clone();
        sending.push(tokio::spawn(async move { load.run(vec![job]).await }));
    }
    let mut sent = Vec::new();
    for one in sending {
        sent.extend(one.await.unwrap());
    }
    sent
}

/// Two pieces of work on one order that overlapped in time: a recovery during a checkout, or
/// two recoveries (by one replica's sweep or two). Spans of the killed replica's unfinished
/// work are lost with it, and need not be here: its claims outlived it.
fn overlapping_work(spans: &[ReceivedSpan]) -> Vec<String> {
    let mut work: BTreeMap<&str, Vec<&ReceivedSpan>> = BTreeMap::new();
    for span in spans.iter().filter(|s| s.service_name == "order") {
        if (span.name == "checkout" || span.name == "order.recover")
            && let Some(order) = span.attribute("order.id")
        {
            work.entry(order).or_default().push(span);
        }
    }
    let mut found = Vec::new();
    for (order, spans) in work {
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                if a.start_unix_nanos < b.end_unix_nanos && b.start_unix_nanos < a.end_unix_nanos {
                    found.push(format!("order {order}: {} and {}", a.name, b.name));
                }
            }
        }
    }
    found
}

/// Orders whose payment was captured, or refunded, more than once, by the payment replicas'
/// audit lines. Fails if no audit line names its order, which would make this check empty.
fn audited_twice(logs: &[serde_json::Value]) -> Vec<String> {
    let mut counts = BTreeMap::<(String, String), usize>::new();
    for line in logs
        .iter()
        .filter(|l| l["event.dataset"] == "ordertrail.audit")
    {
        let action = line["event.action"].as_str().unwrap_or_default();
        if action != "payment-captured" && action != "payment-refunded" {
            continue;
        }
        let order = line["order.id"].as_str().unwrap_or_default();
        *counts
            .entry((action.to_owned(), order.to_owned()))
            .or_default() += 1;
    }
    assert!(
        counts
            .keys()
            .any(|(action, order)| action == "payment-captured" && !order.is_empty()),
        "no payment-captured audit line names its order"
    );
    counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((action, order), n)| format!("{action} {n} times for order {order}"))
        .collect()
}

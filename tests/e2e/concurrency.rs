//! Hundreds of orders at once, on SQLite and on PostgreSQL: duplicate keys sent together,
//! stock running out, declined cards. Afterwards the three databases must agree with each
//! other and with the answers, and no answer may be a 5xx.

use std::time::Duration;

use crate::support::ledger::{Ledger, report};
use crate::support::load::{self, Load, Retry};
use crate::support::{
    DECLINED_CARD, Databases, GOOD_CARD, Setup, TestStack, one_load_at_a_time, sweep,
};

/// Keys sent; with their copies, about 330 requests.
const KEYS: usize = 300;
/// Keys in flight at once.
const CONCURRENCY: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_orders_on_sqlite_keep_every_invariant() {
    concurrent_orders_keep_every_invariant(Databases::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_orders_on_postgresql_keep_every_invariant() {
    let test = "three_hundred_concurrent_orders_on_postgresql_keep_every_invariant";
    if let Some(postgres) = Databases::postgres_from_env(test) {
        concurrent_orders_keep_every_invariant(postgres).await;
    }
}

async fn concurrent_orders_keep_every_invariant(databases: Databases) {
    let _alone = one_load_at_a_time().await;
    let system = databases.system();
    let mut stack = TestStack::start_with(Setup {
        databases,
        // Well beyond the slowest checkout under this load, so the sweep races no saga; it
        // only finishes what something left open.
        env: sweep("200ms", "5s"),
        ..Setup::default()
    })
    .await;
    let initial = stack.stocks().await;

    let load = Load::new(stack.gateway("/api/orders"), CONCURRENCY, Retry::Never);
    let sent = load.run(load::jobs(KEYS)).await;
    let ledger = Ledger::settled(&stack, Duration::from_secs(15)).await;

    let violations = ledger.violations(&initial, &sent);
    println!(
        "concurrency on {system}: {}\n{}\n{}",
        load::summary(&sent),
        ledger.figures(&initial),
        report(&violations)
    );
    let failed: Vec<String> = sent
        .iter()
        .filter(|s| s.outcome.as_ref().map_or(true, |a| a.status >= 500))
        .map(|s| format!("{}: {}", s.key, s.label()))
        .collect();
    assert!(
        failed.is_empty(),
        "5xx or no answer: {failed:#?}\nthe services' errors: {:#?}",
        stack.error_lines()
    );
    assert!(
        violations.values().all(Vec::is_empty),
        "{}",
        report(&violations)
    );
    // The load did what it is for: some orders confirmed, some declined, some sold out, and
    // some duplicates arrived while their first copy was running.
    for label in [
        "201",
        "402 card_declined",
        "409 out_of_stock",
        "409 request in progress",
    ] {
        assert!(sent.iter().any(|s| s.label() == label), "no answer {label}");
    }
    stack.assert_card_nowhere(GOOD_CARD).await;
    stack.assert_card_nowhere(DECLINED_CARD).await;
}

//! Sending the load: an open loop (steps due at a fixed rate, whatever the answers' speed) or a
//! closed loop (each client starts its next step when its last one is answered).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Url;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::report::Report;
use super::restock::Restocker;
use super::scenario::{Picker, Scenario};

mod step;

/// When a run stops starting steps: after this many, or once this long has passed, or both
/// (whichever comes first).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Steps to run.
    pub steps: Option<u64>,
    /// How long to start steps for.
    pub duration: Option<Duration>,
}

impl Bound {
    fn allows(&self, n: u64, since_start: Duration) -> bool {
        self.steps.is_none_or(|steps| n < steps)
            && self.duration.is_none_or(|duration| since_start < duration)
    }
}

/// What every step shares: the client, the report, the restocker.
#[derive(Debug)]
pub struct Driver {
    http: reqwest::Client,
    orders: Url,
    products: Url,
    report: Arc<Mutex<Report>>,
    restocker: Arc<Restocker>,
    picker: Mutex<Picker>,
    /// Makes this run's idempotency keys its own: a key reused with another body is a 422.
    run_id: String,
}

impl Driver {
    /// A driver of the gateway at `gateway`.
    pub fn new(
        http: reqwest::Client,
        gateway: &Url,
        picker: Picker,
        report: Arc<Mutex<Report>>,
        restocker: Arc<Restocker>,
    ) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Self {
            http,
            orders: gateway.join("/api/orders").expect("a path joins any URL"),
            products: gateway.join("/api/products").expect("a path joins any URL"),
            report,
            restocker,
            picker: Mutex::new(picker),
            run_id: format!("{:x}-{:x}", std::process::id(), nanos),
        }
    }

    /// Steps due `1 / rate` seconds apart from now, at most `max_in_flight` at once, until
    /// `bound` or `stop`; then waits for the steps under way. Each latency counts from the
    /// moment its step was due, so a server that stalls cannot hide its stall by slowing the
    /// tool down (no coordinated omission).
    pub async fn open_loop(
        self: &Arc<Self>,
        rate: f64,
        max_in_flight: usize,
        bound: Bound,
        stop: &CancellationToken,
    ) {
        let start = Instant::now();
        let slots = Arc::new(Semaphore::new(max_in_flight));
        let mut steps = JoinSet::new();
        for n in 0.. {
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            if !bound.allows(n, due - start) {
                break;
            }
            let slot = tokio::select! {
                () = stop.cancelled() => break,
                slot = async {
                    tokio::time::sleep_until(due).await;
                    slots.clone().acquire_owned().await
                } => slot.expect("the semaphore is never closed"),
            };
            let scenario = self.pick();
            self.report().sent_late(due.elapsed());
            let driver = self.clone();
            steps.spawn(async move {
                driver.step(scenario, n, due).await;
                drop(slot);
            });
            while steps.try_join_next().is_some() {}
        }
        while steps.join_next().await.is_some() {}
    }

    /// `clients` clients, each running a step as soon as its last one is answered, until
    /// `bound` or `stop`.
    pub async fn closed_loop(
        self: &Arc<Self>,
        clients: usize,
        bound: Bound,
        stop: &CancellationToken,
    ) {
        let start = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..clients {
            let (driver, next, stop) = (self.clone(), next.clone(), stop.clone());
            tasks.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if stop.is_cancelled() || !bound.allows(n, start.elapsed()) {
                        return;
                    }
                    let scenario = driver.pick();
                    driver.step(scenario, n, Instant::now()).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    fn pick(&self) -> Scenario {
        let scenario = self.picker.lock().expect("not poisoned").next_scenario();
        self.report().step(scenario);
        scenario
    }

    fn report(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report.lock().expect("not poisoned")
    }
}

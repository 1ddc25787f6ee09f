//! `TestStack`: four services started by the test kit's launcher, a trace receiver and their
//! captured log lines.

pub mod ledger;
pub mod load;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use ordertrail_testkit::db::{POSTGRES_URL_VAR, PostgresDatabases};
use ordertrail_testkit::launcher::{Launcher, Role, Services, Stream};
use ordertrail_testkit::receiver::{self, ReceivedSpan};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;

/// The roles, callees first.
pub const ROLES: [&str; 4] = ["inventory", "payment", "order", "gateway"];

/// A card that is captured, and one that is declined.
pub const GOOD_CARD: &str = "4242424242424242";
pub const DECLINED_CARD: &str = "4000000000000002";

/// Taken by each test that loads a stack hard: one such test at a time, as each needs both
/// cores of a CI runner (a saga slowed beyond the sweep's stall time would be raced by it).
pub async fn one_load_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOAD.lock().await
}

/// The four services, running.
pub struct TestStack {
    pub ports: HashMap<&'static str, u16>,
    /// `None` only while the stack is dropped.
    services: Option<Services>,
    requests: mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
    /// Every export request received, as it came.
    pub raw: Vec<ExportTraceServiceRequest>,
    received: Vec<ReceivedSpan>,
    logs: Arc<Mutex<Vec<Value>>>,
    pub dir: PathBuf,
    /// `DATABASE_URL` of order, payment and inventory.
    database_urls: HashMap<&'static str, String>,
    /// Ports of stopped or killed services, held so that calls to them are refused.
    held: HashMap<&'static str, TcpSocket>,
    /// The same, for replicas of a role run as several.
    held_replicas: HashMap<(&'static str, usize), TcpSocket>,
    http: reqwest::Client,
    /// Declared last: dropped once the services are gone.
    _postgres: Option<PostgresDatabases>,
}

/// How to start a stack. The default: telemetry to the test's receiver, SQLite, nothing more.
#[derive(Default)]
pub struct Setup {
    pub telemetry: Telemetry,
    pub databases: Databases,
    /// More variables for every service, such as the recovery sweep's timings.
    pub env: Vec<(&'static str, String)>,
    /// Roles run as several replicas, behind the launcher's balancer, and how many.
    pub replicas: Vec<(&'static str, usize)>,
}

/// Where order, payment and inventory keep their data.
#[derive(Debug, Clone, Default)]
pub enum Databases {
    /// A SQLite file each, in the stack's folder.
    #[default]
    Sqlite,
    /// A fresh database each on the PostgreSQL server at this URL, dropped with the stack.
    Postgres(String),
}

impl Databases {
    /// `sqlite` or `postgresql`, to print.
    pub fn system(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgresql",
        }
    }

    /// The server named by `ORDERTRAIL_TEST_POSTGRES_URL`, or `None` with a note saying that
    /// `test` is skipped.
    pub fn postgres_from_env(test: &str) -> Option<Self> {
        match std::env::var(POSTGRES_URL_VAR) {
            Ok(server) => Some(Self::Postgres(server)),
            Err(_) => {
                eprintln!("{test}: skipped, {POSTGRES_URL_VAR} is not set");
                None
            }
        }
    }
}

/// The recovery sweep's timings, as the order service reads them.
pub fn sweep(every: &str, stalled_after: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RECOVERY_SWEEP_EVERY", every.to_owned()),
        ("RECOVERY_STALLED_AFTER", stalled_after.to_owned()),
    ]
}

/// Where the services send their telemetry, when not to the test's own receiver.
#[derive(Default)]
pub struct Telemetry {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` instead of the receiver.
    pub otlp_endpoint: Option<String>,
}

/// A socket bound to `port` on 127.0.0.1 that never listens: while it lives the port is taken
/// and every connection to it is refused.
pub fn refusing_socket(port: u16) -> TcpSocket {
    let socket = TcpSocket::new_v4().unwrap();
    // The stopped service's connections may linger in TIME_WAIT on this port.
    socket.set_reuseaddr(true).unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap();
    socket
}

/// An answer from the gateway.
pub struct Answer {
    pub status: u16,
    pub traceresponse: Option<String>,
    pub body: Value,
}

impl Answer {
    /// The trace id from the `traceresponse` header.
    pub fn trace_id(&self) -> String {
        let header = self
            .traceresponse
            .as_deref()
            .expect("a traceresponse header");
        header
            .split('-')
            .nth(1)
            .expect("a trace id in traceresponse")
            .to_owned()
    }

    /// Reads `response` whole; a body that is not JSON is `Null`.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let traceresponse = response
            .headers()
            .get("traceresponse")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.json().await.unwrap_or(Value::Null);
        Self {
            status,
            traceresponse,
            body,
        }
    }
}

impl TestStack {
    /// Starts the receiver and the four services, and waits until each is ready.
    pub async fn start() -> Self {
        Self::start_with(Setup::default()).await
    }

    /// Like [`TestStack::start`], as `setup` says.
    pub async fn start_with(setup: Setup) -> Self {
        let (receiver_addr, requests) = receiver::start_raw(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let dir = std::env::temp_dir().join(format!("ordertrail-e2e-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        let (database_urls, postgres) = match &setup.databases {
            Databases::Sqlite => {
                let urls = ["order", "payment", "inventory"].map(|role| {
                    (
                        role,
                        format!("sqlite://{}/{role}.db?mode=rwc", dir.display()),
                    )
                });
                (HashMap::from(urls), None)
            }
            Databases::Postgres(server) => {
                let databases =
                    PostgresDatabases::create(server, &["order", "payment", "inventory"]).await;
                (databases.urls(), Some(databases))
            }
        };
        let Telemetry { otlp_endpoint } = setup.telemetry;
        let mut env = vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                otlp_endpoint.unwrap_or_else(|| format!("http://{receiver_addr}")),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ];
        env.extend(setup.env);
        let logs = Arc::<Mutex<Vec<Value>>>::default();
        let mut launcher = Launcher::new(env!("CARGO_BIN_EXE_ordertrail")).env_clear();
        for (key, value) in env {
            launcher = launcher.env(key, value);
        }
        for (name, url) in &database_urls {
            launcher = launcher.role_env(role(name), "DATABASE_URL", url);
        }
        for (name, count) in setup.replicas {
            launcher = launcher.replicas(role(name), count);
        }
        let captured = logs.clone();
        let launcher = launcher.on_line(move |line| match line.stream {
            Stream::Stdout => {
                let value: Value = serde_json::from_str(line.text).unwrap_or_else(|err| {
                    panic!(
                        "{} wrote a line that is not JSON ({err}): {}",
                        line.role, line.text
                    )
                });
                captured.lock().unwrap().push(value);
            }
            Stream::Stderr => eprintln!("{}: {}", line.role, line.text),
        });
        // Each service binds a port of its own choosing (port 0) and logs it; callees start
        // first, so their ports are known when their callers start. Picking free ports here
        // instead would race with every other process binding ports meanwhile.
        let services = launcher.start().await.unwrap_or_else(|err| panic!("{err}"));
        Self {
            ports: ROLES.map(|name| (name, services.port(role(name)))).into(),
            services: Some(services),
            requests,
            raw: Vec::new(),
            received: Vec::new(),
            logs,
            dir,
            database_urls,
            held: HashMap::new(),
            held_replicas: HashMap::new(),
            http: reqwest::Client::new(),
            _postgres: postgres,
        }
    }

    fn services(&mut self) -> &mut Services {
        self.services.as_mut().expect("a running stack")
    }

    /// Stops one service with SIGTERM and waits for it to exit.
    pub async fn stop(&mut self, name: &'static str) {
        let stopped = self
            .services()
            .stop(role(name))
            .await
            .expect("a running service");
        assert!(!stopped.killed, "{name} did not stop in time");
        let status = stopped.status.unwrap();
        assert!(status.success(), "{name} exited with {status}");
        // Keep its port taken, so that no other test's service can start on it and answer
        // in its place: connections to it are refused, as to a stopped service.
        self.held.insert(name, refusing_socket(self.ports[name]));
    }

    /// Kills one service with SIGKILL, as a crash would: no drain, no flush. Its port refuses
    /// connections until [`TestStack::restart`].
    pub async fn kill(&mut self, name: &'static str) {
        let stopped = self
            .services()
            .kill(role(name))
            .await
            .expect("a running service");
        let status = stopped.status.unwrap();
        assert!(!status.success(), "{name} exited with {status}");
        self.held.insert(name, refusing_socket(self.ports[name]));
    }

    /// Starts a stopped or killed service again, on its port and with its database, and waits
    /// until it is ready.
    pub async fn restart(&mut self, name: &'static str) {
        drop(self.held.remove(name));
        let restarted = self.services().restart(role(name)).await;
        restarted.unwrap_or_else(|err| panic!("{err}"));
    }

    /// Kills replica `replica` of a service run as several with SIGKILL; its port refuses
    /// connections (so the balancer passes it over) until [`TestStack::restart_replica`].
    pub async fn kill_replica(&mut self, name: &'static str, replica: usize) {
        let stopped = self
            .services()
            .kill_replica(role(name), replica)
            .await
            .expect("a running replica");
        let status = stopped.status.unwrap();
        assert!(!status.success(), "{name} {replica} exited with {status}");
        let port = self.services().replica_port(role(name), replica);
        self.held_replicas
            .insert((name, replica), refusing_socket(port));
    }

    /// Starts a killed replica again, on its port and with its database, and waits until it is
    /// ready.
    pub async fn restart_replica(&mut self, name: &'static str, replica: usize) {
        drop(self.held_replicas.remove(&(name, replica)));
        let restarted = self.services().restart_replica(role(name), replica).await;
        restarted.unwrap_or_else(|err| panic!("{err}"));
    }

    /// The URL of `path` at replica `replica` of `name`, bypassing its balancer.
    pub fn replica_url(&mut self, name: &str, replica: usize, path: &str) -> String {
        let url = self.services().replica_url(role(name), replica);
        format!("{url}{path}")
    }

    /// The URL of `path` at each replica of the gateway.
    pub fn gateways(&mut self, path: &str) -> Vec<String> {
        let services = self.services();
        (0..services.replicas(Role::Gateway))
            .map(|replica| format!("{}{path}", services.replica_url(Role::Gateway, replica)))
            .collect()
    }

    /// The `DATABASE_URL` of `role` (order, payment or inventory).
    pub fn database_url(&self, role: &str) -> &str {
        &self.database_urls[role]
    }

    /// The URL of `path` at the gateway.
    pub fn gateway(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports["gateway"])
    }

    /// `POST /api/orders` with `body`, an optional idempotency key and an optional traceparent.
    pub async fn post_order(
        &self,
        body: &Value,
        key: Option<&str>,
        traceparent: Option<&str>,
    ) -> Answer {
        let mut request = self.http.post(self.gateway("/api/orders")).json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        Answer::read(request.send().await.unwrap()).await
    }

    /// `GET` a gateway path.
    pub async fn get(&self, path: &str) -> Answer {
        Answer::read(self.http.get(self.gateway(path)).send().await.unwrap()).await
    }

    /// `GET` a path of one service directly.
    pub async fn get_from(&self, role: &str, path: &str) -> Answer {
        let url = format!("http://127.0.0.1:{}{path}", self.ports[role]);
        Answer::read(self.http.get(url).send().await.unwrap()).await
    }

    /// The stock of `sku`.
    pub async fn stock(&self, sku: &str) -> i64 {
        let products = self.get("/api/products").await.body;
        products
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["sku"] == sku)
            .unwrap()["stock"]
            .as_i64()
            .unwrap()
    }

    /// The stock of every product, by SKU.
    pub async fn stocks(&self) -> BTreeMap<String, i64> {
        let products = self.get("/api/products").await.body;
        products
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["sku"].as_str().unwrap().to_owned(),
                    p["stock"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    /// Asserts that `card`, whole or its first twelve digits, is nowhere the stack put
    /// anything: see [`TestStack::places_holding`].
    pub async fn assert_card_nowhere(&mut self, card: &str) {
        let places = self.places_holding(card).await;
        assert!(places.is_empty(), "{}", places.join("\n"));
    }

    /// Where `card`, whole or its first twelve digits, was found: in a captured log line, in
    /// anything exported (span names, attributes, events, resources), in any value of any
    /// table of the order, payment and inventory databases (SQLite or PostgreSQL alike), and,
    /// on SQLite, in the bytes of any file of the stack's folder (which also holds what no
    /// table shows: freed pages, a journal or write-ahead log). Empty when it is nowhere.
    pub async fn places_holding(&mut self, card: &str) -> Vec<String> {
        // The services export every 100 ms: let the last batches arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.drain();
        assert!(!self.raw.is_empty(), "nothing was exported to search");
        let exported = serde_json::to_string(&self.raw).unwrap();
        let logs = self.logs();
        let mut values = Vec::new();
        for role in ["order", "payment", "inventory"] {
            let found = ledger::every_value(self.database_url(role)).await;
            assert!(
                !found.is_empty(),
                "the {role} database holds nothing to search"
            );
            values.extend(found.into_iter().map(|(at, value)| (role, at, value)));
        }
        // SQLite removes its -wal and -shm files when the last connection closes: a file listed
        // here may be gone by the time it is read.
        let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                Some((path.display().to_string(), std::fs::read(&path).ok()?))
            })
            .collect();
        let mut places = Vec::new();
        for needle in [card, &card[..12]] {
            if let Some(line) = logs.iter().find(|l| l.to_string().contains(needle)) {
                places.push(format!("a log line holds {needle}: {line}"));
            }
            if let Some(at) = exported.find(needle) {
                let mut from = at.saturating_sub(300);
                while !exported.is_char_boundary(from) {
                    from -= 1;
                }
                let mut to = (at + 300).min(exported.len());
                while !exported.is_char_boundary(to) {
                    to += 1;
                }
                let around = &exported[from..to];
                places.push(format!("an exported span holds {needle}: …{around}…"));
            }
            for (role, at, value) in &values {
                if value.contains(needle) {
                    places.push(format!(
                        "the {role} database's {at} holds {needle}: {value}"
                    ));
                }
            }
            for (path, bytes) in &files {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    places.push(format!("{path} holds {needle}"));
                }
            }
        }
        places
    }

    /// The spans of `trace_id`, once spans named `expected` have all arrived (or after ten
    /// seconds, when the assertions on them will say what is missing).
    pub async fn trace(&mut self, trace_id: &str, expected: &[&str]) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            self.drain();
            let spans: Vec<ReceivedSpan> = self
                .received
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            let complete = expected
                .iter()
                .all(|name| spans.iter().any(|s| s.name == *name));
            if complete || tokio::time::Instant::now() > deadline {
                // Let stragglers of the last batch arrive too.
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.drain();
                return self
                    .received
                    .iter()
                    .filter(|s| s.trace_id == trace_id)
                    .cloned()
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every span received so far, of any trace.
    pub fn all_spans(&mut self) -> Vec<ReceivedSpan> {
        self.drain();
        self.received.clone()
    }

    /// Takes what the receiver got since the last call.
    fn drain(&mut self) {
        while let Ok(request) = self.requests.try_recv() {
            self.received.extend(receiver::flatten(request.clone()));
            self.raw.push(request);
        }
    }

    /// The log lines at level ERROR, the first twenty: what to look at when a request got a
    /// 5xx.
    pub fn error_lines(&self) -> Vec<Value> {
        let logs = self.logs.lock().unwrap();
        logs.iter()
            .filter(|l| l["log.level"] == "ERROR")
            .take(20)
            .cloned()
            .collect()
    }

    /// Every log line captured so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        // Kill the services first, so that their databases can be dropped.
        drop(self.services.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The launcher's name for `name`.
fn role(name: &str) -> Role {
    name.parse().unwrap()
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// An order body for `sku` × `quantity`, paid with `card`.
pub fn order(sku: &str, quantity: i64, card: &str) -> Value {
    json!({
        "customer_id": "c-42",
        "items": [{"sku": sku, "quantity": quantity}],
        "payment": {"card_number": card, "expiry": "12/30", "cvc": "123"}
    })
}

/// The one span named `name`.
pub fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one span named {name}, got {}: {:#?}",
        found.len(),
        names(spans)
    );
    found[0]
}

/// `service: name` of every span, for failure messages.
pub fn names(spans: &[ReceivedSpan]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{}: {} ({})", s.service_name, s.name, s.kind))
        .collect()
}

/// Asserts that every span of `spans` carries `customer.id` = `customer`, listing those that
/// do not.
pub fn assert_every_span_carries_the_customer(spans: &[ReceivedSpan], customer: &str) {
    let without: Vec<String> = spans
        .iter()
        .filter(|s| s.attribute("customer.id") != Some(customer))
        .map(|s| {
            format!(
                "{}: {} ({}) customer.id = {:?}",
                s.service_name,
                s.name,
                s.kind,
                s.attribute("customer.id")
            )
        })
        .collect();
    assert!(
        without.is_empty(),
        "{} of {} spans lack customer.id {customer}: {without:#?}",
        without.len(),
        spans.len()
    );
}

/// The parent of `span` among `spans`.
pub fn parent<'a>(spans: &'a [ReceivedSpan], span: &ReceivedSpan) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.span_id == span.parent_span_id)
        .unwrap_or_else(|| {
            panic!(
                "the parent of {} ({}) is not in the trace",
                span.name, span.service_name
            )
        })
}

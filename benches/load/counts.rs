//! `--counts N`: what an order leaves behind, counted rather than timed, for the capacity
//! model (`deploy/k8s/CAPACITY.md`). Counts do not depend on how busy the machine is.
//!
//! One PostgreSQL stack, telemetry on (plus any `--service-env`, e.g. a sampler), places N
//! captured orders and then N declined ones, each batch alone in its window, and reports per
//! order and per service:
//! - spans received and their OTLP/gRPC payload (the protobuf of each export request and its
//!   5-byte gRPC frame; HTTP/2 framing and headers not counted), and the same spans written as
//!   Jaeger's Elasticsearch span document (`dbmodel.Span`, values as strings), an estimate of
//!   what Jaeger stores;
//! - the traces: how many, how many hold an error span, how many last over 250 ms (the tail
//!   sampling policies of `deploy/jaeger/tail-sampling-on.yaml`);
//! - the ECS JSON lines and bytes each service wrote to stdout;
//! - from PostgreSQL, per service database: `pg_stat_database`'s committed and rolled-back
//!   transactions and rows inserted, updated and deleted, and the WAL the database's records
//!   took (`pg_walinspect` over the window: records touching the database's relations, and the
//!   commit records of their transactions), full-page images apart;
//! - each service's OTLP metrics export, bytes per export.
//!
//! ```sh
//! ORDERTRAIL_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench --bench load -- --counts 500 --connections 4
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use ordertrail_testkit::receiver;
use prost::Message as _;
use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection, Row as _};

use crate::Settings;
use crate::drive;
use crate::stack::{Db, ROLES, Stack, Telemetry};

/// After the last answer: the batch span processor exports every 5 s, and PostgreSQL's
/// backends flush their statistics once idle for 10 s at most.
const SETTLE: Duration = Duration::from_secs(12);
/// Orders placed before counting, so that every connection pool is open.
const WARM_UP_ORDERS: u64 = 40;
/// The threshold of the tail-sampling policy `slow`.
const SLOW: Duration = Duration::from_millis(250);

/// An order batch: its card and the status its orders are answered with.
#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    card: &'static str,
    status: u16,
}

const CAPTURED: Scenario = Scenario {
    name: "captured",
    card: "4242424242424242",
    status: 201,
};
const DECLINED: Scenario = Scenario {
    name: "declined",
    card: "4000000000000002",
    status: 402,
};

/// What the receiver has seen, per `service.name`, since it started.
#[derive(Debug, Default, Clone)]
struct Received {
    services: BTreeMap<String, ServiceTelemetry>,
    /// Per trace id: whether a span was an error, and the root span's duration.
    traces: HashMap<Vec<u8>, TraceFacts>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ServiceTelemetry {
    spans: u64,
    trace_bytes: u64,
    jaeger_bytes: u64,
    metric_exports: u64,
    metric_bytes: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct TraceFacts {
    error: bool,
    root_nanos: Option<u64>,
}

/// One database's counters at one moment.
#[derive(Debug, Default, Clone, Copy)]
struct DbCounters {
    commits: i64,
    rollbacks: i64,
    inserted: i64,
    updated: i64,
    deleted: i64,
}

/// The WAL one database's records took over a window.
#[derive(Debug, Default, Clone, Copy)]
struct Wal {
    records: i64,
    bytes: i64,
    fpi_bytes: i64,
}

/// One batch's counts per order.
struct Counted {
    /// CPU time of each database's server processes (its connections), in clock ticks.
    db_ticks: Vec<u64>,
    scenario: Scenario,
    orders: u64,
    failed: u64,
    telemetry: BTreeMap<String, ServiceTelemetry>,
    traces: u64,
    error_traces: u64,
    slow_traces: u64,
    logs: Vec<(u64, u64)>,
    db: Vec<Option<(DbCounters, Wal)>>,
    cluster_wal: i64,
}

/// Runs the counts and prints them as Markdown tables.
pub async fn run(http: &reqwest::Client, settings: &Settings, orders: u64) -> anyhow::Result<()> {
    let server = settings
        .postgres
        .clone()
        .context("--counts needs PostgreSQL: --postgres URL or ORDERTRAIL_BENCH_POSTGRES_URL")?;
    let received = Arc::new(Mutex::new(Received::default()));
    let endpoint = start_receiver(received.clone()).await?;
    let telemetry = Telemetry::On { endpoint };
    let db = Db::Postgres(server.clone());
    let stack = Stack::start(http, &db, &telemetry, "counts", &settings.service_env).await?;
    let result = count_on(http, settings, &server, &stack, &received, orders).await;
    stack.stop().await;
    let counted = result?;
    print(&counted, settings);
    Ok(())
}

async fn count_on(
    http: &reqwest::Client,
    settings: &Settings,
    server: &str,
    stack: &Stack,
    received: &Mutex<Received>,
    orders: u64,
) -> anyhow::Result<Vec<Counted>> {
    // pg_walinspect in a database of its own, so that its queries count in no service's.
    let mut admin = PgConnection::connect(server).await?;
    let inspect = format!("ordertrail_bench_{}_walinspect", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {inspect}"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {inspect}"))
        .execute(&mut admin)
        .await?;
    let result = async {
        let mut wal = PgConnection::connect(&crate::stack::database_url(server, &inspect)).await?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
            .execute(&mut wal)
            .await
            .context("pg_walinspect (PostgreSQL 15 or later, a superuser)")?;
        drive::restock(http, &stack.inventory, 2 * orders + WARM_UP_ORDERS).await?;
        place(http, stack, CAPTURED, WARM_UP_ORDERS, settings.connections).await;
        let mut counted = Vec::new();
        for scenario in [CAPTURED, DECLINED] {
            counted.push(count(http, settings, stack, received, &mut wal, scenario, orders).await?);
        }
        wal.close().await?;
        anyhow::Ok(counted)
    }
    .await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {inspect} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    result
}

async fn count(
    http: &reqwest::Client,
    settings: &Settings,
    stack: &Stack,
    received: &Mutex<Received>,
    wal: &mut PgConnection,
    scenario: Scenario,
    orders: u64,
) -> anyhow::Result<Counted> {
    eprintln!("counts: {orders} {} orders", scenario.name);
    // What came before (the warm-up, the last batch) is exported and flushed meanwhile.
    tokio::time::sleep(SETTLE).await;
    let telemetry_before = {
        let mut received = received.lock().expect("not poisoned");
        received.traces.clear();
        received.services.clone()
    };
    let logs_before = log_sizes(stack)?;
    let db_before = db_counters(wal, stack).await?;
    let lsn_before = current_lsn(wal).await?;
    let backends_before = backend_ticks(wal, stack).await?;

    let failed = place(http, stack, scenario, orders, settings.connections).await;
    tokio::time::sleep(SETTLE).await;

    let lsn_after = current_lsn(wal).await?;
    let backends_after = backend_ticks(wal, stack).await?;
    let db_ticks = backends_after
        .iter()
        .zip(&backends_before)
        .map(|(after, before)| {
            after
                .iter()
                .map(|(pid, ticks)| ticks - before.get(pid).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let db_after = db_counters(wal, stack).await?;
    let logs = log_sizes(stack)?
        .iter()
        .zip(&logs_before)
        .map(|(after, before)| count_lines(&after.0, before.1, after.1))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (wal_by_db, cluster_wal) = wal_between(wal, &lsn_before, &lsn_after).await?;
    let received = received.lock().expect("not poisoned").clone();
    let telemetry = received
        .services
        .iter()
        .map(|(name, after)| {
            let before = telemetry_before.get(name).copied().unwrap_or_default();
            (name.clone(), after.minus(before))
        })
        .collect();
    let traces = received.traces.values();
    let db = ROLES
        .iter()
        .zip(db_before.iter().zip(&db_after))
        .map(|(role, (before, after))| {
            let name = stack.database(role)?;
            let (before, after) = (before.as_ref()?, after.as_ref()?);
            Some((
                after.minus(*before),
                wal_by_db.get(name).copied().unwrap_or_default(),
            ))
        })
        .collect();
    Ok(Counted {
        db_ticks,
        scenario,
        orders,
        failed,
        telemetry,
        traces: traces.len() as u64,
        error_traces: traces.clone().filter(|t| t.error).count() as u64,
        slow_traces: traces
            .filter(|t| t.root_nanos.is_some_and(|n| n > SLOW.as_nanos() as u64))
            .count() as u64,
        logs,
        db,
        cluster_wal,
    })
}

/// Places `n` orders of `scenario` from `connections` clients; returns how many were not
/// answered as expected.
async fn place(
    http: &reqwest::Client,
    stack: &Stack,
    scenario: Scenario,
    n: u64,
    connections: usize,
) -> u64 {
    let url = format!("{}/api/orders", stack.gateway);
    let run = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    futures::stream::iter(0..n)
        .map(|i| {
            let request = http
                .post(&url)
                .header("idempotency-key", format!("counts-{run}-{nanos}-{i}"))
                .json(&json!({
                    "customer_id": "c-counts",
                    "items": [{"sku": drive::SKUS[i as usize % drive::SKUS.len()], "quantity": 1}],
                    "payment": {"card_number": scenario.card, "expiry": "12/30", "cvc": "123"}
                }));
            async move {
                match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.bytes().await.is_ok() && status == scenario.status
                    }
                    Err(_) => false,
                }
            }
        })
        .buffer_unordered(connections)
        .filter(|answered| std::future::ready(!answered))
        .count()
        .await as u64
}

/// A receiver of traces and metrics that tallies what each service sends.
async fn start_receiver(received: Arc<Mutex<Received>>) -> anyhow::Result<String> {
    let mut otlp = receiver::start_otlp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let traces = received.clone();
    tokio::spawn(async move {
        while let Some(request) = otlp.traces.recv().await {
            traces.lock().expect("not poisoned").add_traces(&request);
        }
    });
    tokio::spawn(async move {
        while let Some(request) = otlp.metrics.recv().await {
            let service = request
                .resource_metrics
                .first()
                .map(|r| service_name(r.resource.as_ref().map_or(&[][..], |r| &r.attributes)))
                .unwrap_or_default();
            let mut received = received.lock().expect("not poisoned");
            let tally = received.services.entry(service).or_default();
            tally.metric_exports += 1;
            tally.metric_bytes += grpc_bytes(request.encoded_len());
        }
    });
    Ok(format!("http://{}", otlp.addr))
}

impl Received {
    fn add_traces(&mut self, request: &ExportTraceServiceRequest) {
        // A service's export request holds its one resource: the request is the service's.
        if let Some(first) = request.resource_spans.first() {
            let resource = first.resource.as_ref().map_or(&[][..], |r| &r.attributes);
            let tally = self.services.entry(service_name(resource)).or_default();
            tally.trace_bytes += grpc_bytes(request.encoded_len());
        }
        for resource_spans in &request.resource_spans {
            let resource = resource_spans
                .resource
                .as_ref()
                .map_or(&[][..], |r| &r.attributes);
            let service = service_name(resource);
            let tally = self.services.entry(service.clone()).or_default();
            for scope_spans in &resource_spans.scope_spans {
                let scope = scope_spans.scope.as_ref();
                for span in &scope_spans.spans {
                    tally.spans += 1;
                    let document = jaeger_document(&service, resource, scope, span);
                    tally.jaeger_bytes += document.to_string().len() as u64;
                    let facts = self.traces.entry(span.trace_id.clone()).or_default();
                    facts.error |= span.status.as_ref().is_some_and(|s| s.code == 2);
                    if span.parent_span_id.is_empty() {
                        facts.root_nanos = Some(
                            span.end_time_unix_nano
                                .saturating_sub(span.start_time_unix_nano),
                        );
                    }
                }
            }
        }
    }
}

impl ServiceTelemetry {
    fn minus(self, before: Self) -> Self {
        Self {
            spans: self.spans - before.spans,
            trace_bytes: self.trace_bytes - before.trace_bytes,
            jaeger_bytes: self.jaeger_bytes - before.jaeger_bytes,
            metric_exports: self.metric_exports - before.metric_exports,
            metric_bytes: self.metric_bytes - before.metric_bytes,
        }
    }
}

impl DbCounters {
    fn minus(self, before: Self) -> Self {
        Self {
            commits: self.commits - before.commits,
            rollbacks: self.rollbacks - before.rollbacks,
            inserted: self.inserted - before.inserted,
            updated: self.updated - before.updated,
            deleted: self.deleted - before.deleted,
        }
    }
}

/// A message's size on a gRPC stream: the protobuf and its 5-byte length prefix.
fn grpc_bytes(encoded: usize) -> u64 {
    encoded as u64 + 5
}

fn service_name(resource: &[KeyValue]) -> String {
    resource
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .map(text)
        .unwrap_or_default()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn type_name(value: &AnyValue) -> &'static str {
    match &value.value {
        Some(any_value::Value::BoolValue(_)) => "bool",
        Some(any_value::Value::IntValue(_)) => "int64",
        Some(any_value::Value::DoubleValue(_)) => "float64",
        Some(any_value::Value::BytesValue(_)) => "binary",
        _ => "string",
    }
}

fn key_values(attributes: &[KeyValue]) -> Vec<Value> {
    attributes
        .iter()
        .map(|kv| {
            let value = kv.value.clone().unwrap_or_default();
            json!({"key": kv.key, "type": type_name(&value), "value": text(&value)})
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The span as Jaeger writes it to Elasticsearch: the shape of `dbmodel.Span` in
/// jaegertracing/jaeger (`internal/storage/elasticsearch/dbmodel/model.go`), with what Jaeger's
/// OTLP translation adds as tags (span kind, scope, status). Written here rather than taken
/// from Jaeger because Jaeger is a Go program; it is a size estimate, not a contract.
fn jaeger_document(
    service: &str,
    resource: &[KeyValue],
    scope: Option<&opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
    span: &Span,
) -> Value {
    let trace_id = hex(&span.trace_id);
    let kind = match span.kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    };
    let mut tags = key_values(&span.attributes);
    tags.push(json!({"key": "span.kind", "type": "string", "value": kind}));
    if let Some(scope) = scope {
        tags.push(json!({"key": "otel.scope.name", "type": "string", "value": scope.name}));
        if !scope.version.is_empty() {
            tags.push(
                json!({"key": "otel.scope.version", "type": "string", "value": scope.version}),
            );
        }
    }
    if span.status.as_ref().is_some_and(|s| s.code == 2) {
        tags.push(json!({"key": "otel.status_code", "type": "string", "value": "ERROR"}));
        tags.push(json!({"key": "error", "type": "bool", "value": "true"}));
    }
    let references: Vec<Value> = if span.parent_span_id.is_empty() {
        Vec::new()
    } else {
        vec![
            json!({"refType": "CHILD_OF", "traceID": trace_id, "spanID": hex(&span.parent_span_id)}),
        ]
    };
    let logs: Vec<Value> = span
        .events
        .iter()
        .map(|event| {
            let mut fields = vec![json!({"key": "event", "type": "string", "value": event.name})];
            fields.extend(key_values(&event.attributes));
            json!({"timestamp": event.time_unix_nano / 1000, "fields": fields})
        })
        .collect();
    let process_tags: Vec<KeyValue> = resource
        .iter()
        .filter(|kv| kv.key != "service.name")
        .cloned()
        .collect();
    json!({
        "traceID": trace_id,
        "spanID": hex(&span.span_id),
        "flags": 1,
        "operationName": span.name,
        "references": references,
        "startTime": span.start_time_unix_nano / 1000,
        "startTimeMillis": span.start_time_unix_nano / 1_000_000,
        "duration": span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) / 1000,
        "tags": tags,
        "logs": logs,
        "process": {"serviceName": service, "tags": key_values(&process_tags)},
    })
}

/// Each service's log file and its size now, [`ROLES`] order.
fn log_sizes(stack: &Stack) -> anyhow::Result<Vec<(std::path::PathBuf, u64)>> {
    ROLES
        .iter()
        .map(|role| {
            let path = stack.log_file(role);
            let size = std::fs::metadata(&path)
                .with_context(|| format!("{}", path.display()))?
                .len();
            Ok((path, size))
        })
        .collect()
}

/// Lines and bytes of `path` between two sizes.
fn count_lines(path: &std::path::Path, from: u64, to: u64) -> anyhow::Result<(u64, u64)> {
    let all = std::fs::read(path)?;
    let appended = &all[from as usize..(to as usize).min(all.len())];
    let lines = appended.iter().filter(|&&b| b == b'\n').count() as u64;
    Ok((lines, appended.len() as u64))
}

/// `pg_stat_database` of each service's database, [`ROLES`] order (`None`: no database).
async fn db_counters(
    conn: &mut PgConnection,
    stack: &Stack,
) -> anyhow::Result<Vec<Option<DbCounters>>> {
    // Each backend sends its statistics when idle, at most once a second; a snapshot read
    // inside a transaction would be cached, so each read starts from a clear one.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    let mut all = Vec::new();
    for role in ROLES {
        let Some(name) = stack.database(role) else {
            all.push(None);
            continue;
        };
        let row = sqlx::query(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted \
             FROM pg_stat_database WHERE datname = $1",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
        all.push(Some(DbCounters {
            commits: row.try_get(0)?,
            rollbacks: row.try_get(1)?,
            inserted: row.try_get(2)?,
            updated: row.try_get(3)?,
            deleted: row.try_get(4)?,
        }));
    }
    Ok(all)
}

/// utime + stime of the server processes connected to each service's database, by pid,
/// [`ROLES`] order. Reads `/proc`, so PostgreSQL must run on this machine.
async fn backend_ticks(
    conn: &mut PgConnection,
    stack: &Stack,
) -> anyhow::Result<Vec<HashMap<i32, u64>>> {
    let mut all = Vec::new();
    for role in ROLES {
        let mut ticks = HashMap::new();
        if let Some(name) = stack.database(role) {
            let pids: Vec<i32> =
                sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
                    .bind(name)
                    .fetch_all(&mut *conn)
                    .await?;
            for pid in pids {
                // A connection that closed meanwhile counts for nothing.
                if let Ok(usage) = crate::stack::usage_of(pid as u32) {
                    ticks.insert(pid, usage.cpu_ticks);
                }
            }
        }
        all.push(ticks);
    }
    Ok(all)
}

async fn current_lsn(conn: &mut PgConnection) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(conn)
        .await?)
}

/// The WAL between two positions by database (records that touch a database's relations, and
/// the records of the same transactions that touch none, such as commits), and in all.
async fn wal_between(
    conn: &mut PgConnection,
    from: &str,
    to: &str,
) -> anyhow::Result<(HashMap<String, Wal>, i64)> {
    let rows = sqlx::query(
        "WITH r AS ( \
             SELECT xid, (end_lsn - start_lsn)::bigint AS bytes, fpi_length::bigint AS fpi, \
                    NULLIF(substring(block_ref FROM 'rel [0-9]+/([0-9]+)/'), '0')::oid AS db \
             FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)), \
         x AS (SELECT xid, min(db) AS db FROM r WHERE xid <> 0 AND db IS NOT NULL GROUP BY xid) \
         SELECT d.datname, count(*), sum(r.bytes)::bigint, sum(r.fpi)::bigint \
         FROM r LEFT JOIN x ON x.xid = r.xid AND r.xid <> 0 \
         JOIN pg_database d ON d.oid = coalesce(r.db, x.db) \
         GROUP BY d.datname",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_db = HashMap::new();
    for row in rows {
        by_db.insert(
            row.try_get::<String, _>(0)?,
            Wal {
                records: row.try_get(1)?,
                bytes: row.try_get(2)?,
                fpi_bytes: row.try_get(3)?,
            },
        );
    }
    let all: i64 = sqlx::query_scalar("SELECT ($2::pg_lsn - $1::pg_lsn)::bigint")
        .bind(from)
        .bind(to)
        .fetch_one(conn)
        .await?;
    Ok((by_db, all))
}

fn print(counted: &[Counted], settings: &Settings) {
    let env: Vec<String> = settings
        .service_env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "counts per order: PostgreSQL, telemetry on{}, {} clients\n",
        if env.is_empty() {
            String::new()
        } else {
            format!(" ({})", env.join(" "))
        },
        settings.connections
    );
    for batch in counted {
        let per = |x: f64| x / batch.orders as f64;
        println!(
            "{} orders: {} placed, {} not answered as expected; {} traces ({:.3} per order), \
             {} with an error span, {} over {} ms",
            batch.scenario.name,
            batch.orders,
            batch.failed,
            batch.traces,
            per(batch.traces as f64),
            batch.error_traces,
            batch.slow_traces,
            SLOW.as_millis()
        );
        println!();
        println!(
            "| service | spans | OTLP bytes | Jaeger ES doc bytes | log lines | log bytes | \
             commits | rollbacks | rows inserted | updated | deleted | WAL records | WAL bytes | of which FPI |"
        );
        println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        let mut total = [0f64; 13];
        for (i, role) in ROLES.iter().enumerate() {
            let t = batch.telemetry.get(*role).copied().unwrap_or_default();
            let (lines, bytes) = batch.logs[i];
            let mut cells = vec![
                t.spans as f64,
                t.trace_bytes as f64,
                t.jaeger_bytes as f64,
                lines as f64,
                bytes as f64,
            ];
            if let Some((db, wal)) = batch.db[i] {
                cells.extend([
                    db.commits as f64,
                    db.rollbacks as f64,
                    db.inserted as f64,
                    db.updated as f64,
                    db.deleted as f64,
                    wal.records as f64,
                    wal.bytes as f64,
                    wal.fpi_bytes as f64,
                ]);
            }
            for (sum, cell) in total.iter_mut().zip(&cells) {
                *sum += cell;
            }
            let mut row: Vec<String> = cells.iter().map(|&c| format_per(per(c))).collect();
            row.resize(13, "–".into());
            println!("| {role} | {} |", row.join(" | "));
        }
        let row: Vec<String> = total.iter().map(|&c| format_per(per(c))).collect();
        println!("| **all** | {} |", row.join(" | "));
        println!(
            "\nWAL of the whole server over the window (other databases included): {:.0} bytes \
             per order",
            per(batch.cluster_wal as f64)
        );
        let cpu: Vec<String> = ROLES
            .iter()
            .zip(&batch.db_ticks)
            .filter(|(role, _)| stack_has_db(role))
            .map(|(role, &ticks)| {
                let micros = crate::stack::Usage::cpu(ticks).as_secs_f64() * 1e6;
                format!("{role} {:.0}", per(micros))
            })
            .collect();
        println!(
            "PostgreSQL server processes' CPU per order, µs (timed: depends on the machine): {}\n",
            cpu.join(", ")
        );
    }
    println!("metrics exports over the run (cumulative; bytes of one export):\n");
    println!("| service | exports | bytes per export |");
    println!("|---|--:|--:|");
    for role in ROLES {
        let t: u64 = counted
            .iter()
            .map(|b| b.telemetry.get(role).map_or(0, |t| t.metric_exports))
            .sum();
        let bytes: u64 = counted
            .iter()
            .map(|b| b.telemetry.get(role).map_or(0, |t| t.metric_bytes))
            .sum();
        let each = if t == 0 {
            "–".to_owned()
        } else {
            format!("{:.0}", bytes as f64 / t as f64)
        };
        println!("| {role} | {t} | {each} |");
    }
}

/// The gateway keeps no database.
fn stack_has_db(role: &str) -> bool {
    role != "gateway"
}

fn format_per(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

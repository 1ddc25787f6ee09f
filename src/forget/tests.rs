//! `forget` against a real HTTP server standing in for Elasticsearch's delete-by-query API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::StatusCode as Status;
use axum::response::IntoResponse as _;
use clap::Parser;

use super::*;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    authorization: String,
    body: Value,
}

/// A server answering each path with a status and a JSON body, and keeping what it was sent.
struct FakeElasticsearch {
    url: Url,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeElasticsearch {
    async fn start(answers: &[(&str, u16, Value)]) -> Self {
        let answers: Arc<HashMap<String, (u16, Value)>> = Arc::new(
            answers
                .iter()
                .map(|(path, status, body)| ((*path).to_owned(), (*status, body.clone())))
                .collect(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let (answers, kept) = (answers.clone(), kept.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let header = |name| {
                    parts
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                kept.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    authorization: header(axum::http::header::AUTHORIZATION),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                let (status, body) = answers
                    .get(parts.uri.path())
                    .cloned()
                    .unwrap_or((404, json!({"error": {"type": "unexpected path"}})));
                (Status::from_u16(status).unwrap(), axum::Json(body)).into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}").parse().unwrap(),
            seen,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn client(&self) -> Elasticsearch {
        Elasticsearch::new(
            self.url.clone(),
            "forgetter".into(),
            "s3cret".to_owned().into(),
            Duration::from_secs(10),
        )
        .unwrap()
    }
}

fn deleted(n: u64) -> Value {
    json!({"took": 5, "timed_out": false, "total": n, "deleted": n, "batches": 1,
           "version_conflicts": 0, "noops": 0, "failures": []})
}

fn customer(id: &str) -> CustomerId {
    CustomerId::try_from(id.to_owned()).unwrap()
}

const LOGS: &str = "/ordertrail-logs/_delete_by_query";
const AUDIT: &str = "/ordertrail-audit/_delete_by_query";

#[tokio::test]
async fn each_data_stream_gets_a_delete_by_query_on_the_customer_with_the_credentials() {
    let es = FakeElasticsearch::start(&[(LOGS, 200, deleted(12)), (AUDIT, 200, deleted(2))]).await;

    let report = forget(&es.client(), &customer("c-42@shop")).await;

    let seen = es.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, [LOGS, AUDIT]);
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.query, "conflicts=proceed&refresh=true");
        // base64("forgetter:s3cret")
        assert_eq!(request.authorization, "Basic Zm9yZ2V0dGVyOnMzY3JldA==");
        assert_eq!(
            request.body,
            json!({"query": {"term": {"customer.id": "c-42@shop"}}})
        );
    }
    assert_eq!(report.deleted(), 14);
    assert!(report.ensure_complete().is_ok());
}

#[tokio::test]
async fn the_report_counts_per_data_stream_and_says_what_it_cannot_reach() {
    let es = FakeElasticsearch::start(&[(LOGS, 200, deleted(12)), (AUDIT, 200, deleted(2))]).await;
    let report = forget(&es.client(), &customer("c-42")).await.to_string();
    for expected in [
        "customer c-42",
        "ordertrail-logs          12",
        "ordertrail-audit          2",
        "in all                   14",
        "Jaeger",
        "business records",
        "no card data",
    ] {
        assert!(report.contains(expected), "{expected:?} in\n{report}");
    }
}

#[tokio::test]
async fn a_data_stream_that_does_not_exist_has_nothing_to_delete() {
    let missing = json!({"error": {"type": "index_not_found_exception",
                                   "reason": "no such index [ordertrail-audit]"}, "status": 404});
    let es = FakeElasticsearch::start(&[(LOGS, 200, deleted(1)), (AUDIT, 404, missing)]).await;
    let report = forget(&es.client(), &customer("c-1")).await;
    assert_eq!(report.streams[1], ("ordertrail-audit", Outcome::Absent));
    assert!(
        report.to_string().contains("no such data stream"),
        "{report}"
    );
    assert!(report.ensure_complete().is_ok());
}

#[tokio::test]
async fn refused_credentials_are_reported_and_nothing_more_is_tried() {
    let refused = json!({"error": {"type": "security_exception",
                                   "reason": "unable to authenticate user [forgetter]"}, "status": 401});
    let es = FakeElasticsearch::start(&[(LOGS, 401, refused), (AUDIT, 200, deleted(0))]).await;
    let report = forget(&es.client(), &customer("c-1")).await;
    assert_eq!(report.not_tried(), ["ordertrail-audit"]);
    let message = format!("{:#}", report.ensure_complete().unwrap_err());
    assert!(message.contains("ordertrail-logs"), "{message}");
    assert!(
        message.contains("refused the credentials of user forgetter (401)"),
        "{message}"
    );
    assert!(message.contains("unable to authenticate"), "{message}");
    assert_eq!(es.seen().len(), 1);
}

#[tokio::test]
async fn a_failing_elasticsearch_is_reported_with_what_was_deleted_before() {
    let failing = json!({"error": {"type": "search_phase_execution_exception",
                                   "reason": "all shards failed"}, "status": 503});
    let es = FakeElasticsearch::start(&[(LOGS, 200, deleted(3)), (AUDIT, 503, failing)]).await;
    let report = forget(&es.client(), &customer("c-1")).await;
    let printed = report.to_string();
    for expected in [
        "ordertrail-logs           3",
        "ordertrail-audit   failed: ordertrail-audit: Elasticsearch answered 503 Service \
         Unavailable: all shards failed",
        "in all                    3",
    ] {
        assert!(printed.contains(expected), "{expected:?} in\n{printed}");
    }
    let message = format!("{:#}", report.ensure_complete().unwrap_err());
    assert!(message.contains("ordertrail-audit"), "{message}");
    assert!(!message.contains("ordertrail-logs"), "{message}");
}

#[tokio::test]
async fn a_write_blocked_backing_index_is_named_with_how_to_lift_the_block() {
    let index = ".ds-ordertrail-logs-2025.01.01-000001";
    let blocked = json!({"timed_out": false, "total": 5, "deleted": 3, "failures": [
        {"index": index, "id": "a", "status": 403, "cause": {"type": "cluster_block_exception",
         "reason": format!("index [{index}] blocked by: [FORBIDDEN/8/index write (api)];")}},
        {"index": index, "id": "b", "status": 403, "cause": {"type": "cluster_block_exception",
         "reason": format!("index [{index}] blocked by: [FORBIDDEN/8/index write (api)];")}}
    ]});
    let es = FakeElasticsearch::start(&[(LOGS, 200, blocked), (AUDIT, 200, deleted(1))]).await;
    let report = forget(&es.client(), &customer("c-1")).await;
    let printed = report.to_string();
    for expected in [
        "3 of 5",
        "2 failures",
        &format!("not deleted in {index}: cluster_block_exception"),
        "index.blocks.write",
        "ordertrail-audit          1",
    ] {
        assert!(printed.contains(expected), "{expected:?} in\n{printed}");
    }
    assert!(report.ensure_complete().is_err());
}

#[tokio::test]
async fn a_write_block_on_the_whole_request_is_not_called_a_missing_privilege() {
    let blocked = json!({"error": {"type": "cluster_block_exception",
        "reason": "index [.ds-ordertrail-audit-2025.01.01-000001] blocked by: [FORBIDDEN/8/index write (api)];"},
        "status": 403});
    let es = FakeElasticsearch::start(&[(LOGS, 200, deleted(1)), (AUDIT, 403, blocked)]).await;
    let message = forget(&es.client(), &customer("c-1")).await.to_string();
    assert!(
        message.contains("ordertrail-audit: Elasticsearch refused to write to it (403 Forbidden)"),
        "{message}"
    );
    assert!(message.contains("index write (api)"), "{message}");
    assert!(!message.contains("may not delete"), "{message}");
}

#[tokio::test]
async fn documents_left_behind_make_the_run_fail() {
    let partial = json!({"timed_out": false, "total": 3, "deleted": 2, "version_conflicts": 1,
                         "failures": []});
    let es = FakeElasticsearch::start(&[(LOGS, 200, partial), (AUDIT, 200, deleted(0))]).await;
    let report = forget(&es.client(), &customer("c-1")).await;
    assert!(report.to_string().contains("2 of 3"), "{report}");
    let err = report.ensure_complete().unwrap_err().to_string();
    assert!(err.contains("ordertrail-logs"), "{err}");
}

/// `ordertrail forget`'s arguments, as clap parses them.
#[derive(Debug, Parser)]
struct Command {
    #[command(flatten)]
    args: Args,
}

fn args(argv: &[&str]) -> Result<Args, clap::Error> {
    Command::try_parse_from(["forget"].iter().chain(argv)).map(|command| command.args)
}

#[test]
fn it_refuses_to_run_without_credentials_or_confirmation() {
    let refusal = |argv: &[&str], password: Option<&str>| {
        let args = args(argv).unwrap();
        Elasticsearch::from_args(&args, password.map(str::to_owned))
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default()
    };
    let without_user = refusal(&["--customer", "c-1", "--yes"], Some("pw"));
    assert!(
        without_user.contains("without credentials"),
        "{without_user}"
    );
    let without_password = refusal(&["--customer", "c-1", "--user", "ops", "--yes"], None);
    assert!(
        without_password.contains("ELASTICSEARCH_PASSWORD"),
        "{without_password}"
    );
    let without_yes = refusal(&["--customer", "c-1", "--user", "ops"], Some("pw"));
    assert!(without_yes.contains("--yes"), "{without_yes}");
    assert!(without_yes.contains("customer c-1"), "{without_yes}");
    let allowed = args(&["--customer", "c-1", "--user", "ops", "--yes"]).unwrap();
    assert!(Elasticsearch::from_args(&allowed, Some("pw".into())).is_ok());
}

#[test]
fn a_url_with_a_user_or_password_is_refused_and_never_shown() {
    let args = args(&[
        "--customer",
        "c-1",
        "--user",
        "ops",
        "--yes",
        "--elasticsearch-url",
        "http://admin:hunter2@es:9200",
    ])
    .unwrap();
    let refusal = Elasticsearch::from_args(&args, Some("pw".into()))
        .err()
        .map(|err| format!("{err:#}"))
        .unwrap_or_default();
    assert!(refusal.contains("user or password"), "{refusal}");
    assert!(refusal.contains("http://es:9200/"), "{refusal}");
    for secret in ["admin", "hunter2"] {
        assert!(!refusal.contains(secret), "{refusal}");
    }
    let user_only = "http://admin@es:9200".parse().unwrap();
    let refused = Elasticsearch::new(
        user_only,
        "ops".into(),
        "pw".to_owned().into(),
        Duration::ZERO,
    );
    assert!(refused.is_err());
}

#[test]
fn the_customer_id_follows_the_apis_rules() {
    for bad in ["", "a b", "*", "c-1\"}}", &"x".repeat(65)] {
        let err = args(&["--customer", bad, "--user", "ops", "--yes"]).unwrap_err();
        assert!(
            err.to_string().contains("customer_id must be 1 to 64"),
            "{bad:?}: {err}"
        );
    }
}

/// The data streams `forget` deletes from are exactly those Logstash writes to, and each has
/// an index template that makes it a data stream.
#[test]
fn the_data_streams_are_those_deploy_writes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline =
        std::fs::read_to_string(root.join("deploy/logstash/pipeline/ordertrail.conf")).unwrap();
    let mut targets: Vec<&str> = pipeline
        .split('"')
        .filter(|text| text.starts_with("ordertrail-"))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    let mut streams = DATA_STREAMS.to_vec();
    streams.sort_unstable();
    assert_eq!(targets, streams);

    let mut templated: Vec<&str> = Vec::new();
    for entry in std::fs::read_dir(root.join("deploy/elasticsearch")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let template: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if template.get("data_stream").is_none() {
            continue;
        }
        for pattern in template["index_patterns"].as_array().into_iter().flatten() {
            let prefix = pattern.as_str().unwrap().trim_end_matches('*');
            templated.extend(DATA_STREAMS.into_iter().filter(|s| s.starts_with(prefix)));
        }
    }
    templated.sort_unstable();
    templated.dedup();
    assert_eq!(templated, streams);
}

//! Rules parsed and checked, matched to routes and queries; the operator's token; and the
//! middleware over real connections: errors, latency, and a reset that sends nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, Method};
use axum::routing::get;
use secrecy::SecretString;

use super::*;
use crate::http::{Door, Limits, Service, app};

/// The example in the README's "Practise with faults" (and in this module's documentation).
fn readme_example() -> &'static str {
    let readme = include_str!("../../../README.md");
    let section = &readme[readme.find("## Practise with faults").expect("the section")..];
    let example = &section[section.find("```json\n").expect("a JSON example") + 8..];
    &example[..example.find("```").expect("the example's end")]
}

fn rule(json: &str) -> Result<Rules, String> {
    format!("[{json}]").parse()
}

#[test]
fn the_documented_example_parses_and_round_trips() {
    let rules: Rules = readme_example().parse().unwrap();
    assert_eq!(rules.as_slice().len(), 5);
    let latency = &rules.as_slice()[0];
    assert_eq!(latency.kind, Kind::Latency);
    assert_eq!(
        latency.route.clone().map(String::from).unwrap(),
        "POST /reservations"
    );
    assert_eq!(rules.as_slice()[4].share, 0.3);
    assert_eq!(rules.as_slice()[3].share, 1.0, "share defaults to 1");

    let again: Rules = rules.to_string().parse().unwrap();
    assert_eq!(again, rules);
    assert_eq!("".parse::<Rules>().unwrap(), Rules::default());
    assert_eq!("[]".parse::<Rules>().unwrap(), Rules::default());
}

#[test]
fn rules_that_cannot_be_meant_are_refused_with_the_reason() {
    for (json, reason) in [
        (
            r#"{"kind": "latency", "delay": 100}"#,
            "unknown field `delay`",
        ),
        (
            r#"{"kind": "slow", "delay_ms": 100}"#,
            "unknown variant `slow`",
        ),
        (r#"{"kind": "latency"}"#, "needs `delay_ms`"),
        (r#"{"kind": "error", "share": 1.5}"#, "from 0 to 1"),
        (r#"{"kind": "error", "share": -0.1}"#, "from 0 to 1"),
        (r#"{"kind": "error", "status": 404}"#, "must be a 5xx"),
        (
            r#"{"kind": "error", "delay_ms": 5}"#,
            "`delay_ms` does not apply",
        ),
        (
            r#"{"kind": "latency", "delay_ms": 5, "status": 500}"#,
            "`status` does not apply",
        ),
        (
            r#"{"kind": "reset", "table": "orders"}"#,
            "`table` does not apply",
        ),
        (
            r#"{"kind": "slow_query", "delay_ms": 5, "route": "GET /products"}"#,
            "`route` does not apply",
        ),
        (
            r#"{"kind": "error", "route": "/payments"}"#,
            "METHOD /route/template",
        ),
        (
            r#"{"kind": "error", "route": "POST payments"}"#,
            "METHOD /route/template",
        ),
        (
            r#"{"kind": "error", "service": "billing"}"#,
            "must be one of",
        ),
        (
            r#"{"kind": "latency", "delay_ms": 600000, "jitter_ms": 1}"#,
            "add up to",
        ),
    ] {
        let refused = rule(json).expect_err(json);
        assert!(refused.contains(reason), "{json}: {refused}");
    }
    let second = r#"[{"kind": "reset"}, {"kind": "error", "status": 200}]"#.parse::<Rules>();
    assert!(second.unwrap_err().contains("rule 2"), "the rule is named");
}

#[test]
fn a_route_matches_its_method_and_template_only() {
    let rules = rule(r#"{"kind": "reset", "route": "post /reservations/{order_id}/commit"}"#);
    let reset = &rules.unwrap().0[0];
    assert!(reset.on_route(&Method::POST, "/reservations/{order_id}/commit"));
    assert!(!reset.on_route(&Method::GET, "/reservations/{order_id}/commit"));
    assert!(!reset.on_route(&Method::POST, "/reservations"));
    let anywhere = &rule(r#"{"kind": "reset"}"#).unwrap().0[0];
    assert!(anywhere.on_route(&Method::GET, "/products"));
}

#[test]
fn a_slow_query_rule_matches_its_table_and_operation() {
    let update_products = Sql {
        operation: "UPDATE",
        collection: "products",
        text: "UPDATE products SET stock = $1",
    };
    let select_products = Sql {
        operation: "SELECT",
        ..update_products
    };
    let both = &rule(
        r#"{"kind": "slow_query", "delay_ms": 1, "table": "products", "operation": "update"}"#,
    )
    .unwrap()
    .0[0];
    assert!(both.on_query(&update_products));
    assert!(!both.on_query(&select_products));
    let table = &rule(r#"{"kind": "slow_query", "delay_ms": 1, "table": "orders"}"#)
        .unwrap()
        .0[0];
    assert!(!table.on_query(&update_products));
    let every = &rule(r#"{"kind": "slow_query", "delay_ms": 1}"#).unwrap().0[0];
    assert!(every.on_query(&select_products));
}

#[test]
fn a_rule_strikes_in_its_service_and_as_often_as_its_share_says() {
    let rules = r#"[
        {"kind": "reset", "service": "payment"},
        {"kind": "reset", "service": "inventory"},
        {"kind": "reset", "share": 0},
        {"kind": "error"}
    ]"#;
    let payment = Faults::new("payment", rules.parse().unwrap());
    for _ in 0..100 {
        let resets = payment.striking(Kind::Reset, |_| true);
        assert_eq!(resets.len(), 1);
        assert_eq!(resets[0].service.as_deref(), Some("payment"));
        assert_eq!(payment.striking(Kind::Error, |_| true).len(), 1);
    }
    let half = Faults::new("order", rule(r#"{"kind": "error", "share": 0.5}"#).unwrap());
    let struck = (0..1000)
        .filter(|_| !half.striking(Kind::Error, |_| true).is_empty())
        .count();
    assert!(
        (300..700).contains(&struck),
        "{struck} of 1000 at share 0.5"
    );
    assert!(Faults::default().striking(Kind::Error, |_| true).is_empty());
}

#[test]
fn a_provider_timeout_waits_six_seconds_unless_told_otherwise() {
    let default = Faults::new("payment", rule(r#"{"kind": "provider_timeout"}"#).unwrap());
    assert_eq!(default.provider_timeout(), Some(Duration::from_secs(6)));
    let short = r#"{"kind": "provider_timeout", "delay_ms": 300, "jitter_ms": 10}"#;
    let short = Faults::new("payment", rule(short).unwrap());
    let delay = short.provider_timeout().unwrap();
    assert!((300..=310).contains(&delay.as_millis()), "{delay:?}");
    assert_eq!(Faults::default().provider_timeout(), None);
}

fn authorization(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", value.parse().unwrap());
    headers
}

#[test]
fn only_the_operators_bearer_token_is_admitted() {
    let token = OperatorToken::new(&SecretString::from("s3cret-token")).unwrap();
    assert!(token.admits(&authorization("Bearer s3cret-token")));
    assert!(token.admits(&authorization("bearer s3cret-token")));
    assert!(!token.admits(&HeaderMap::new()));
    assert!(!token.admits(&authorization("Bearer s3cret-toke")));
    assert!(!token.admits(&authorization("Bearer s3cret-token2")));
    assert!(!token.admits(&authorization("Basic s3cret-token")));
    assert!(!token.admits(&authorization("s3cret-token")));
    assert!(!token.admits(&authorization("Bearer ")));
    assert_eq!(format!("{token:?}"), "OperatorToken(..)");
    assert!(OperatorToken::new(&SecretString::from("")).is_none());
    assert!(OperatorToken::new(&SecretString::from("  ")).is_none());
}

/// A service on a free port with `faults`: `GET /ok` counts its calls in `ran`.
async fn serve(faults: &Faults, ran: Arc<AtomicUsize>) -> String {
    let routes = Router::new().route(
        "/ok",
        get(move || async move {
            ran.fetch_add(1, Ordering::SeqCst);
            "ok"
        }),
    );
    let router = app(routes, Door::Internal, None, &Limits::default(), faults);
    let service = Service::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = service.local_addr().unwrap();
    tokio::spawn(service.serve(router, std::future::pending()));
    format!("http://{addr}")
}

#[tokio::test]
async fn a_reset_runs_the_handler_and_closes_the_connection_without_an_answer() {
    let faults = Faults::new(
        "order",
        rule(r#"{"kind": "reset", "route": "GET /ok"}"#).unwrap(),
    );
    let ran = Arc::new(AtomicUsize::new(0));
    let url = serve(&faults, ran.clone()).await;
    let http = reqwest::Client::new();

    let reset = http.get(format!("{url}/ok")).send().await.unwrap_err();
    assert!(!reset.is_connect() && !reset.is_timeout(), "{reset:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the handler ran");

    // The internal route is never faulted, so the rule can be removed.
    let cleared = http.delete(format!("{url}{ROUTE}")).send().await.unwrap();
    assert_eq!(cleared.text().await.unwrap(), "[]");
    let answered = http.get(format!("{url}/ok")).send().await.unwrap();
    assert_eq!(answered.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn errors_and_latency_are_set_through_the_route_and_strike_before_the_handler() {
    let faults = Faults::default();
    let ran = Arc::new(AtomicUsize::new(0));
    let url = serve(&faults, ran.clone()).await;
    let http = reqwest::Client::new();
    let put = |rules: &'static str| {
        http.put(format!("{url}{ROUTE}"))
            .header("content-type", "application/json")
            .body(rules)
            .send()
    };

    let refused = put(r#"[{"kind": "error", "status": 302}]"#).await.unwrap();
    assert_eq!(refused.status(), 422);
    let set = put(r#"[{"kind": "error", "status": 503, "route": "GET /ok"}]"#)
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let listed = http.get(format!("{url}{ROUTE}")).send().await.unwrap();
    let listed: serde_json::Value = listed.json().await.unwrap();
    assert_eq!(listed[0]["route"], "GET /ok");
    let failed = http.get(format!("{url}/ok")).send().await.unwrap();
    assert_eq!(failed.status(), 503);
    assert_eq!(failed.headers()["content-type"], "application/problem+json");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the handler did not run");

    put(r#"[{"kind": "latency", "delay_ms": 200}]"#)
        .await
        .unwrap();
    let started = Instant::now();
    let slow = http.get(format!("{url}/ok")).send().await.unwrap();
    assert_eq!(slow.text().await.unwrap(), "ok");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

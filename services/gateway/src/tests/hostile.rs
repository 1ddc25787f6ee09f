//! Hostile and careless input at the public edge: each case is refused with problem+json
//! carrying the trace id, and nothing reaches the services behind the gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordertrail_testkit::{CapturedSpans, json_body};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{AppState, Config, router};

/// A gateway whose upstreams count every request they get.
async fn gateway() -> (axum::Router, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let upstream = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { StatusCode::CREATED }
    });
    (gateway_in_front_of(upstream).await, hits)
}

/// A gateway whose order and inventory upstream is `upstream`, served on a free port.
async fn gateway_in_front_of(upstream: axum::Router) -> axum::Router {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, upstream).await });
    let config = Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        order_url: url.clone(),
        inventory_url: url,
        payment_url: "http://127.0.0.1:9".into(),
        operator_token: None,
        faults: Default::default(),
    };
    router(AppState::new(&config).unwrap())
}

fn order_with(customer_id: Value, items: Value) -> Value {
    json!({
        "customer_id": customer_id,
        "items": items,
        "payment": {"card_number": "4242424242424242", "expiry": "12/30", "cvc": "123"}
    })
}

fn line(sku: impl Into<Value>, quantity: i64) -> Value {
    json!({"sku": sku.into(), "quantity": quantity})
}

fn post_order() -> axum::http::request::Builder {
    Request::post("/api/orders").header("content-type", "application/json")
}

/// One hostile request and the status it must get.
struct Case {
    name: &'static str,
    request: Request<Body>,
    status: StatusCode,
}

fn case(name: &'static str, request: Request<Body>, status: StatusCode) -> Case {
    Case {
        name,
        request,
        status,
    }
}

fn order_case(name: &'static str, body: Value, status: StatusCode) -> Case {
    let request = post_order().body(Body::from(body.to_string())).unwrap();
    case(name, request, status)
}

fn cases() -> Vec<Case> {
    let good_line = || json!([line("TRAIL-MUG", 1)]);
    let unknown_skus: Vec<Value> = (0..10_000)
        .map(|i| line(format!("NO-SUCH-{i}"), 1))
        .collect();
    let many_lines: Vec<Value> = (0..101).map(|i| line(format!("SKU-{i}"), 1)).collect();
    let with_key = |keys: &[&str]| {
        let mut request = post_order();
        for key in keys {
            request = request.header("idempotency-key", *key);
        }
        request
            .body(Body::from(
                order_with(json!("c-1"), good_line()).to_string(),
            ))
            .unwrap()
    };
    vec![
        order_case(
            "10,000 distinct unknown SKUs (a 350 KB body)",
            order_with(json!("c-1"), json!(unknown_skus)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        order_case(
            "101 lines in a body under the size limit",
            order_with(json!("c-1"), json!(many_lines)),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        order_case(
            "a 100 KB SKU",
            order_with(json!("c-1"), json!([line("S".repeat(100_000), 1)])),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        order_case(
            "a 65-character SKU",
            order_with(json!("c-1"), json!([line("S".repeat(65), 1)])),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        order_case(
            "a SKU with a newline and a bidi override",
            order_with(json!("c-1"), json!([line("MUG\n\u{202E}", 1)])),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        order_case(
            "quantity 0",
            order_with(json!("c-1"), json!([line("TRAIL-MUG", 0)])),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        order_case(
            "quantity 1001",
            order_with(json!("c-1"), json!([line("TRAIL-MUG", 1001)])),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        order_case(
            "a 64 KiB customer_id",
            order_with(json!("c".repeat(64 * 1024)), good_line()),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        order_case(
            "a 65-character customer_id",
            order_with(json!("c".repeat(65)), good_line()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        order_case(
            "a customer_id with a space",
            order_with(json!("c 1"), good_line()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        order_case(
            "a customer_id with control characters",
            order_with(json!("c-1\u{1b}[2J\r\n"), good_line()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        order_case(
            "an empty customer_id",
            order_with(json!(""), good_line()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        case(
            "a 1 MiB body",
            post_order()
                .body(Body::from(vec![b' '; 1024 * 1024]))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        case(
            "two Idempotency-Key headers",
            with_key(&["key-1", "key-2"]),
            StatusCode::BAD_REQUEST,
        ),
        case(
            "an Idempotency-Key with a space",
            with_key(&["key 1"]),
            StatusCode::BAD_REQUEST,
        ),
        case(
            "an Idempotency-Key with a tab",
            with_key(&["key\t1"]),
            StatusCode::BAD_REQUEST,
        ),
        case(
            "broken JSON",
            post_order().body(Body::from("{")).unwrap(),
            StatusCode::BAD_REQUEST,
        ),
        case(
            "no JSON content type",
            Request::post("/api/orders").body(Body::from("{}")).unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        case(
            "an unknown route",
            Request::get("/api/nothing-here")
                .body(Body::empty())
                .unwrap(),
            StatusCode::NOT_FOUND,
        ),
        case(
            "a wrong method",
            Request::delete("/api/orders").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        case(
            "a 9 KB path",
            Request::get(format!("/api/orders/{}", "a".repeat(9 * 1024)))
                .body(Body::empty())
                .unwrap(),
            StatusCode::URI_TOO_LONG,
        ),
        case(
            "20 KB of headers",
            Request::get("/api/products")
                .header("x-padding", "p".repeat(20 * 1024))
                .body(Body::empty())
                .unwrap(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
        case(
            "an order id with a bidi override",
            Request::get("/api/orders/abc%E2%80%AEfdp.exe")
                .body(Body::empty())
                .unwrap(),
            StatusCode::NOT_FOUND,
        ),
    ]
}

#[tokio::test]
async fn hostile_input_is_refused_with_problem_json_and_nothing_reaches_the_services() {
    let _spans = CapturedSpans::start();
    let (app, upstream_hits) = gateway().await;

    for Case {
        name,
        request,
        status,
    } in cases()
    {
        let response = app.clone().oneshot(request).await.unwrap();

        assert_eq!(response.status(), status, "{name}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
        let problem = json_body(response).await;
        assert_eq!(problem["status"], status.as_u16(), "{name}");
        assert_eq!(
            problem["trace_id"].as_str().map(str::len),
            Some(32),
            "{name}: {problem}"
        );
        let text = problem.to_string();
        for raw in ["\u{202E}", "\u{1b}", "\\u001b", "\\r", "\\n", "SSSSSSSSSS"] {
            assert!(!text.contains(raw), "{name} echoes raw input: {text}");
        }
        assert_eq!(
            upstream_hits.load(Ordering::SeqCst),
            0,
            "{name} was forwarded"
        );
    }
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_with_the_trace_id() {
    let _spans = CapturedSpans::start();
    let routes = axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            panic!("the handler broke");
            #[allow(unreachable_code)]
            ""
        }),
    );
    let app = ordertrail_shared::http::app(
        routes,
        ordertrail_shared::http::Door::Public,
        None,
        &ordertrail_shared::http::Limits::default(),
        &ordertrail_shared::faults::Faults::default(),
    );

    let response = app
        .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let problem = json_body(response).await;
    assert_eq!(problem["title"], "internal error");
    assert!(!problem.to_string().contains("the handler broke"));
    assert_eq!(problem["trace_id"].as_str().map(str::len), Some(32));
}

#[tokio::test]
async fn a_wrong_method_on_a_health_route_is_problem_json_too() {
    let _spans = CapturedSpans::start();
    let (app, _) = gateway().await;

    let response = app
        .oneshot(Request::post("/health/live").body(Body::empty()).unwrap())
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn an_upstreams_retry_after_reaches_the_client() {
    let _spans = CapturedSpans::start();
    let busy = axum::Router::new().fallback(|| async {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                ("retry-after", "1"),
                ("content-type", "application/problem+json"),
            ],
            r#"{"type":"about:blank","title":"overloaded","status":503}"#,
        )
    });

    let response = gateway_in_front_of(busy)
        .await
        .oneshot(Request::get("/api/products").body(Body::empty()).unwrap())
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

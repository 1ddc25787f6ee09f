//! Router tests: validation at the edge and a stopped upstream, with the in-memory exporter.

mod hostile;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ordertrail_shared::faults::{self, Faults};
use ordertrail_testkit::{CapturedSpans, attribute, json_body};
use secrecy::SecretString;
use tower::ServiceExt;

use crate::{AppState, Config, router};

/// A gateway whose upstreams listen nowhere.
fn app() -> axum::Router {
    let config = Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        order_url: "http://127.0.0.1:9".into(),
        inventory_url: "http://127.0.0.1:9".into(),
        payment_url: "http://127.0.0.1:9".into(),
        operator_token: None,
        faults: Default::default(),
    };
    router(AppState::new(&config).unwrap())
}

fn order(card: &str) -> Request<Body> {
    let body = format!(
        r#"{{"customer_id":"c-1","items":[{{"sku":"TRAIL-MUG","quantity":1}}],"payment":{{"card_number":"{card}","expiry":"12/30","cvc":"123"}}}}"#
    );
    Request::post("/api/orders")
        .header("content-type", "application/json")
        // A caller's baggage stops at the edge: the customer is the one in the body.
        .header("baggage", "customer.id=someone-else,debug=1")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn a_card_number_failing_luhn_is_refused_at_the_edge() {
    let spans = CapturedSpans::start();
    let response = app().oneshot(order("4242424242424241")).await.unwrap();

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let trace = response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_owned();
    let problem = json_body(response).await;
    assert!(trace.contains(problem["trace_id"].as_str().unwrap()));
    assert!(!problem.to_string().contains("4242424242424241"));
    assert!(
        spans.spans().iter().all(|s| s.name != "POST /orders"),
        "nothing was forwarded"
    );
}

#[tokio::test]
async fn a_broken_body_is_400_problem_json() {
    let _spans = CapturedSpans::start();
    let request = Request::post("/api/orders")
        .header("content-type", "application/json")
        .body(Body::from("{"))
        .unwrap();
    let response = app().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn an_unreachable_order_service_is_503_and_an_error_client_span() {
    let spans = CapturedSpans::start();
    let response = app().oneshot(order("4242424242424242")).await.unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let client = spans.named("POST /orders");
    assert_eq!(client.span_kind, opentelemetry::trace::SpanKind::Client);
    assert_eq!(attribute(&client, "error.type").as_deref(), Some("connect"));
    assert_eq!(
        attribute(&client, "customer.id").as_deref(),
        Some("c-1"),
        "baggage set by the gateway"
    );
    let server = spans.named("POST /api/orders");
    assert_eq!(
        attribute(&server, "customer.id").as_deref(),
        Some("c-1"),
        "not the caller's baggage"
    );
    assert!(attribute(&client, "debug").is_none());
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    assert_eq!(
        attribute(&server, "http.response.status_code").as_deref(),
        Some("503")
    );
    assert!(matches!(
        server.status,
        opentelemetry::trace::Status::Error { .. }
    ));
}

/// An upstream that answers every POST /orders and GET /products, keeping the baggage sent.
async fn upstream_keeping_baggage() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let kept = seen.clone();
    let keep = move |headers: axum::http::HeaderMap| {
        let kept = kept.clone();
        async move {
            let baggage = headers
                .get("baggage")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            kept.lock().unwrap().push(baggage);
            (StatusCode::OK, "[]")
        }
    };
    let upstream = axum::Router::new()
        .route("/orders", axum::routing::post(keep.clone()))
        .route("/products", axum::routing::get(keep));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, upstream).await });
    (url, seen)
}

#[tokio::test]
async fn the_callers_baggage_stops_at_the_edge_and_the_customer_from_the_body_goes_on() {
    let _spans = CapturedSpans::start();
    let (url, seen) = upstream_keeping_baggage().await;
    let config = Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        order_url: url.clone(),
        inventory_url: url,
        payment_url: "http://127.0.0.1:9".into(),
        operator_token: None,
        faults: Default::default(),
    };
    let app = router(AppState::new(&config).unwrap());
    let products = Request::get("/api/products")
        .header("baggage", "customer.id=someone-else,debug=1")
        .body(Body::empty())
        .unwrap();

    assert_eq!(
        app.clone().oneshot(products).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        app.oneshot(order("4242424242424242"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    assert_eq!(*seen.lock().unwrap(), ["", "customer.id=c-1"]);
}

/// A gateway whose order upstream serves only the fault rules in `upstream`, with `token`.
async fn gateway_with_operator(token: Option<&str>, upstream: &Faults) -> axum::Router {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let order: axum::Router = faults::routes(upstream.clone());
    tokio::spawn(async move { axum::serve(listener, order).await });
    let config = Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        order_url: url,
        inventory_url: "http://127.0.0.1:9".into(),
        payment_url: "http://127.0.0.1:9".into(),
        operator_token: token.map(SecretString::from),
        faults: Default::default(),
    };
    router(AppState::new(&config).unwrap())
}

fn operator_call(method: &str, path: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn the_fault_routes_exist_only_with_an_operator_token_and_only_for_its_bearer() {
    let _spans = CapturedSpans::start();
    let order = Faults::default();
    let closed = gateway_with_operator(None, &order).await;
    let open = gateway_with_operator(Some("t0ken"), &order).await;
    let call = |app: &axum::Router, method, path, token, body| {
        app.clone()
            .oneshot(operator_call(method, path, token, body))
    };

    let absent = call(&closed, "GET", "/internal/faults", Some("t0ken"), "");
    assert_eq!(absent.await.unwrap().status(), StatusCode::NOT_FOUND);
    for (path, token) in [
        ("/internal/faults", None),
        ("/internal/faults", Some("t0ken2")),
        ("/internal/faults/order", None),
        ("/internal/faults/order", Some("t0ke")),
    ] {
        let refused = call(&open, "GET", path, token, "").await.unwrap();
        assert_eq!(
            refused.status(),
            StatusCode::UNAUTHORIZED,
            "{path} {token:?}"
        );
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    }

    let own = call(&open, "GET", "/internal/faults", Some("t0ken"), "");
    assert_eq!(json_body(own.await.unwrap()).await, serde_json::json!([]));
    let rules = r#"[{"kind": "error", "route": "POST /orders", "status": 503}]"#;
    let set = call(&open, "PUT", "/internal/faults/order", Some("t0ken"), rules);
    let set = set.await.unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(json_body(set).await[0]["status"], 503);
    assert_eq!(order.rules().as_slice().len(), 1, "forwarded to order");
    let wrong = call(
        &open,
        "PUT",
        "/internal/faults/order",
        Some("t0ken"),
        "[{}]",
    );
    assert_eq!(
        wrong.await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let cleared = call(&open, "DELETE", "/internal/faults/order", Some("t0ken"), "");
    assert_eq!(cleared.await.unwrap().status(), StatusCode::OK);
    assert!(order.rules().as_slice().is_empty());
    let unknown = call(&open, "GET", "/internal/faults/billing", Some("t0ken"), "");
    assert_eq!(unknown.await.unwrap().status(), StatusCode::NOT_FOUND);
    let down = call(&open, "GET", "/internal/faults/payment", Some("t0ken"), "");
    assert_eq!(
        down.await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

//! The service bootstrap against slow, greedy and oversized clients, over real connections on
//! 127.0.0.1: every limit ends in an answer or a closed connection, never a hang, and other
//! clients are still served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use futures::StreamExt as _;
use ordertrail_shared::faults::Faults;
use ordertrail_shared::http::{Door, Limits, Service, app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Limits small enough for a test to reach in a second.
fn small_limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        max_concurrent_requests: 2,
        max_connections: 32,
        ..Limits::default()
    }
}

/// Routes that answer at once, wait for `gate`, or sleep.
fn routes(gate: Arc<Semaphore>) -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/wait",
            get(move || {
                let gate = gate.clone();
                async move {
                    let _pass = gate.acquire().await;
                    "waited"
                }
            }),
        )
        .route(
            "/sleep",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "slept"
            }),
        )
        .route("/echo", post(|body: String| async move { body }))
}

/// A service on a free port with `limits`, serving until the test ends; its base URL.
async fn serve(limits: Limits, gate: Arc<Semaphore>) -> String {
    let router = app(
        routes(gate),
        Door::Public,
        None,
        &limits,
        &Faults::default(),
    );
    let service = Service::bind_with("127.0.0.1:0".parse().unwrap(), limits)
        .await
        .unwrap();
    let addr = service.local_addr().unwrap();
    tokio::spawn(service.serve(router, std::future::pending()));
    format!("http://{addr}")
}

/// Reads until the server closes the connection (or resets it); what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_byte_by_byte_are_cut_off_and_other_clients_are_still_served() {
    let base = serve(small_limits(), Arc::new(Semaphore::new(0))).await;
    let addr = base.trim_start_matches("http://").to_owned();
    let cut_off = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    // More slow clients than the service takes connections: the rest wait in the backlog.
    for _ in 0..100 {
        let (addr, cut_off) = (addr.clone(), cut_off.clone());
        slow.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let head = b"GET /hello HTTP/1.1\r\nhost: x\r\nx-slow: ";
            stream.write_all(head).await.unwrap();
            // One byte every 100 ms for up to 30 s, until the server hangs up.
            for _ in 0..300 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if stream.write_all(b"a").await.is_err() {
                    break;
                }
            }
            let answer = read_to_close(&mut stream).await;
            assert!(answer.is_empty(), "a slow request was answered: {answer}");
            cut_off.fetch_add(1, Ordering::SeqCst);
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let client = reqwest::Client::new();
    let served = tokio::time::timeout(Duration::from_secs(15), async {
        client
            .get(format!("{base}/hello"))
            .send()
            .await?
            .text()
            .await
    })
    .await
    .expect("a normal client is served while slow ones hold connections")
    .unwrap();

    assert_eq!(served, "hello");
    tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(slow))
        .await
        .expect("every slow client is cut off")
        .into_iter()
        .for_each(|joined| joined.unwrap());
    assert_eq!(cut_off.load(Ordering::SeqCst), 100);
}

#[tokio::test]
async fn a_body_sent_byte_by_byte_gets_408_problem_json() {
    let base = serve(small_limits(), Arc::new(Semaphore::new(0))).await;
    let mut stream = TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    let trickle = async {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b"a").await.is_err() {
                break;
            }
        }
    };
    trickle.await;
    let answer = read_to_close(&mut stream).await;

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

#[tokio::test]
async fn a_request_past_the_concurrency_bound_gets_503_with_retry_after() {
    let gate = Arc::new(Semaphore::new(0));
    let base = serve(small_limits(), gate.clone()).await;
    let client = reqwest::Client::new();
    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(client.get(format!("{base}/wait")).send()))
        .collect();
    // Both bounded requests are in once a third is refused; until then, try again.
    let mut refused = None;
    for _ in 0..100 {
        let response = client.get(format!("{base}/hello")).send().await.unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("a third request is refused while two run");

    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    gate.add_permits(2);
    for request in waiting {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    let after = client.get(format!("{base}/hello")).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::OK, "served again once they end");
}

#[tokio::test]
async fn a_request_past_its_timeout_gets_503_problem_json() {
    let limits = Limits {
        request_timeout: Duration::from_millis(200),
        ..small_limits()
    };
    let base = serve(limits, Arc::new(Semaphore::new(0))).await;

    let response = reqwest::get(format!("{base}/sleep")).await.unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["title"], "request timed out");
}

#[tokio::test]
async fn a_100_mib_body_is_refused_with_413_after_reading_at_most_the_limit() {
    let limits = small_limits();
    let router = app(
        routes(Arc::new(Semaphore::new(0))),
        Door::Public,
        None,
        &limits,
        &Faults::default(),
    );
    const CHUNK: usize = 8 * 1024;
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    // No content-length: the limit must hold while reading, not only on a declared size.
    let chunks = futures::stream::iter(0..100 * 1024 * 1024 / CHUNK).map(move |_| {
        counter.fetch_add(CHUNK, Ordering::SeqCst);
        Ok::<_, std::io::Error>(vec![b'x'; CHUNK])
    });
    let request = Request::post("/echo")
        .body(Body::from_stream(chunks))
        .unwrap();

    let response = router.oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(pulled.load(Ordering::SeqCst) <= limits.max_body_bytes + CHUNK);
}

#[tokio::test]
async fn a_stop_waits_for_background_jobs_to_finish() {
    let service = Service::bind_with("127.0.0.1:0".parse().unwrap(), small_limits())
        .await
        .unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let done = finished.clone();
    service.spawn(move |stop| async move {
        stop.cancelled().await;
        // A job's last step after the stop signal, such as finishing the order it is on.
        tokio::time::sleep(Duration::from_millis(200)).await;
        done.store(true, Ordering::SeqCst);
    });

    service
        .serve(Router::new(), std::future::ready(()))
        .await
        .unwrap();

    assert!(finished.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_stop_drops_what_still_runs_after_the_drain_timeout() {
    let service = Service::bind_with("127.0.0.1:0".parse().unwrap(), small_limits())
        .await
        .unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let done = finished.clone();
    service.spawn(move |_stop| async move {
        // A job that does not listen for the stop.
        tokio::time::sleep(Duration::from_secs(60)).await;
        done.store(true, Ordering::SeqCst);
    });
    let addr = service.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(service.serve(Router::new(), async {
        let _ = stopped.await;
    }));
    // A client in the middle of its headers when the stop comes.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nhost").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    stop.send(()).unwrap();

    tokio::time::timeout(Duration::from_secs(15), serving)
        .await
        .expect("the stop ends within the drain timeout")
        .unwrap()
        .unwrap();
    assert!(!finished.load(Ordering::SeqCst), "the job was dropped");
    assert_eq!(
        read_to_close(&mut client).await,
        "",
        "the connection was closed"
    );
}

#[test]
fn the_default_request_bound_is_below_the_connection_bound() {
    let limits = Limits::default();
    assert!(limits.max_concurrent_requests < limits.max_connections);
    assert!(limits.max_concurrent_requests > 0);
}

//! A fault-injecting HTTP proxy in front of a real service: it forwards each request with
//! reqwest, or loses the answer, or holds it back, or answers 503 itself, or stops listening, as
//! its rule says.
//!
//! It stands for what a stopped process cannot: a call that reached the service and whose
//! answer never came back (a timeout, a 5xx from a gateway), which the saga must treat as
//! possibly applied.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ordertrail_shared::http::ServiceClient;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Forwarded, and the service's answer returned.
    Through,
    /// Forwarded, and the service's answer replaced with 502: the call was applied, but the
    /// caller cannot know it.
    Lost,
    /// As `Lost`, and from then on the proxy refuses connections until [`Proxy::listen`].
    LostThenRefuse,
    /// Forwarded, and the service's answer never returned, so the caller times out: the call
    /// was applied, but the caller cannot know it. From the moment the request arrives, the
    /// proxy refuses connections until [`Proxy::listen`].
    HeldThenRefuse,
    /// Not forwarded: 503.
    Unavailable,
}

type Rule = Box<dyn FnMut(&Method, &str) -> Pass + Send>;

/// A proxy on a local port, forwarding to one upstream service.
pub struct Proxy {
    shared: Arc<Shared>,
}

struct Shared {
    addr: SocketAddr,
    upstream: String,
    http: reqwest::Client,
    /// Decides, from the method and the path, what happens to each request.
    rule: Mutex<Rule>,
    socket: Mutex<Socket>,
}

/// The proxy's port: accepting connections, or bound but not listening, so that a connection
/// is refused at once (and no other process can take the port meanwhile).
enum Socket {
    Serving(JoinHandle<()>),
    Refusing(TcpSocket),
    /// Between the two, for as long as a switch takes.
    Switching,
}

impl Proxy {
    /// A proxy on a free local port in front of the service at `upstream`, doing with each
    /// request what `rule` says.
    pub async fn start(
        upstream: &str,
        rule: impl FnMut(&Method, &str) -> Pass + Send + 'static,
    ) -> Self {
        let listener = bound(SocketAddr::from(([127, 0, 0, 1], 0)))
            .listen(64)
            .unwrap();
        let shared = Arc::new(Shared {
            addr: listener.local_addr().unwrap(),
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            rule: Mutex::new(Box::new(rule)),
            socket: Mutex::new(Socket::Switching),
        });
        shared.serve(listener);
        Self { shared }
    }

    /// The proxy's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A client of the service through this proxy.
    pub fn client(&self) -> ServiceClient {
        ServiceClient::new(&self.url()).unwrap()
    }

    /// Accepts connections again on the same port, after a [`Pass::LostThenRefuse`] or a
    /// [`Pass::HeldThenRefuse`].
    pub fn listen(&self) {
        let previous =
            std::mem::replace(&mut *self.shared.socket.lock().unwrap(), Socket::Switching);
        let Socket::Refusing(socket) = previous else {
            panic!("the proxy is already listening");
        };
        // The same socket, bound all along, starts listening: no moment in which another
        // process could take the port.
        self.shared.serve(socket.listen(64).unwrap());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Socket::Serving(task) = &*self.shared.socket.lock().unwrap() {
            task.abort();
        }
    }
}

impl Shared {
    fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        let app = Router::new().fallback(forward).with_state(self.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        *self.socket.lock().unwrap() = Socket::Serving(task);
    }

    /// Stops accepting connections and keeps the port bound, so that new ones are refused.
    /// Connections already open (this request's) are served to their end.
    async fn refuse(&self) {
        let previous = std::mem::replace(&mut *self.socket.lock().unwrap(), Socket::Switching);
        let Socket::Serving(task) = previous else {
            panic!("the proxy is not listening");
        };
        // Axum serves each connection in a task of its own, so ending the accept loop closes
        // the listener only. Once awaited, the listener is gone and the port free to bind.
        task.abort();
        let _ = task.await;
        *self.socket.lock().unwrap() = Socket::Refusing(bound(self.addr));
    }

    async fn send(&self, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = to_bytes(body, usize::MAX).await.unwrap();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut headers = parts.headers;
        // The upstream's own host and length are set by reqwest.
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        let sent = self
            .http
            .request(parts.method, format!("{}{path}", self.upstream))
            .headers(headers)
            .body(body)
            .send()
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(err) => return (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
        };
        let status = answer.status();
        let mut headers = HeaderMap::new();
        if let Some(content_type) = answer.headers().get(header::CONTENT_TYPE) {
            headers.insert(header::CONTENT_TYPE, content_type.clone());
        }
        let body = answer.bytes().await.unwrap();
        (status, headers, Body::from(body)).into_response()
    }
}

async fn forward(State(proxy): State<Arc<Shared>>, request: Request) -> Response {
    let pass = (proxy.rule.lock().unwrap())(request.method(), request.uri().path());
    match pass {
        Pass::Unavailable => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Pass::HeldThenRefuse => return held(proxy, request).await,
        Pass::Through | Pass::Lost | Pass::LostThenRefuse => {}
    }
    let answer = proxy.send(request).await;
    match pass {
        Pass::Through => answer,
        Pass::Lost => lost(),
        Pass::LostThenRefuse => {
            proxy.refuse().await;
            lost()
        }
        Pass::Unavailable | Pass::HeldThenRefuse => unreachable!("answered above"),
    }
}

/// Forwards `request` and never answers. New connections are refused first, so that the
/// caller's retry, however soon it comes, is refused; the request is forwarded in a task of its
/// own, so that it reaches the service even once the caller has hung up (which may drop this
/// handler).
async fn held(proxy: Arc<Shared>, request: Request) -> Response {
    proxy.refuse().await;
    let forwarded = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            proxy.send(request).await;
        }
    });
    forwarded.await.unwrap();
    std::future::pending().await
}

/// A 502 whose connection closes: the caller's next attempt opens a new one, which a
/// refusing proxy then refuses.
fn lost() -> Response {
    (StatusCode::BAD_GATEWAY, [(header::CONNECTION, "close")]).into_response()
}

/// A socket bound to `addr`, not listening. `SO_REUSEADDR`, as a listener has it, because the
/// connections of the listener it replaces may linger in `TIME_WAIT` on the port.
fn bound(addr: SocketAddr) -> TcpSocket {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket
}

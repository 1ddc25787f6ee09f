//! The one bootstrap every service runs on: bind, say where, serve connections within the
//! [`Limits`], run background jobs, and stop in bounded time.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::Instrument;

use super::Limits;
use crate::faults::ResetConnection;

/// How long in-flight requests and background jobs may run on after the shutdown signal: the
/// rest of the ten seconds compose and `up` allow goes to flushing telemetry.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed accept (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A bound listener with its limits and background jobs; [`Service::serve`] runs it.
#[derive(Debug)]
pub struct Service {
    listener: TcpListener,
    limits: Limits,
    jobs: TaskTracker,
    /// Cancelled at the stop signal: jobs finish what they are on and return.
    stopping: CancellationToken,
    /// Cancelled when the drain timeout runs out: whatever still runs is dropped.
    cut_off: CancellationToken,
}

impl Service {
    /// Binds `addr` with the default [`Limits`] and logs the address bound (port 0 picks a
    /// free one).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Self::bind_with(addr, Limits::default()).await
    }

    /// Like [`Service::bind`], with `limits`.
    pub async fn bind_with(addr: SocketAddr, limits: Limits) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        tracing::info!(server.address = %listener.local_addr()?, "listening");
        Ok(Self {
            listener,
            limits,
            jobs: TaskTracker::new(),
            stopping: CancellationToken::new(),
            cut_off: CancellationToken::new(),
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs a background job. It gets a token that is cancelled when the service stops, and
    /// the stop waits for it within the drain timeout; after that it is dropped.
    pub fn spawn<F>(&self, job: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let job = job(self.stopping.child_token()).in_current_span();
        self.jobs.spawn(cut_off_by(self.cut_off.clone(), job));
    }

    /// Serves `app` until `shutdown` completes, then lets in-flight requests and background
    /// jobs finish for at most [`DRAIN_TIMEOUT`], and drops what still runs.
    ///
    /// Written on hyper directly rather than `axum::serve`, which sets neither a header read
    /// timeout nor a bound on connections.
    pub async fn serve(
        self,
        app: Router,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        let connections = TaskTracker::new();
        let graceful = GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        let mut shutdown = pin!(shutdown);
        let mut accept_failing = false;
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = permits.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        if !accept_failing {
                            tracing::warn!(error.message = %err, "cannot accept connections");
                        }
                        accept_failing = true;
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                }
            };
            accept_failing = false;
            // Answers are small: send them at once rather than wait to fill a segment.
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            let service = hyper::service::service_fn(move |request| answer(app.clone(), request));
            let connection = http.serve_connection(TokioIo::new(stream), service);
            // A connection ends in an error when its client goes away or is too slow; either
            // way there is nobody left to tell.
            let connection = graceful.watch(connection);
            connections.spawn(cut_off_by(self.cut_off.clone(), async move {
                let _ = connection.await;
                drop(permit);
            }));
        }
        drop(self.listener);
        self.stopping.cancel();
        self.jobs.close();
        connections.close();
        let drained = async {
            graceful.shutdown().await;
            self.jobs.wait().await;
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
            tracing::warn!("requests and jobs still running after the drain timeout are cut off");
            self.cut_off.cancel();
            connections.wait().await;
            self.jobs.wait().await;
        }
        Ok(())
    }
}

/// `app`'s answer to `request`, or, when a reset fault struck (its answer carries
/// [`ResetConnection`]), an error: hyper then closes the connection without sending anything,
/// as a connection reset on the way back would leave the caller. Otherwise what hyper-util's
/// `TowerToHyperService` does.
async fn answer(
    app: Router,
    request: hyper::Request<Incoming>,
) -> Result<Response, ResetConnection> {
    let Ok(response) = app.oneshot(request).await;
    match response.extensions().get::<ResetConnection>() {
        Some(reset) => Err(*reset),
        None => Ok(response),
    }
}

/// `task`, dropped where it stands once `cut_off` is cancelled.
async fn cut_off_by(cut_off: CancellationToken, task: impl Future<Output = ()>) {
    tokio::select! {
        () = task => {}
        () = cut_off.cancelled() => {}
    }
}

//! The signal every service and the `up` supervisor stop on.

/// Completes on Ctrl-C (SIGINT) or SIGTERM, whichever comes first.
///
/// Compose and Kubernetes stop containers with SIGTERM; a terminal sends SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        // If the handler cannot be installed the process can still be killed; waiting forever
        // here is better than stopping at once.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

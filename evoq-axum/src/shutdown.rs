//! Serving until a signal, then stopping in order: [`serve`] and [`shutdown_signal`].

use std::future::Future;

use axum::Router;
use evoq_runtime::Evoq;
use tokio::net::TcpListener;

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what a container runtime sends): the
/// signal to give [`serve`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No handler could be installed: never resolve on this branch.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
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
    tracing::info!(name: "evoq.http.shutdown", stage = "start", "evoq.http.shutdown");
}

/// Serves `router` on `listener` until `signal` resolves, then shuts down in order:
///
/// 1. the listener stops accepting connections;
/// 2. the requests in flight run to their end (axum's graceful shutdown: idle keep-alive
///    connections are closed, busy ones after their response), so a command accepted before
///    the signal still completes and answers;
/// 3. the runtime stops ([`Evoq::stop`]): handlers save their checkpoints, the store is
///    flushed.
///
/// It returns once all three are done, or with the listener's error (the runtime is stopped
/// then too). `signal` is [`shutdown_signal`] in a program, any future in a test.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::Router;
///
/// let app = evoq::Evoq::builder().start().await?;
/// let router: Router = Router::new().merge(evoq::axum::health_routes(app.clone()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// evoq::axum::serve(listener, router, app, evoq::axum::shutdown_signal()).await?;
/// # Ok(())
/// # }
/// ```
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    app: Evoq,
    signal: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(signal)
        .await;
    tracing::info!(name: "evoq.http.shutdown", stage = "drained", "evoq.http.shutdown");
    app.stop().await;
    tracing::info!(name: "evoq.http.shutdown", stage = "stop", "evoq.http.shutdown");
    served
}

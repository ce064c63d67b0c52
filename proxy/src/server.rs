//! Listeners and the process lifecycle: serve until told to stop, then drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::route;

/// Bound listeners, before serving.
#[derive(Debug)]
pub struct Listeners {
    /// The MCP endpoint.
    pub public: TcpListener,
    /// Health, readiness and metrics.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds both listeners.
    pub async fn bind(public: SocketAddr, admin: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            public: TcpListener::bind(public).await?,
            admin: TcpListener::bind(admin).await?,
        })
    }
}

/// Serves until `stop` resolves, then shuts down gracefully: not ready, no
/// new connections, readers closed with `retry:`, in-flight responses and
/// pumps given until the drain timeout.
pub async fn serve(
    app: Arc<App>,
    listeners: Listeners,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tracing::info!(
        public = %listeners.public.local_addr()?,
        admin = %listeners.admin.local_addr()?,
        upstream = %app.upstream.uri(),
        path = %app.settings.path,
        "listening"
    );
    let accepting = CancellationToken::new();
    let graceful = Arc::new(GracefulShutdown::new());
    let public = {
        let app = app.clone();
        let service = service_fn(move |req| route::public(app.clone(), req));
        tokio::spawn(accept(
            listeners.public,
            service,
            graceful.clone(),
            accepting.clone(),
        ))
    };
    let admin = {
        let app = app.clone();
        let service = service_fn(move |req| route::admin(app.clone(), req));
        // Admin connections are not drained: probes must see "not ready".
        tokio::spawn(accept(
            listeners.admin,
            service,
            Arc::new(GracefulShutdown::new()),
            CancellationToken::new(),
        ))
    };
    tokio::spawn(watch_upstream(app.clone()));
    tokio::spawn(sweep_sessions(app.clone()));

    stop.await;
    let deadline = Instant::now() + app.settings.drain_timeout;
    tracing::info!(drain_timeout = ?app.settings.drain_timeout, "shutting down");
    app.shutdown.cancel();
    accepting.cancel();
    let _ = public.await;
    if let Some(graceful) = Arc::into_inner(graceful)
        && tokio::time::timeout_at(deadline, graceful.shutdown())
            .await
            .is_err()
    {
        tracing::warn!("connections still open at the drain timeout");
    }
    app.pumps.close();
    if tokio::time::timeout_at(deadline, app.pumps.wait()).await.is_err() {
        tracing::warn!(
            pumps = app.pumps.len(),
            "streams still pumping at the drain timeout"
        );
    }
    admin.abort();
    tracing::info!("stopped");
    Ok(())
}

async fn accept<S>(
    listener: TcpListener,
    service: S,
    graceful: Arc<GracefulShutdown>,
    stop: CancellationToken,
) where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// Probes the upstream every couple of seconds for readiness.
async fn watch_upstream(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let up = app.upstream.probe().await;
        if up != app.upstream_up() {
            tracing::info!(up, "upstream reachability changed");
        }
        app.set_upstream_up(up);
    }
}

/// Drops local state of expired sessions.
async fn sweep_sessions(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        app.sessions.sweep().await;
    }
}

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
    /// Replica-to-replica forwarding, when a peer secret is configured.
    pub peer: Option<TcpListener>,
}

impl Listeners {
    /// Binds the listeners.
    pub async fn bind(
        public: SocketAddr,
        admin: SocketAddr,
        peer: Option<SocketAddr>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            public: TcpListener::bind(public).await?,
            admin: TcpListener::bind(admin).await?,
            peer: match peer {
                Some(addr) => Some(TcpListener::bind(addr).await?),
                None => None,
            },
        })
    }
}

/// How often a replica renews its registration, and how long one lasts.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
const HEARTBEAT_TTL: Duration = Duration::from_secs(6);

/// The address other replicas reach this one at: configured, else the pod
/// IP with the peer port, else the peer listener's own address.
fn advertise(app: &App, bound: SocketAddr) -> String {
    if let Some(addr) = &app.settings.advertise_addr {
        return addr.clone();
    }
    if let Ok(ip) = std::env::var("POD_IP") {
        return format!("{ip}:{}", bound.port());
    }
    let ip = if bound.ip().is_unspecified() {
        "127.0.0.1".parse().unwrap_or(bound.ip())
    } else {
        bound.ip()
    };
    SocketAddr::new(ip, bound.port()).to_string()
}

/// Keeps this replica registered until shutdown, then marks it draining
/// (registered with an empty address: alive, but not to be forwarded to).
async fn heartbeat(app: Arc<App>, addr: String) {
    let replica = app.sessions.replica().to_owned();
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        let draining = app.shutdown.is_cancelled();
        let advertised = if draining { "" } else { addr.as_str() };
        if let Err(e) = app.store.heartbeat(&replica, advertised, HEARTBEAT_TTL).await {
            tracing::warn!(error = %e, "cannot renew replica registration");
        }
        tokio::select! {
            _ = tick.tick() => {}
            () = app.shutdown.cancelled(), if !draining => {}
        }
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
    let peer_addr = match &listeners.peer {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    tracing::info!(
        public = %listeners.public.local_addr()?,
        admin = %listeners.admin.local_addr()?,
        peer = %peer_addr.map(|a| a.to_string()).unwrap_or_default(),
        replica = %app.sessions.replica(),
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
    let peer = listeners.peer.map(|listener| {
        let app = app.clone();
        let service = service_fn(move |req| route::peer(app.clone(), req));
        tokio::spawn(accept(listener, service, graceful.clone(), accepting.clone()))
    });
    let heartbeat = peer_addr.map(|bound| tokio::spawn(heartbeat(app.clone(), advertise(&app, bound))));
    tokio::spawn(watch_upstream(app.clone()));
    tokio::spawn(sweep_sessions(app.clone()));

    stop.await;
    let deadline = Instant::now() + app.settings.drain_timeout;
    tracing::info!(drain_timeout = ?app.settings.drain_timeout, "shutting down");
    app.shutdown.cancel();
    accepting.cancel();
    {
        let app = app.clone();
        let closing_at = Instant::now() + app.settings.drain_timeout.mul_f32(0.8);
        tokio::spawn(async move {
            tokio::time::sleep_until(closing_at).await;
            app.streams_closing.cancel();
        });
    }
    let _ = public.await;
    if let Some(peer) = peer {
        let _ = peer.await;
    }
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
    if let Some(heartbeat) = heartbeat {
        // Everything in flight is in the log: hand the sessions over and
        // leave, so other replicas adopt them at once.
        heartbeat.abort();
        let released = app.sessions.release_all().await;
        if let Err(e) = app.store.deregister(app.sessions.replica()).await {
            tracing::warn!(error = %e, "cannot deregister");
        }
        tracing::info!(released, "sessions released");
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

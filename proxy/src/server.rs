//! Listeners and the process lifecycle: serve until told to stop (SIGTERM)
//! or to drain (`POST /drain`), then drain: in-flight answers finish into the
//! log, sessions are handed back, and only then does the process go.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::body::Body;
use crate::metrics::ListenerLabels;
use crate::route;

mod background;

/// Bound listeners, before serving.
#[derive(Debug)]
pub struct Listeners {
    /// The MCP endpoint.
    pub public: TcpListener,
    /// Health, readiness, metrics and `/drain`.
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

    /// The address other replicas reach this one at: configured, else the
    /// pod IP with the peer port, else the peer listener's own address.
    pub fn advertise(&self, configured: Option<&str>) -> std::io::Result<Option<String>> {
        let Some(peer) = &self.peer else {
            return Ok(None);
        };
        let bound = peer.local_addr()?;
        if let Some(addr) = configured {
            return Ok(Some(addr.to_owned()));
        }
        if let Ok(ip) = std::env::var("POD_IP") {
            return Ok(Some(format!("{ip}:{}", bound.port())));
        }
        let ip = match bound.ip() {
            ip if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            ip => ip,
        };
        Ok(Some(SocketAddr::new(ip, bound.port()).to_string()))
    }
}

/// Connections the admin listener holds at most (probes and scrapes).
const ADMIN_CONNECTIONS: usize = 64;

/// Serves until `stop` resolves or `POST /drain` asks, then drains. After a
/// `/drain`, keeps the admin listener up until `stop` (the MCP server exits
/// first; the sidecar is stopped after it).
pub async fn serve(
    app: Arc<App>,
    listeners: Listeners,
    abandoned: mpsc::Receiver<String>,
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
        instance = %app.sessions.me(),
        upstream = %app.upstream.uri(),
        path = %app.settings.path,
        store = ?app.settings.store,
        "listening"
    );
    let accepting = CancellationToken::new();
    let graceful = Arc::new(GracefulShutdown::new());
    let public = tokio::spawn(accept(
        app.clone(),
        "public",
        app.settings.max_connections,
        listeners.public,
        route::public,
        graceful.clone(),
        accepting.clone(),
    ));
    // Admin connections are not drained: probes must see "not ready".
    let admin = tokio::spawn(accept(
        app.clone(),
        "admin",
        ADMIN_CONNECTIONS,
        listeners.admin,
        route::admin,
        Arc::new(GracefulShutdown::new()),
        CancellationToken::new(),
    ));
    // Peer connections close a moment after the public ones: see `drain`.
    let peer_graceful = Arc::new(GracefulShutdown::new());
    let peer = listeners.peer.map(|listener| {
        tokio::spawn(accept(
            app.clone(),
            "peer",
            app.settings.max_connections,
            listener,
            route::peer,
            peer_graceful.clone(),
            accepting.clone(),
        ))
    });
    let heartbeat = app
        .sessions
        .addr()
        .map(|addr| tokio::spawn(background::heartbeat(app.clone(), addr.to_owned())));
    let background = [
        tokio::spawn(background::watch_upstream(app.clone())),
        tokio::spawn(background::watch_store(app.clone())),
        tokio::spawn(background::sweep_sessions(app.clone())),
        tokio::spawn(background::end_abandoned(app.clone(), abandoned)),
    ];

    tokio::pin!(stop);
    let asked_to_drain = tokio::select! {
        () = &mut stop => false,
        () = app.drain_requested.cancelled() => true,
    };
    drain(&app, accepting, [graceful, peer_graceful], public, peer).await;
    if let Some(heartbeat) = heartbeat {
        // Everything in flight is in the log: hand the sessions over and
        // leave, so other replicas adopt them at once.
        heartbeat.abort();
        let released = app.sessions.release_all().await;
        if let Err(e) = app.store.deregister(app.sessions.me()).await {
            tracing::warn!(error = %e, "cannot deregister");
        }
        tracing::info!(released, "sessions released");
    }
    app.drained.cancel();
    if asked_to_drain {
        tracing::info!("drained; waiting for SIGTERM");
        stop.await;
    }
    admin.abort();
    for task in background {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long peer connections outlive the start of the drain.
const PEER_GRACE: Duration = Duration::from_secs(1);

/// The drain: not ready at once; serving goes on for the shutdown delay
/// (while load balancers catch up); then no new connections or sessions,
/// standalone readers closed with `retry:`, in-flight answers and pumps
/// given until the drain timeout.
///
/// Peer connections are kept a moment longer than public ones. Other
/// replicas stop forwarding here as soon as the registration says draining,
/// but one that read it just before may be writing a request on a pooled
/// connection right now: closing that idle connection under it would leave
/// the forwarder unable to tell whether the request ran (it answers 502
/// rather than risk running it twice). Kept open, the request is served.
async fn drain(
    app: &Arc<App>,
    accepting: CancellationToken,
    [graceful, peer_graceful]: [Arc<GracefulShutdown>; 2],
    public: tokio::task::JoinHandle<()>,
    peer: Option<tokio::task::JoinHandle<()>>,
) {
    app.set_terminating();
    let delay = app.settings.shutdown_delay;
    if !delay.is_zero() {
        tracing::info!(?delay, "not ready; serving on while endpoints update");
        tokio::time::sleep(delay).await;
    }
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
    let public_closed = async {
        if let Some(graceful) = Arc::into_inner(graceful) {
            graceful.shutdown().await;
        }
    };
    let peer_connections = app
        .metrics
        .connections_active
        .get_or_create(&ListenerLabels { listener: "peer" })
        .get();
    let peer_closed = async {
        if let Some(graceful) = Arc::into_inner(peer_graceful) {
            if peer_connections > 0 {
                tokio::time::sleep(PEER_GRACE).await;
            }
            graceful.shutdown().await;
        }
    };
    if tokio::time::timeout_at(deadline, async { tokio::join!(public_closed, peer_closed) })
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
}

fn connection_builder(app: &App) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also how long an idle keep-alive connection stays open.
        .header_read_timeout(app.settings.header_read_timeout)
        .max_buf_size(256 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(64);
    builder
}

/// Accepts connections on `listener` (at most `cap` open at once) and
/// serves each with `handler`, until `stop` fires.
async fn accept<H, F>(
    app: Arc<App>,
    name: &'static str,
    cap: usize,
    listener: TcpListener,
    handler: H,
    graceful: Arc<GracefulShutdown>,
    stop: CancellationToken,
) where
    H: Fn(Arc<App>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let service = {
        let app = app.clone();
        service_fn(move |req| handler(app.clone(), req))
    };
    let builder = connection_builder(&app);
    let slots = Arc::new(Semaphore::new(cap));
    let labels = ListenerLabels { listener: name };
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            app.metrics.connections_refused.get_or_create(&labels).inc();
            tracing::debug!(listener = name, cap, "connection refused: listener at its cap");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection.into_owned());
        let active = app.metrics.connections_active.get_or_create(&labels).clone();
        active.inc();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            active.dec();
            drop(slot);
        });
    }
}

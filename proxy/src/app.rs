//! What every handler shares: settings, store, sessions, upstream, metrics and
//! the shutdown signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use shadowcat_crds::Settings;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::peer::PeerClient;
use crate::session::SessionManager;
use crate::store::Store;
use crate::upstream::Upstream;

/// Shared state of one Shadowcat process.
#[derive(Debug)]
pub struct App {
    /// Validated settings.
    pub settings: Settings,
    /// Session and event store.
    pub store: Arc<dyn Store>,
    /// Sessions.
    pub sessions: SessionManager,
    /// The pod-local MCP server.
    pub upstream: Upstream,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when shutdown begins: readers close with `retry:`.
    pub shutdown: CancellationToken,
    /// Cancelled late in a shutdown (most of the drain timeout gone): the
    /// response streams still open then are closed with `retry:` too. Until
    /// then they run, so an answer that is about to come is not cut off.
    pub streams_closing: CancellationToken,
    /// Background pumps, awaited (up to the drain timeout) on shutdown.
    pub pumps: TaskTracker,
    /// Forwarding to other replicas; `None` without a peer secret, in which
    /// case a replica serves every session itself (adopting as needed).
    pub peer: Option<PeerClient>,
    upstream_up: AtomicBool,
}

impl App {
    /// Assembles the shared state.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        replica: String,
        peer: Option<PeerClient>,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        let sessions = SessionManager::new(
            store.clone(),
            replica,
            settings.session_idle_timeout,
            metrics.clone(),
        );
        let upstream = Upstream::new(settings.upstream.clone(), settings.upstream_timeout);
        Arc::new(Self {
            settings,
            store,
            sessions,
            upstream,
            metrics,
            shutdown: CancellationToken::new(),
            streams_closing: CancellationToken::new(),
            pumps: TaskTracker::new(),
            peer,
            upstream_up: AtomicBool::new(false),
        })
    }

    /// Whether the last probe reached the upstream.
    pub fn upstream_up(&self) -> bool {
        self.upstream_up.load(Ordering::Relaxed)
    }

    /// Records a probe's result.
    pub fn set_upstream_up(&self, up: bool) {
        self.upstream_up.store(up, Ordering::Relaxed);
    }

    /// Ready for traffic: not shutting down, upstream reachable, store answering.
    pub async fn ready(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        if !self.upstream_up() {
            return Err("upstream not answering".into());
        }
        self.store.ping().await.map_err(|e| e.to_string())
    }
}

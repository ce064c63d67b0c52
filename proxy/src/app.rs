//! What every handler shares: settings, store, sessions, upstream, metrics and
//! the lifecycle signals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use shadowcat_crds::Settings;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::endpoint::body::BodyBudget;
use crate::metrics::Metrics;
use crate::peer::PeerClient;
use crate::policy::Policies;
use crate::session::{Admission, SessionManager};
use crate::store::{Instance, Store};
use crate::upstream::{Credential, Upstream};

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
    /// Cancelled when the drain begins: no new sessions, no new connections,
    /// standalone readers close with `retry:`.
    pub shutdown: CancellationToken,
    /// Cancelled late in a drain (most of the drain timeout gone): the
    /// response streams still open then are closed with `retry:` too. Until
    /// then they run, so an answer that is about to come is not cut off.
    pub streams_closing: CancellationToken,
    /// Cancelled when `POST /drain` asks for the drain.
    pub drain_requested: CancellationToken,
    /// Cancelled when the drain is complete: every in-flight answer is in
    /// the log and the sessions are handed back.
    pub drained: CancellationToken,
    /// Background pumps, awaited (up to the drain timeout) on shutdown.
    pub pumps: TaskTracker,
    /// Room for request bodies in flight.
    pub bodies: BodyBudget,
    /// Forwarding to other replicas; `None` without a peer secret, in which
    /// case a replica serves every session itself (adopting as needed).
    pub peer: Option<PeerClient>,
    /// The resource server verifying clients' tokens; `None` when off.
    pub auth: Option<Arc<Auth>>,
    /// The policy in force (none unless configured); reloadable.
    pub policies: Policies,
    terminating: AtomicBool,
    upstream_up: AtomicBool,
    store_health: Mutex<Result<(), String>>,
}

impl App {
    /// Assembles the shared state. The receiver yields upstream session ids
    /// this process abandoned, to end upstream. Fails on an upstream
    /// credential file that cannot be read, or a CA file for the
    /// authorization server that cannot be used.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        me: Instance,
        peer: Option<PeerClient>,
    ) -> anyhow::Result<(Arc<Self>, mpsc::Receiver<String>)> {
        let metrics = Arc::new(Metrics::new());
        let admission = Admission::new(settings.max_sessions, settings.session_rate);
        let (sessions, abandoned) = SessionManager::new(
            store.clone(),
            me,
            settings.session_idle_timeout,
            admission,
            metrics.clone(),
        );
        let mut upstream = Upstream::new(settings.upstream.clone(), settings.upstream_timeout);
        if let Some(credential) = &settings.upstream_auth {
            upstream = upstream.with_credential(Credential::load(credential)?);
        }
        let auth = match &settings.auth {
            Some(auth) => Some(Arc::new(Auth::new(
                auth.clone(),
                settings.token_exchange.clone(),
                &settings.path,
                metrics.clone(),
            )?)),
            None => None,
        };
        let policies = Policies::default();
        if let Some(config) = &settings.policy {
            policies.set(Some(
                crate::policy::build(config, &store, &metrics)
                    .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?,
            ));
        }
        let bodies = BodyBudget::new(settings.max_body_bytes_in_flight);
        let app = Arc::new(Self {
            settings,
            store,
            sessions,
            upstream,
            metrics,
            shutdown: CancellationToken::new(),
            streams_closing: CancellationToken::new(),
            drain_requested: CancellationToken::new(),
            drained: CancellationToken::new(),
            pumps: TaskTracker::new(),
            bodies,
            peer,
            auth,
            policies,
            terminating: AtomicBool::new(false),
            upstream_up: AtomicBool::new(false),
            store_health: Mutex::new(Ok(())),
        });
        Ok((app, abandoned))
    }

    /// Whether the last probe reached the upstream.
    pub fn upstream_up(&self) -> bool {
        self.upstream_up.load(Ordering::Relaxed)
    }

    /// Records a probe's result.
    pub fn set_upstream_up(&self, up: bool) {
        self.upstream_up.store(up, Ordering::Relaxed);
    }

    /// Records whether the store answered its last ping.
    pub fn set_store_health(&self, health: Result<(), String>) {
        self.metrics.store_up.set(i64::from(health.is_ok()));
        *self.store_health.lock().unwrap_or_else(|p| p.into_inner()) = health;
    }

    /// The store's health as last checked.
    pub fn store_health(&self) -> Result<(), String> {
        self.store_health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Marks the process as going away: readiness fails from now on.
    pub fn set_terminating(&self) {
        self.terminating.store(true, Ordering::Relaxed);
    }

    /// Whether the drain has begun (no new sessions).
    pub fn draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Ready for traffic: not going away, and the upstream reachable. The
    /// store is deliberately not part of it: a Redis outage would take every
    /// replica out of the Service at once, while sessions each replica owns
    /// keep working without Redis. Store health is a metric instead, and new
    /// sessions get 503 while it is down.
    pub fn ready(&self) -> Result<(), String> {
        if self.terminating.load(Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        if !self.upstream_up() {
            return Err("upstream not answering".into());
        }
        Ok(())
    }
}

//! The tasks that run beside the listeners: the replica heartbeat, health
//! watches, the session sweep, and ending upstream sessions this replica
//! gave up.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use tokio::sync::mpsc;

use crate::app::App;
use crate::upstream::UpstreamRequest;

/// How often a replica renews its registration, and how long one lasts.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
const HEARTBEAT_TTL: Duration = Duration::from_secs(6);

/// Keeps this replica registered until shutdown, then marks it draining
/// (alive, but not to be forwarded to).
pub async fn heartbeat(app: Arc<App>, addr: String) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        let draining = app.draining();
        if let Err(e) = app
            .store
            .heartbeat(app.sessions.me(), &addr, draining, HEARTBEAT_TTL)
            .await
        {
            tracing::warn!(error = %e, "cannot renew replica registration");
        }
        tokio::select! {
            _ = tick.tick() => {}
            () = app.shutdown.cancelled(), if !draining => {}
        }
    }
}

/// Probes the upstream every couple of seconds for readiness.
pub async fn watch_upstream(app: Arc<App>) {
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

/// Pings the store every couple of seconds: its health is a metric and a
/// line of `/readyz?verbose`, not a readiness condition.
pub async fn watch_store(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let health = app.store.ping().await.map_err(|e| e.to_string());
        if health.is_ok() != app.store_health().is_ok() {
            tracing::info!(up = health.is_ok(), "store reachability changed");
        }
        app.set_store_health(health);
        if let Some(bytes) = app.store.held_bytes() {
            app.metrics
                .store_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

/// Checks the sessions this replica owns against the store.
pub async fn sweep_sessions(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        app.sessions.sweep().await;
    }
}

/// Ends upstream sessions this replica gave up (expired, or claimed by
/// another replica), so the upstream does not keep them until its own
/// timeout.
pub async fn end_abandoned(app: Arc<App>, mut abandoned: mpsc::Receiver<String>) {
    while let Some(upstream_id) = abandoned.recv().await {
        let request = UpstreamRequest {
            method: Method::DELETE,
            headers: HeaderMap::new(),
            session: Some(upstream_id.clone()),
            ..Default::default()
        };
        match app.upstream.send(request).await {
            Ok(response) => {
                app.metrics.upstream_sessions_ended.inc();
                tracing::debug!(upstream = %upstream_id, status = %response.status(), "ended an abandoned upstream session");
            }
            Err(e) => {
                tracing::debug!(upstream = %upstream_id, error = %e, "cannot end an abandoned upstream session")
            }
        }
    }
}

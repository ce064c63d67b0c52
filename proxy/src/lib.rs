//! Shadowcat's sidecar: an MCP Streamable HTTP proxy that owns sessions and
//! keeps every SSE stream in a replayable event log.
//!
//! A request reads top-down through the modules: [`server`] accepts it,
//! [`route`] dispatches it, [`endpoint`] validates it, [`session`] finds its
//! session, [`placement`] decides which replica serves it (forwarding it, or
//! adopting a session whose owner is gone), [`upstream`] forwards it, and
//! [`relay`] carries the answer back — event streams through the [`store`]'s
//! event log.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod body;
pub mod child;
pub mod cli;
pub mod endpoint;
pub mod error;
pub mod mcp;
pub mod metrics;
pub mod peer;
pub mod placement;
pub mod policy;
pub mod relay;
pub mod route;
pub mod server;
pub mod session;
pub mod sse;
pub mod store;
#[cfg(test)]
pub(crate) mod test_support;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use shadowcat_crds::{Settings, StoreSettings};

/// What the settings allow the store to keep.
pub fn store_limits(settings: &Settings) -> store::StoreLimits {
    store::StoreLimits {
        idle: settings.session_idle_timeout,
        max_events: settings.sse.max_events_per_stream,
        max_log_bytes: settings.sse.max_log_bytes,
        max_streams: settings.sse.max_streams,
        max_bytes: settings.store_max_bytes,
        retention: settings.sse.retention,
        response_retention: settings.sse.response_retention,
    }
}

/// Builds the store the settings ask for.
pub fn build_store(settings: &Settings) -> Result<Arc<dyn store::Store>, String> {
    let limits = store_limits(settings);
    match &settings.store {
        StoreSettings::Memory => Ok(store::MemoryStore::new(limits)),
        StoreSettings::Redis(redis) => store::RedisStore::new(redis, limits)
            .map(|s| Arc::new(s) as Arc<dyn store::Store>)
            .map_err(|e| e.to_string()),
    }
}

/// The peer client, when a peer secret is configured. It waits for the
/// owner's response headers a little longer than the owner waits for its
/// upstream, so the owner's own 504 comes first.
fn peer_client(settings: &Settings) -> anyhow::Result<Option<peer::PeerClient>> {
    let Some(path) = &settings.peer_secret_file else {
        return Ok(None);
    };
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("invalid config `peerSecretFile`: cannot read {path}: {e}"))?;
    let secret = peer::PeerSecret::new(&bytes).ok_or_else(|| {
        anyhow::anyhow!("invalid config `peerSecretFile`: {path} must hold at least 16 bytes")
    })?;
    let timeout = settings.upstream_timeout + Duration::from_secs(10);
    Ok(Some(peer::PeerClient::new(secret, timeout)))
}

/// Runs the sidecar until SIGTERM/SIGINT (or until the child exits, when one
/// was given) and returns the process exit code.
/// `config_file` is watched for policy changes.
pub async fn run(
    settings: Settings,
    replica: String,
    command: Vec<String>,
    config_file: Option<std::path::PathBuf>,
) -> anyhow::Result<i32> {
    let store = build_store(&settings).map_err(anyhow::Error::msg)?;
    let peer = peer_client(&settings)?;
    let peer_listen = peer.as_ref().map(|_| settings.peer_listen);
    if peer.is_none() && matches!(settings.store, StoreSettings::Redis(_)) {
        tracing::warn!(
            "redis store without --peer-secret-file: replicas cannot forward to each other, so each one \
             adopts the sessions it receives; fine for one replica, costly for several"
        );
    }
    let listeners = server::Listeners::bind(settings.listen, settings.admin_listen, peer_listen).await?;
    let advertised = listeners.advertise(settings.advertise_addr.as_deref())?;
    let (app, abandoned) = app::App::new(settings, store, store::Instance::new(replica), peer)?;
    if let Some(auth) = &app.auth {
        tracing::info!(issuer = %auth.settings().issuer, resource = %auth.settings().resource, "verifying access tokens");
        tokio::spawn(auth.clone().keep_keys_current());
    }
    if let Some(path) = config_file {
        tokio::spawn(policy::watch_file(app.clone(), path));
    }
    if let Some(addr) = advertised {
        app.sessions.set_addr(addr);
    }
    let mut child = match command.is_empty() {
        true => None,
        false => {
            let mut child = child::spawn(&command)?;
            child::wait_until_up(&mut child, &app.upstream, Duration::from_secs(60))
                .await
                .map_err(anyhow::Error::msg)?;
            Some(child)
        }
    };
    app.set_upstream_up(app.upstream.probe().await);
    let mut child_status = None;
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            status = async { match child.as_mut() { Some(c) => c.wait().await, None => std::future::pending().await } } => {
                tracing::warn!(?status, "upstream command exited");
                child_status = status.ok();
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let serving = tokio::spawn(server::serve(app.clone(), listeners, abandoned, async {
        let _ = stop_rx.await;
    }));
    stop.await?;
    let _ = stop_tx.send(());
    serving.await??;
    let status = match (child.as_mut(), child_status) {
        (_, Some(status)) => Some(status),
        (Some(child), None) => Some(child::terminate(child).await?),
        (None, None) => None,
    };
    Ok(status.map_or(0, |s| s.code().unwrap_or(1)))
}

//! Shadowcat's sidecar: an MCP Streamable HTTP proxy that owns sessions and
//! keeps every SSE stream in a replayable event log.
//!
//! A request reads top-down through the modules: [`server`] accepts it,
//! [`route`] dispatches it, [`endpoint`] validates it and applies the session
//! rules, [`upstream`] forwards it, and [`relay`] carries the answer back —
//! event streams through the [`store`]'s event log.
#![forbid(unsafe_code)]

pub mod app;
pub mod body;
pub mod child;
pub mod cli;
pub mod endpoint;
pub mod error;
pub mod mcp;
pub mod metrics;
pub mod peer;
pub mod relay;
pub mod route;
pub mod server;
pub mod session;
pub mod sse;
pub mod store;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use shadowcat_crds::{Settings, StoreSettings};

/// Builds the store the settings ask for.
pub fn build_store(settings: &Settings) -> Result<Arc<dyn store::Store>, String> {
    let limits = store::LogLimits {
        max_events: settings.sse.max_events_per_stream,
        max_streams: settings.sse.max_streams,
        retention: settings.sse.retention,
    };
    match &settings.store {
        StoreSettings::Memory => Ok(store::MemoryStore::new(limits)),
        StoreSettings::Redis { url, prefix } => store::RedisStore::new(url, prefix, limits)
            .map(|s| Arc::new(s) as Arc<dyn store::Store>)
            .map_err(|e| e.to_string()),
    }
}

/// The peer client, when a peer secret is configured.
fn peer_client(settings: &Settings) -> anyhow::Result<Option<peer::PeerClient>> {
    let Some(path) = &settings.peer_secret_file else {
        return Ok(None);
    };
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("invalid config `peerSecretFile`: cannot read {path}: {e}"))?;
    let secret = peer::PeerSecret::new(&bytes).ok_or_else(|| {
        anyhow::anyhow!("invalid config `peerSecretFile`: {path} must hold at least 16 bytes")
    })?;
    Ok(Some(peer::PeerClient::new(secret, settings.upstream_timeout)))
}

/// Runs the sidecar until SIGTERM/SIGINT (or until the child exits, when one
/// was given) and returns the process exit code.
pub async fn run(settings: Settings, replica: String, command: Vec<String>) -> anyhow::Result<i32> {
    let store = build_store(&settings).map_err(anyhow::Error::msg)?;
    let peer = peer_client(&settings)?;
    let peer_listen = peer.as_ref().map(|_| settings.peer_listen);
    if peer.is_none() && matches!(settings.store, StoreSettings::Redis { .. }) {
        tracing::warn!(
            "redis store without --peer-secret-file: replicas cannot forward to each other, so each one \
             adopts the sessions it receives; fine for one replica, costly for several"
        );
    }
    let app = app::App::new(settings, store, replica, peer);
    let listeners =
        server::Listeners::bind(app.settings.listen, app.settings.admin_listen, peer_listen).await?;
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
    let serving = tokio::spawn(server::serve(app.clone(), listeners, async {
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

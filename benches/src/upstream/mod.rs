//! `shadowcat-bench-upstream`: the fast MCP server every target of
//! `shadowcat-scale` shares, so the figures show the proxies and not it.
//!
//! A request reads top-down: [`route`] dispatches it, [`message`] reads the
//! JSON-RPC body (borrowed, no tree), [`reply`] writes the answer from
//! templates, and [`held`] keeps the standalone GET streams that a broadcast
//! writes to. Answers carry no per-request state beyond what the request
//! itself names; sessions are minted, not remembered.

pub mod held;
pub mod message;
pub mod reply;
pub mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use self::held::Held;

/// What the upstream is told at start.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Progress notifications an `sse` tool call sends before its response.
    pub sse_notifications: u32,
    /// Broadcast to every held stream this often, besides on `POST /broadcast`.
    pub broadcast_every: Option<Duration>,
}

/// Shared by every connection.
#[derive(Debug)]
pub struct State {
    /// The start-up settings.
    pub config: Config,
    /// The held standalone streams.
    pub held: Held,
    /// Mints session ids.
    pub sessions: reply::SessionIds,
    /// MCP requests served (control requests not counted), so a load
    /// generator can tell how many requests a proxy makes per call.
    pub requests: AtomicU64,
}

/// Serves on `listener` until the process ends.
pub async fn serve(listener: TcpListener, config: Config) -> anyhow::Result<()> {
    let state = Arc::new(State {
        config,
        held: Held::default(),
        sessions: reply::SessionIds::new(),
        requests: AtomicU64::new(0),
    });
    if let Some(every) = config.broadcast_every {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                state.held.broadcast();
            }
        });
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors, most likely: the load generator will see
            // the failure; the server must not end over it.
            Err(error) => {
                eprintln!("accept: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, peer, state.clone()));
    }
}

/// Serves one HTTP/1.1 connection; idle keep-alive connections stay open
/// (no header-read timeout), as the proxies' pools expect.
async fn connection(stream: tokio::net::TcpStream, _peer: SocketAddr, state: Arc<State>) {
    let service = service_fn(move |request| route::handle(state.clone(), request));
    let _ = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

#[cfg(test)]
mod tests;

//! Harness for Shadowcat's end-to-end tests: start the real `shadowcat`
//! binary, real MCP peers (Node and Python, pinned in `tests/peers/`) and a
//! small scriptable upstream, then talk MCP to them over real sockets.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]

pub mod client;
pub mod cluster;
pub mod conformance;
pub mod oauth;
pub mod procs;
pub mod relay;
pub mod upstream;
pub mod workload;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `check` yields `Some`, polling, up to `limit`; panics with
/// `what` on timeout. Tests wait for conditions, never for fixed times.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs `fut`, failing the test if it takes longer than `limit`.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

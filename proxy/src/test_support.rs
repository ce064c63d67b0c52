//! Helpers for the unit tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shadowcat_crds::SidecarConfig;

use crate::app::App;
use crate::peer::{PeerClient, PeerSecret};
use crate::store::{Instance, MemoryStore};

/// An app over a memory store of its own, configured by `config` (an
/// upstream nobody listens on is filled in), and that store.
pub fn app(config: SidecarConfig) -> (Arc<App>, Arc<MemoryStore>) {
    app_as(config, Instance::new("me"), None)
}

/// An app as process `me`, with a peer client when `peer` is set.
pub fn app_as(config: SidecarConfig, me: Instance, peer: Option<PeerClient>) -> (Arc<App>, Arc<MemoryStore>) {
    let settings = SidecarConfig {
        upstream: Some("http://127.0.0.1:1/mcp".into()),
        ..config
    }
    .validate()
    .unwrap_or_else(|e| panic!("test config: {e}"));
    let store = MemoryStore::new(crate::store_limits(&settings));
    let (app, _abandoned) = App::new(settings, store.clone(), me, peer).expect("app");
    (app, store)
}

/// A peer client with a test secret.
pub fn peer_client() -> PeerClient {
    let secret = PeerSecret::new(b"a-test-secret-of-enough-bytes").unwrap_or_else(|| unreachable!());
    PeerClient::new(secret, Duration::from_secs(5))
}

/// Serves `app`'s peer listener on a free loopback port; its address.
pub async fn serve_peer(app: Arc<App>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local addr: {e}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let app = app.clone();
            let service = hyper::service::service_fn(move |req| crate::route::peer(app.clone(), req));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr.to_string()
}

/// Waits until `check` yields `Some`, polling, up to 20 s; panics naming
/// `what` on timeout. Tests wait for conditions, never for fixed times.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

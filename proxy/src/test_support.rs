//! Helpers for the unit tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shadowcat_crds::SidecarConfig;

use crate::app::App;
use crate::store::{Instance, MemoryStore};

/// An app over a memory store of its own, configured by `config` (an
/// upstream nobody listens on is filled in), and that store.
pub fn app(config: SidecarConfig) -> (Arc<App>, Arc<MemoryStore>) {
    let settings = SidecarConfig {
        upstream: Some("http://127.0.0.1:1/mcp".into()),
        ..config
    }
    .validate()
    .unwrap_or_else(|e| panic!("test config: {e}"));
    let store = MemoryStore::new(crate::store_limits(&settings));
    let (app, _abandoned) = App::new(settings, store.clone(), Instance::new("me"), None);
    (app, store)
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

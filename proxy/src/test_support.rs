//! Helpers for the unit tests.

use std::future::Future;
use std::time::Duration;

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

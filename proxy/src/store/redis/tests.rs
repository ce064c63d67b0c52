//! The Redis store against a real redis-server of the tests' own.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A redis-server of the test's own, on a free port, gone when dropped.
struct Server {
    child: std::process::Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn server() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be on PATH (tests/peers/install.sh checks)");
    let server = Server {
        child,
        url: format!("redis://127.0.0.1:{port}"),
    };
    let store = RedisStore::new(&server.url, "probe", limits()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server
}

fn limits() -> LogLimits {
    LogLimits {
        max_events: 8,
        max_streams: 16,
        retention: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_store_passes_the_store_suite() {
    let server = server().await;
    let n = AtomicUsize::new(0);
    super::super::suite::run_all(|| {
        // A fresh prefix is a fresh, empty store on the same server.
        let prefix = format!("t{}", n.fetch_add(1, Ordering::SeqCst));
        let url = server.url.clone();
        async move { Arc::new(RedisStore::new(&url, &prefix, limits()).unwrap()) as Arc<dyn Store> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sessions_expire_when_idle() {
    let server = server().await;
    let store = RedisStore::new(&server.url, "idle", limits()).unwrap();
    let record = super::super::suite::record("idle");
    assert!(
        store
            .create_session(&record, Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert!(store.get_session("idle").await.unwrap().is_some());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.get_session("idle").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "session never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !store
            .touch_session("idle", Duration::from_secs(10))
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_an_error_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = RedisStore::new(&format!("redis://127.0.0.1:{port}"), "down", limits()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), store.get_session("x")).await;
    assert!(
        matches!(result, Ok(Err(StoreError::Unavailable(_)))),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_race_to_adopt_one_session_100_times_and_one_wins_each() {
    let server = server().await;
    let a = Arc::new(RedisStore::new(&server.url, "race", limits()).unwrap());
    let b = Arc::new(RedisStore::new(&server.url, "race", limits()).unwrap());
    let idle = Duration::from_secs(60);
    let mut wins = [0usize; 2];
    for round in 0..100 {
        let mut record = super::super::suite::record(&format!("s{round}"));
        record.owner = "dead-replica".into();
        assert!(a.create_session(&record, idle).await.unwrap());
        let id = record.id.clone();
        let (ra, rb) = tokio::join!(
            a.claim_session(&id, "dead-replica", "replica-a"),
            b.claim_session(&id, "dead-replica", "replica-b"),
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra ^ rb, "round {round}: exactly one claim wins (a={ra}, b={rb})");
        let owner = a.get_session(&id).await.unwrap().unwrap().owner;
        assert_eq!(owner, if ra { "replica-a" } else { "replica-b" });
        wins[usize::from(rb)] += 1;
    }
    assert_eq!(wins[0] + wins[1], 100);
}

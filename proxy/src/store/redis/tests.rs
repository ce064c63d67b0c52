//! The Redis store against real redis-servers of the tests' own: one plain
//! server, one speaking only TLS (certificates made by the test), and a
//! three-primary Cluster.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shadowcat_crds::{RedisTopology, SidecarConfig, StoreSettings};

use super::*;
use crate::store::suite;

/// A redis-server of the test's own, gone when dropped.
struct Server {
    child: std::process::Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(args: &[&str]) -> Server {
    let child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "-::1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(std::env::temp_dir())
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be on PATH (tests/peers/install.sh checks)");
    Server { child }
}

/// Settings for `store` as a user would write them (so they go through the
/// same validation), with `extra` YAML lines for the `redis:` block.
fn settings(store: &str, prefix: &str, redis: &str) -> RedisSettings {
    let yaml = format!(
        "upstream: http://127.0.0.1:1/mcp\nstore: {store}\nstorePrefix: {prefix}\n{}",
        if redis.is_empty() {
            String::new()
        } else {
            format!("redis:\n{redis}")
        }
    );
    match SidecarConfig::from_yaml(&yaml).unwrap().validate().unwrap().store {
        StoreSettings::Redis(settings) => settings,
        StoreSettings::Memory => unreachable!(),
    }
}

use suite::limits;

async fn until_up(store: &RedisStore) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Err(e) = store.ping().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis did not come up: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn plain() -> (Server, String) {
    let port = free_port();
    let server = spawn(&["--port", &port.to_string()]);
    let url = format!("redis://127.0.0.1:{port}");
    until_up(&RedisStore::new(&settings(&url, "probe", ""), limits()).unwrap()).await;
    (server, url)
}

/// Runs the store suite with a fresh prefix per test on the same server.
async fn suite_over(store: &str, redis: &str, limits: StoreLimits) {
    let n = AtomicUsize::new(0);
    suite::run_all(|| {
        let prefix = format!("t{}", n.fetch_add(1, Ordering::SeqCst));
        let settings = settings(store, &prefix, redis);
        async move { Arc::new(RedisStore::new(&settings, limits).unwrap()) as Arc<dyn Store> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_store_passes_the_store_suite() {
    let (_server, url) = plain().await;
    suite_over(&url, "", limits()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_logs_live_while_open_and_for_their_kinds_retention_after_their_end() {
    let (_server, url) = plain().await;
    let store = RedisStore::new(
        &settings(&url, "ret", ""),
        StoreLimits {
            idle: Duration::from_secs(60),
            retention: Duration::from_secs(60),
            response_retention: Duration::from_millis(400),
            ..limits()
        },
    )
    .unwrap();
    let me = suite::writer();
    assert!(store.create_session(&suite::record("s")).await.unwrap());
    let open = suite::meta("s", "open", StreamKind::Request);
    let done = suite::meta("s", "done", StreamKind::Request);
    let standalone = suite::meta("s", "standalone", StreamKind::Standalone);
    for m in [&open, &done, &standalone] {
        suite::open_stream(&store, m, &me).await;
        let event = StoredEvent {
            seq: 1,
            event: None,
            data: "{}".into(),
        };
        store.append(&m.key(), &me, &[event]).await.unwrap();
    }
    store.end_stream(&done.key(), &me).await.unwrap();
    store.end_stream(&standalone.key(), &me).await.unwrap();
    assert!(
        store.stream_meta(&done.key()).await.unwrap().is_some(),
        "a finished response stream is still known within its retention"
    );
    crate::test_support::eventually("the finished response log to expire", || async {
        (store.read(&done.key(), 0, Duration::ZERO).await.unwrap() == LogRead::Missing).then_some(())
    })
    .await;
    assert!(
        matches!(
            store.read(&standalone.key(), 0, Duration::ZERO).await.unwrap(),
            LogRead::Events { ref events, ended: true } if events.len() == 1
        ),
        "a finished standalone stream keeps the longer retention"
    );
    // Quiet for longer than the retention, and still whole.
    assert!(matches!(
        store.read(&open.key(), 0, Duration::ZERO).await.unwrap(),
        LogRead::Events { ref events, ended: false } if events.len() == 1
    ));
    let mut conn = store.conn().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.log_key(&open.key()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 30_000, "an open log lives with its session (ttl {ttl} ms)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_in_the_writers_process_follows_the_stream_without_reading_redis() {
    let (_server, url) = plain().await;
    let writer = RedisStore::new(&settings(&url, "tail", ""), limits()).unwrap();
    let other = RedisStore::new(&settings(&url, "tail", ""), limits()).unwrap();
    let me = suite::writer();
    assert!(writer.create_session(&suite::record("s")).await.unwrap());
    let m = suite::meta("s", "call", StreamKind::Request);
    suite::open_stream(&writer, &m, &me).await;
    let mut conn = writer.conn().await.unwrap();
    let reads = |conn: &mut Conn| {
        let mut conn = conn.clone();
        async move {
            let stats: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut conn)
                .await
                .unwrap();
            stats
                .lines()
                .filter(|l| l.starts_with("cmdstat_xrange") || l.starts_with("cmdstat_xread"))
                .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
                .sum::<u64>()
        }
    };
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let reader = tokio::spawn({
        let key = m.key();
        let store = Arc::new(writer);
        let me = me.clone();
        async move {
            let mut seen = Vec::new();
            let mut after = 0;
            let events: Vec<StoredEvent> = (1..=3)
                .map(|seq| StoredEvent {
                    seq,
                    event: None,
                    data: "{}".into(),
                })
                .collect();
            let appender = tokio::spawn({
                let (store, key, me) = (store.clone(), key.clone(), me.clone());
                async move {
                    for event in events {
                        store.append(&key, &me, &[event]).await.unwrap();
                    }
                    store.end_stream(&key, &me).await.unwrap();
                }
            });
            loop {
                match store.read(&key, after, Duration::from_secs(10)).await.unwrap() {
                    LogRead::Events { events, ended } => {
                        seen.extend(events.iter().map(|e| e.seq));
                        after = seen.last().copied().unwrap_or(after);
                        if ended {
                            break;
                        }
                    }
                    other => panic!("{other:?}"),
                }
            }
            appender.await.unwrap();
            seen
        }
    });
    assert_eq!(reader.await.unwrap(), vec![1, 2, 3]);
    assert_eq!(reads(&mut conn).await, 0, "served from the writer's memory");
    // Another process reads the same log from Redis.
    let LogRead::Events { events, ended } = other.read(&m.key(), 0, Duration::ZERO).await.unwrap() else {
        panic!("another replica finds the log");
    };
    assert_eq!((events.len(), ended), (3, true));
    assert!(reads(&mut conn).await > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_sessions_keys_do_not_grow_with_its_history() {
    let (_server, url) = plain().await;
    let store = RedisStore::new(
        &settings(&url, "busy", ""),
        StoreLimits {
            response_retention: Duration::from_secs(3),
            ..limits()
        },
    )
    .unwrap();
    let me = &suite::writer();
    let store = &store;
    assert!(store.create_session(&suite::record("s")).await.unwrap());
    let keys = store.keys("s");
    let call = |n: usize| async move {
        let m = suite::meta("s", &format!("call{n}"), StreamKind::Request);
        let answer = StoredEvent {
            seq: 1,
            event: None,
            data: format!("{{\"id\":{n}}}"),
        };
        suite::open_stream(store, &m, me).await;
        store.append(&m.key(), me, &[answer]).await.unwrap();
        store.end_stream(&m.key(), me).await.unwrap();
    };
    for n in 0..600 {
        call(n).await;
    }
    let mut conn = store.conn().await.unwrap();
    let count = |cmd: &'static str, key: String| {
        let mut conn = conn.clone();
        async move {
            redis::cmd(cmd)
                .arg(key)
                .query_async::<u64>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("HLEN", keys.streams.clone()).await,
        0,
        "finished calls leave the registry"
    );
    assert_eq!(count("ZCARD", keys.finished.clone()).await, 600);
    // Past the retention, the next call prunes the index of every expired one.
    crate::test_support::eventually("the finished logs to expire", || async {
        let left: u64 = redis::cmd("EXISTS")
            .arg(store.log_key(&StreamKey {
                session: "s".into(),
                id: "call599".into(),
            }))
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
    for n in 600..900 {
        call(n).await;
    }
    assert_eq!(count("ZCARD", keys.finished.clone()).await, 300);
    // Deleting drops every log, a batch per command, and leaves no key.
    assert!(store.delete_session("s").await.unwrap());
    // An opener that comes late (the standalone stream, opened in the
    // background) leaves nothing behind either.
    let late = suite::meta("s", "late", StreamKind::Standalone);
    assert!(matches!(
        store.create_stream(&late, me).await,
        Err(StoreError::Fenced(_))
    ));
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("busy:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_ends_while_a_reader_looks_is_read_not_missed() {
    let (_server, url) = plain().await;
    let store = RedisStore::new(&settings(&url, "race", ""), limits()).unwrap();
    let me = suite::writer();
    let m = suite::meta("s", "fast", StreamKind::Request);
    suite::open_stream(&store, &m, &me).await;
    // A reader found nothing after 0 in the log; before it asks whether the
    // stream is open, the stream gets its event, its end, and loses its mark.
    let log = store.log_key(&m.key());
    let event = StoredEvent {
        seq: 1,
        event: None,
        data: "{}".into(),
    };
    store
        .append(&m.key(), &me, std::slice::from_ref(&event))
        .await
        .unwrap();
    store.end_stream(&m.key(), &me).await.unwrap();
    let read = store.unless_open(&m.key(), &log, 0).await.unwrap();
    assert_eq!(
        read,
        Some(LogRead::Events {
            events: vec![event],
            ended: true
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sessions_expire_when_idle() {
    let (_server, url) = plain().await;
    let store = RedisStore::new(
        &settings(&url, "idle", ""),
        StoreLimits {
            idle: Duration::from_millis(300),
            ..limits()
        },
    )
    .unwrap();
    assert!(store.create_session(&suite::record("idle")).await.unwrap());
    assert!(store.get_session("idle").await.unwrap().is_some());
    crate::test_support::eventually("the session to expire", || async {
        store.get_session("idle").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(!store.touch_session("idle").await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_an_error_not_a_hang() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let store = RedisStore::new(&settings(&url, "down", ""), limits()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), store.get_session("x")).await;
    assert!(
        matches!(result, Ok(Err(StoreError::Unavailable(_)))),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_race_to_adopt_one_session_100_times_and_one_wins_each() {
    let (_server, url) = plain().await;
    let a = Arc::new(RedisStore::new(&settings(&url, "race", ""), limits()).unwrap());
    let b = Arc::new(RedisStore::new(&settings(&url, "race", ""), limits()).unwrap());
    let owner = |name: &str| {
        Owner::Held(Instance {
            replica: name.into(),
            incarnation: "1".into(),
        })
    };
    let (to_a, to_b) = (owner("replica-a"), owner("replica-b"));
    let mut wins = [0usize; 2];
    for round in 0..100 {
        let record = suite::record(&format!("s{round}"));
        assert!(a.create_session(&record).await.unwrap());
        let id = record.id.clone();
        // Who asks first alternates, so each side gets to race from ahead.
        let (ra, rb) = if round % 2 == 0 {
            tokio::join!(
                a.claim_session(&id, 1, &to_a, None),
                b.claim_session(&id, 1, &to_b, None),
            )
        } else {
            let (rb, ra) = tokio::join!(
                b.claim_session(&id, 1, &to_b, None),
                a.claim_session(&id, 1, &to_a, None),
            );
            (ra, rb)
        };
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(
            ra.is_some() ^ rb.is_some(),
            "round {round}: exactly one claim wins (a={ra:?}, b={rb:?})"
        );
        let got = a.get_session(&id).await.unwrap().unwrap();
        assert_eq!(got.owner, if ra.is_some() { to_a.clone() } else { to_b.clone() });
        assert_eq!(got.epoch, 2);
        wins[usize::from(rb.is_some())] += 1;
    }
    // Both orders happen: a claim wins by the store, not by who asks first.
    assert!(wins[0] > 0 && wins[1] > 0, "wins {wins:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_cluster_url_names_its_nodes() {
    let StoreSettings::Redis(s) = SidecarConfig::from_yaml(
        "upstream: http://127.0.0.1:1/mcp\nstore: redis+cluster://127.0.0.1:7000,127.0.0.1:7001\n",
    )
    .unwrap()
    .validate()
    .unwrap()
    .store
    else {
        panic!("not redis")
    };
    assert!(matches!(s.topology, RedisTopology::Cluster(ref nodes) if nodes.len() == 2));
}

/// Certificates a test makes (with `tests/redis/make-certs.sh`): a CA, a
/// server certificate for `localhost` only, and a client certificate.
struct Certs {
    dir: std::path::PathBuf,
}

impl Certs {
    fn make(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("shadowcat-tls-{name}-{}", std::process::id()));
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/redis/make-certs.sh");
        let out = std::process::Command::new(script).arg(&dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Certs { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    /// The `redis:` YAML block that uses these certificates.
    fn yaml(&self, ca: &str) -> String {
        format!(
            "  caFile: {}\n  clientCertFile: {}\n  clientKeyFile: {}\n",
            ca,
            self.path("client.crt"),
            self.path("client.key")
        )
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_server(certs: &Certs) -> (Server, u16) {
    let port = free_port();
    let server = spawn(&[
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &certs.path("server.crt"),
        "--tls-key-file",
        &certs.path("server.key"),
        "--tls-ca-cert-file",
        &certs.path("ca.crt"),
        "--tls-auth-clients",
        "yes",
    ]);
    let url = format!("rediss://localhost:{port}");
    until_up(
        &RedisStore::new(
            &settings(&url, "probe", &certs.yaml(&certs.path("ca.crt"))),
            limits(),
        )
        .unwrap(),
    )
    .await;
    (server, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_over_tls_with_client_certificates_passes_the_store_suite() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = Certs::make("suite");
    let (_server, port) = tls_server(&certs).await;
    suite_over(
        &format!("rediss://localhost:{port}"),
        &certs.yaml(&certs.path("ca.crt")),
        limits(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_tls_refuses_what_it_cannot_verify() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = Certs::make("refuse");
    let (_server, port) = tls_server(&certs).await;
    let other = Certs::make("other-ca");
    let no_client_cert = format!("  caFile: {}\n", certs.path("ca.crt"));
    for (what, url, redis) in [
        (
            "a server signed by another CA",
            format!("rediss://localhost:{port}"),
            other.yaml(&other.path("ca.crt")),
        ),
        (
            "a name the certificate does not carry",
            format!("rediss://127.0.0.1:{port}"),
            certs.yaml(&certs.path("ca.crt")),
        ),
        (
            "no client certificate",
            format!("rediss://localhost:{port}"),
            no_client_cert,
        ),
    ] {
        let store = RedisStore::new(&settings(&url, "refused", &redis), limits()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), store.ping()).await;
        assert!(
            matches!(result, Ok(Err(StoreError::Unavailable(_)))),
            "{what}: {result:?}"
        );
    }
}

/// A three-primary Redis Cluster of the test's own.
struct Cluster {
    _servers: Vec<Server>,
    ports: Vec<u16>,
    dir: std::path::PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn cluster() -> Cluster {
    let dir = std::env::temp_dir().join(format!(
        "shadowcat-cluster-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let (port, bus) = (free_port(), free_port());
        let conf = dir.join(format!("nodes-{port}.conf"));
        servers.push(spawn(&[
            "--port",
            &port.to_string(),
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus.to_string(),
            "--cluster-config-file",
            &conf.to_string_lossy(),
        ]));
        ports.push(port);
    }
    for port in &ports {
        let url = format!("redis://127.0.0.1:{port}");
        until_up(&RedisStore::new(&settings(&url, "probe", ""), limits()).unwrap()).await;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/redis/create-cluster.sh");
    let out = std::process::Command::new(script)
        .args(ports.iter().map(u16::to_string))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Cluster {
        _servers: servers,
        ports,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_primary_redis_cluster_passes_the_store_suite() {
    let cluster = cluster().await;
    let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let url = format!("redis+cluster://{}", nodes.join(","));
    suite_over(&url, "", limits()).await;
    // The suite's sessions spread over the primaries: keys live on more than
    // one node, so redirections were followed, not avoided.
    let holding = cluster
        .ports
        .iter()
        .filter(|p| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &p.to_string(), "dbsize"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim() != "0"
        })
        .count();
    assert!(holding >= 2, "keys on {holding} of 3 primaries");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_redis_restart_one_failed_read_clears_every_stale_connection() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("shadowcat-restart-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let args = [
        "--port".to_owned(),
        port.to_string(),
        "--appendonly".into(),
        "yes".into(),
        "--appendfsync".into(),
        "always".into(),
        "--dir".into(),
        dir.to_string_lossy().into_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let url = format!("redis://127.0.0.1:{port}");
    let server = spawn(&args);
    let store = Arc::new(RedisStore::new(&settings(&url, "restart", ""), limits()).unwrap());
    until_up(&store).await;
    let m = suite::meta("s", "quiet", StreamKind::Standalone);
    // Written by another process, so the readers here block in Redis.
    let writer = RedisStore::new(&settings(&url, "restart", ""), limits()).unwrap();
    suite::open_stream(&writer, &m, &suite::writer()).await;
    // Readers blocked at once leave a pool of connections behind.
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (store, key) = (store.clone(), m.key());
            tokio::spawn(async move { store.read(&key, 0, Duration::from_millis(300)).await })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap().unwrap();
    }
    let pooled = store.conns.pooled();
    assert!(pooled > 1, "{pooled} pooled connections");
    drop(server);
    let _server = spawn(&args);
    until_up(&store).await;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match store.read(&m.key(), 0, Duration::from_millis(50)).await {
            Ok(read) => {
                assert_eq!(
                    read,
                    LogRead::Events {
                        events: vec![],
                        ended: false
                    }
                );
                break;
            }
            Err(e) => {
                assert_eq!(attempts, 1, "only the first read fails: {e}");
                assert_eq!(store.conns.pooled(), 0, "and it cleared the pool");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

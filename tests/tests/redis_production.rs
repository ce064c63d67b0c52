//! Redis as production runs it, through the real binary: TLS with client
//! certificates, a Redis Cluster, and a primary failover under load in which
//! no event a client saw is lost (`--redis-wait-replicas`); and what one call
//! costs Redis.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use shadowcat_tests::client::{Events, Mcp, progress};
use shadowcat_tests::procs::{RedisServer, Shadowcat, redis_cli};
use shadowcat_tests::relay::Relay;
use shadowcat_tests::upstream::Scripted;
use shadowcat_tests::workload::streamed_call;
use shadowcat_tests::{eventually, free_port, root};

/// A stream resumed mid-way and read to its end: the store works.
async fn resume_round_trip(proxy: &Shadowcat, upstream: &Scripted) {
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let mut events = mcp.call_stream(2).await;
    upstream.release(1);
    let (first, message) = events.next_message().await.unwrap();
    assert_eq!(progress(&message), 1);
    drop(events);
    let sent = upstream.sent();
    upstream.release(2);
    upstream.wait_sent(sent + 2).await;
    let rest = Events::new(mcp.get(first.as_deref()).await).rest().await;
    assert_eq!(progress(&rest[0].1), 2);
    assert_eq!(rest[1].1["result"]["content"][0]["text"], "done after 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn shadowcat_over_rediss_with_client_certificates() {
    let dir = std::env::temp_dir().join(format!("shadowcat-e2e-tls-{}", std::process::id()));
    let made = std::process::Command::new(root().join("tests/redis/make-certs.sh"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(made.success());
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let port = free_port();
    let _redis = RedisServer::start_with(
        port,
        None,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &file("server.crt"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.crt"),
            "--tls-auth-clients",
            "yes",
        ],
    )
    .await;
    let upstream = Scripted::start().await;
    let store = format!("rediss://localhost:{port}");
    let proxy = Shadowcat::start(
        &upstream.url,
        &[
            "--store",
            &store,
            "--redis-ca-file",
            &file("ca.crt"),
            "--redis-client-cert-file",
            &file("client.crt"),
            "--redis-client-key-file",
            &file("client.key"),
        ],
    )
    .await;
    resume_round_trip(&proxy, &upstream).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn shadowcat_on_a_redis_cluster() {
    let dir = std::env::temp_dir().join(format!("shadowcat-e2e-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let (port, bus) = (free_port(), free_port());
        let conf = dir
            .join(format!("nodes-{port}.conf"))
            .to_string_lossy()
            .into_owned();
        let bus = bus.to_string();
        nodes.push(
            RedisServer::start_with(
                port,
                None,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-config-file",
                    &conf,
                ],
            )
            .await,
        );
    }
    let created = std::process::Command::new(root().join("tests/redis/create-cluster.sh"))
        .args(nodes.iter().map(|n| n.port.to_string()))
        .status()
        .unwrap();
    assert!(created.success());
    let hosts: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let upstream = Scripted::start().await;
    let store = format!("redis+cluster://{}", hosts.join(","));
    let proxy = Shadowcat::start(&upstream.url, &["--store", &store]).await;
    for _ in 0..4 {
        resume_round_trip(&proxy, &upstream).await;
    }
    // Enough sessions that their keys land on several primaries (all of a
    // dozen on one of three: about one run in 180 000), so redirections were
    // followed.
    for _ in 0..8 {
        Mcp::new(&proxy.url, "2025-06-18").initialize().await;
    }
    let holding = nodes
        .iter()
        .filter(|n| redis_cli(n.port, &["DBSIZE"]) != "0")
        .count();
    assert!(holding >= 2, "keys on {holding} of 3 primaries");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A replica of the primary at `127.0.0.1:port`, once in sync.
async fn replica_of(primary: &str) -> RedisServer {
    let (host, port) = primary.split_once(':').unwrap();
    let replica = RedisServer::start_with(free_port(), None, &["--replicaof", host, port]).await;
    eventually("the replica to sync", Duration::from_secs(20), || {
        let info = redis_cli(replica.port, &["INFO", "replication"]);
        async move { info.contains("master_link_status:up").then_some(()) }
    })
    .await;
    replica
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_failover_under_load_loses_no_event_a_client_saw() {
    let mut primary = RedisServer::start().await;
    // The replica's link to the primary, which the test can cut.
    let link = Relay::start(&format!("127.0.0.1:{}", primary.port)).await;
    let replica = replica_of(&link.addr).await;
    // The address Shadowcat knows: a Service that follows the primary.
    let service = Relay::start(&format!("127.0.0.1:{}", primary.port)).await;
    let upstream = Scripted::start().await;
    let store = format!("redis://{}", service.addr);
    let args = [
        "--store",
        store.as_str(),
        "--redis-wait-replicas",
        "1",
        "--redis-wait-timeout",
        "200ms",
        "--replica-id",
        "writer",
    ];
    let mut proxy = Shadowcat::start(&upstream.url, &args).await;
    // 2025-11-25: every stream starts with a priming id, so even a call
    // whose first event never came can be resumed after the pod is gone.
    let mut mcp = Mcp::new(&proxy.url, "2025-11-25");
    mcp.initialize().await;

    // A client streams calls all along and notes every event it sees.
    let seen: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (seen, calls, done) = (seen.clone(), calls.clone(), done.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let read = streamed_call(&mcp, "stream", json!({"count": 4, "delay_ms": 25}), 60).await;
                if read
                    .failure
                    .as_deref()
                    .is_some_and(|f| f.starts_with("no answer"))
                {
                    // Nothing listened (the pod restarting): the call never
                    // reached Shadowcat; a client tries again.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                // A stream that started while Redis was away is relayed
                // without a log, so without ids: nothing to resume, nothing
                // to lose.
                for (id, message) in &read.events {
                    if let Some(id) = id {
                        seen.lock().unwrap().insert(id.clone(), message.clone());
                    }
                }
                answers.push(match read.answer() {
                    Some(answer) => answer.clone(),
                    // A stream created (not yet replicated) as the primary
                    // died is unknown after the failover: an explicit miss.
                    None if read.missed => json!({"missed": read.failure}),
                    None => json!({"unreadable": read.failure}),
                });
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            (mcp, answers)
        })
    };
    let wait_calls = |n: usize| {
        let calls = calls.clone();
        async move {
            let target = calls.load(std::sync::atomic::Ordering::SeqCst) + n;
            eventually("client calls", Duration::from_secs(60), || {
                let calls = calls.clone();
                async move { (calls.load(std::sync::atomic::Ordering::SeqCst) >= target).then_some(()) }
            })
            .await;
        }
    };
    wait_calls(3).await;

    // The replica's link stalls: appends reach the primary but not the
    // replica, so are not acknowledged, and no client may see them. Then the
    // node holding the primary and the writing Shadowcat dies: only the
    // primary ever held those events, and nobody holds them in memory.
    link.pause();
    eventually(
        "an append to wait for the stalled replica",
        Duration::from_secs(20),
        || {
            let waiting = proxy.proc.output().contains("Redis replicas acknowledged");
            async move { waiting.then_some(()) }
        },
    )
    .await;
    proxy.proc.child.kill().await.unwrap();
    primary.proc.child.kill().await.unwrap();
    assert!(redis_cli(replica.port, &["REPLICAOF", "NO", "ONE"]).contains("OK"));
    let _next = replica_of(&format!("127.0.0.1:{}", replica.port)).await;
    service.retarget(&format!("127.0.0.1:{}", replica.port));
    // The pod comes back (a new process under the same name, where the
    // client's connections go); it takes over what the old one left.
    let listen = proxy
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let _back = Shadowcat::start_at(&upstream.url, &listen, &args).await;
    wait_calls(3).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mcp, answers) = client.await.unwrap();

    // Every event the client saw is in the new primary's logs, unchanged.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 15, "{} events seen", seen.len());
    let mut streams: BTreeMap<String, Vec<(u64, Value)>> = BTreeMap::new();
    for (id, message) in &seen {
        let (stream, seq) = id.rsplit_once('.').unwrap();
        streams
            .entry(stream.to_owned())
            .or_default()
            .push((seq.parse().unwrap(), message.clone()));
    }
    for (stream, events) in streams {
        let kept: Vec<Value> = Events::new(mcp.get(Some(&format!("{stream}.0"))).await)
            .rest()
            .await
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        for (seq, message) in events {
            assert_eq!(
                kept.get(seq as usize - 1),
                Some(&message),
                "event {stream}.{seq} after the failover"
            );
        }
    }
    let results = answers.iter().filter(|a| a.get("result").is_some()).count();
    let errors = answers.iter().filter(|a| a.get("error").is_some()).count();
    let missed = answers.iter().filter(|a| a.get("missed").is_some()).count();
    println!(
        "failover: {} calls, {results} results, {errors} errors, {missed} explicit misses, {} events seen, none lost",
        answers.len(),
        seen.len()
    );
    assert_eq!(
        results + errors + missed,
        answers.len(),
        "every call got one answer or an explicit miss: {answers:?}"
    );
}

/// Calls of `command` in `INFO commandstats` (0 when it never ran).
fn command_calls(stats: &str, command: &str) -> u64 {
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A POST answered by the replica it reached costs Redis two scripts — open
/// the stream, then append its events and end it — and no reads: the
/// replica's own reader follows the stream from memory.
#[tokio::test]
async fn a_call_answered_where_it_landed_costs_two_scripts_and_no_reads() {
    let upstream = Scripted::start().await;
    let redis = RedisServer::start().await;
    let proxy = Shadowcat::start(&upstream.url, &["--store", redis.url.as_str()]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let call = || mcp.request("tools/call", json!({"name": "big", "arguments": {"bytes": 16}}));
    assert!(call().await["result"].is_object());
    redis_cli(redis.port, &["CONFIG", "RESETSTAT"]);
    const CALLS: u64 = 40;
    for _ in 0..CALLS {
        let answer = call().await;
        assert_eq!(
            answer["result"]["content"][0]["text"].as_str().map(str::len),
            Some(16)
        );
    }
    let stats = redis_cli(redis.port, &["INFO", "commandstats"]);
    let reads: u64 = ["xrange", "xrevrange", "xread", "hexists"]
        .iter()
        .map(|c| command_calls(&stats, c))
        .sum();
    assert_eq!(reads, 0, "{stats}");
    // Besides the calls: a heartbeat and a session re-read about once a second.
    let scripts = command_calls(&stats, "evalsha") + command_calls(&stats, "eval");
    assert!(
        (2 * CALLS..=2 * CALLS + 10).contains(&scripts),
        "{scripts} scripts for {CALLS} calls:\n{stats}"
    );
}

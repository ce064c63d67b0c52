//! Several replicas behind a round-robin Service, sharing Redis: any replica
//! serves any session, resumes any stream, and takes a session over when its
//! owner dies.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use http_body_util::BodyExt;
use serde_json::json;
use shadowcat_tests::client::{Events, Mcp, metric, progress};
use shadowcat_tests::cluster::Cluster;

fn count(cluster: &Cluster, upstream: usize, method: &str) -> usize {
    cluster.upstreams[upstream]
        .rpc_methods()
        .iter()
        .filter(|m| *m == method)
        .count()
}

/// A call under way on the owner's upstream.
struct UnderWay {
    owner: usize,
    events: Events,
    /// The id of the first progress event, read.
    first_id: Option<String>,
    /// The call's JSON-RPC id.
    call_id: u64,
}

/// Initializes `mcp` and starts a call of `steps` progress events, of which
/// the owner's upstream sends the first.
async fn call_under_way(cluster: &Cluster, mcp: &mut Mcp, steps: u64) -> UnderWay {
    mcp.initialize().await;
    let owner = cluster.initialized_on()[0];
    let mut events = mcp.call_stream(steps).await;
    cluster.upstreams[owner].release(1);
    let (first_id, first) = events.next_message().await.unwrap();
    assert_eq!(progress(&first), 1);
    // The call's id is the one before the client's next.
    let call_id = mcp.request_body("ping", json!({}))["id"].as_u64().unwrap() - 1;
    UnderWay {
        owner,
        events,
        first_id,
        call_id,
    }
}

/// Resumes a lost call on whichever replica the Service picks: what it
/// reads, or a failure with every replica's log.
async fn resume_lost_call(
    cluster: &Cluster,
    mcp: &Mcp,
    first_id: Option<&str>,
) -> Vec<(Option<String>, serde_json::Value)> {
    tokio::time::timeout(std::time::Duration::from_secs(15), async {
        Events::new(mcp.get(first_id).await).rest().await
    })
    .await
    .unwrap_or_else(|_| panic!("resume did not end:\n{}", cluster.all_output()))
}

/// The error a lost call is answered with.
fn assert_lost(resumed: &[(Option<String>, serde_json::Value)], call_id: u64) {
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    let error = &resumed[0].1;
    assert_eq!(error["id"], call_id);
    assert_eq!(error["error"]["code"], -32603);
    assert!(
        error["error"]["message"].as_str().unwrap().contains("lost"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_on_another_replica_reaches_the_owner() {
    let cluster = Cluster::start(3, &[]).await;
    let mut mcp = Mcp::new(&cluster.front.url, "2025-06-18");
    mcp.initialize().await;
    let owner = cluster.initialized_on();
    assert_eq!(owner.len(), 1, "one upstream session");
    let owner = owner[0];
    for i in 0..12 {
        let answer = mcp
            .request("tools/call", json!({"name": "echo", "arguments": {"n": i}}))
            .await;
        assert_eq!(answer["result"]["content"][0]["text"], "ok", "call {i}");
    }
    for upstream in 0..3 {
        let expected = if upstream == owner { 12 } else { 0 };
        assert_eq!(
            count(&cluster, upstream, "tools/call"),
            expected,
            "upstream {upstream}"
        );
    }
    // Round robin sends two of every three requests elsewhere first.
    assert!(cluster.total("shadowcat_peer_forwards_total").await >= 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_resume_on_other_replica_mid_stream_and_after_completion() {
    let cluster = Cluster::start(3, &[]).await;
    let mut mcp = Mcp::new(&cluster.front.url, "2025-11-25");
    mcp.initialize().await;
    let owner = cluster.initialized_on()[0];
    let upstream = &cluster.upstreams[owner];
    let mut events = mcp.call_stream(5).await;
    upstream.release(2);
    let mut last = None;
    for expected in 1..=2 {
        let (id, m) = events.next_message().await.unwrap();
        assert_eq!(progress(&m), expected);
        last = id;
    }
    drop(events);
    upstream.release(1);
    upstream.wait_sent(3).await;
    // The next request goes to another replica: it serves the resumption
    // from Redis, then follows the owner's pump live.
    let mut resumed = Events::new(mcp.get(last.as_deref()).await);
    let (_, third) = resumed.next_message().await.unwrap();
    assert_eq!(progress(&third), 3);
    upstream.release(3);
    let rest = resumed.rest().await;
    let got: Vec<_> = rest
        .iter()
        .filter(|(_, m)| m.get("method").is_some())
        .map(|(_, m)| progress(m))
        .collect();
    assert_eq!(got, vec![4, 5]);
    assert_eq!(
        rest.last().unwrap().1["result"]["content"][0]["text"],
        "done after 5"
    );

    // After completion, from yet another replica: the same tail, exactly.
    let again = Events::new(mcp.get(last.as_deref()).await).rest().await;
    let again: Vec<_> = again.iter().map(|(_, m)| m.clone()).collect();
    let expected: Vec<_> = std::iter::once(third)
        .chain(rest.iter().map(|(_, m)| m.clone()))
        .collect();
    assert_eq!(again, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_resume_after_owner_killed_gets_an_error_and_the_session_is_adopted() {
    let mut cluster = Cluster::start(3, &[]).await;
    let mut mcp = Mcp::new(&cluster.front.url, "2025-06-18");
    let call = call_under_way(&cluster, &mut mcp, 5).await;
    let owner = call.owner;
    cluster.kill(owner).await;
    drop(call.events);

    // Resuming on a live replica: the lost call is answered with an error.
    let resumed = resume_lost_call(&cluster, &mcp, call.first_id.as_deref()).await;
    assert_lost(&resumed, call.call_id);

    // The same session id goes on, on the adopting replica's upstream.
    let answer = mcp
        .request("tools/call", json!({"name": "echo", "arguments": {}}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "ok");
    let adopters: Vec<usize> = (0..3)
        .filter(|i| *i != owner && count(&cluster, *i, "initialize") == 1)
        .collect();
    assert_eq!(
        adopters.len(),
        1,
        "exactly one replica re-initialized its upstream"
    );
    let adopter = adopters[0];
    assert_eq!(count(&cluster, adopter, "notifications/initialized"), 1);
    assert_eq!(count(&cluster, adopter, "tools/call"), 1);
    let adoptions = metric(
        &mcp.http,
        &cluster.replicas[adopter].as_ref().unwrap().admin,
        "shadowcat_session_adoptions_total",
    )
    .await;
    assert_eq!(adoptions, 1);
}

/// What the client loop saw during a rolling restart.
#[derive(Debug, Default)]
struct Tally {
    calls: usize,
    failed: Vec<String>,
    events: usize,
    lost: usize,
    resumes: usize,
}

/// One streamed call of three progress events, read to its result,
/// resuming through the front whenever a connection closes first.
async fn streamed_call(mcp: &Mcp, tally: &mut Tally) -> Result<(), String> {
    let read = shadowcat_tests::workload::streamed_call(mcp, "stream", json!({"count": 3}), 4).await;
    let progress_seen = read.progress();
    tally.resumes += read.resumes;
    tally.events += progress_seen.len();
    tally.lost += 3usize.saturating_sub(progress_seen.len());
    let answer = read
        .answer()
        .ok_or_else(|| read.failure.clone().unwrap_or_default())?;
    match answer.get("result") {
        Some(_) if progress_seen == [1, 2, 3] => Ok(()),
        Some(_) => Err(format!("progress {progress_seen:?}")),
        None => Err(format!("error answer {answer}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_restart_of_every_replica_fails_no_call_and_loses_no_event() {
    let mut cluster = Cluster::start(3, &["--drain-timeout", "10s"]).await;
    for upstream in &cluster.upstreams {
        upstream.release(1 << 20);
    }
    let mut mcp = Mcp::new(&cluster.front.url, "2025-06-18");
    mcp.initialize().await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress_made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = {
        let (done, progress_made) = (done.clone(), progress_made.clone());
        tokio::spawn(async move {
            let mut tally = Tally::default();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                tally.calls += 1;
                let answer = mcp
                    .request("tools/call", json!({"name": "echo", "arguments": {}}))
                    .await;
                if answer["result"]["content"][0]["text"] != "ok" {
                    tally.failed.push(format!("echo: {answer}"));
                }
                tally.calls += 1;
                if let Err(e) = streamed_call(&mcp, &mut tally).await {
                    tally.failed.push(e);
                }
                progress_made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            tally
        })
    };
    let wait_for_calls = |n: usize| {
        let progress_made = progress_made.clone();
        async move {
            let target = progress_made.load(std::sync::atomic::Ordering::SeqCst) + n;
            shadowcat_tests::eventually("client calls", std::time::Duration::from_secs(60), || {
                let p = progress_made.clone();
                async move { (p.load(std::sync::atomic::Ordering::SeqCst) >= target).then_some(()) }
            })
            .await;
        }
    };
    wait_for_calls(5).await;
    for i in 0..3 {
        cluster.stop(i).await;
        wait_for_calls(5).await;
        cluster.start_replica(i).await;
        wait_for_calls(5).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let tally = client.await.unwrap();
    println!(
        "rolling restart: {} calls, {} failed, {} events, {} lost, {} resumes",
        tally.calls,
        tally.failed.len(),
        tally.events,
        tally.lost,
        tally.resumes
    );
    assert!(tally.calls >= 60, "{tally:?}");
    assert_eq!(tally.failed, Vec::<String>::new());
    assert_eq!(tally.lost, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_keeps_owned_sessions_flowing_and_all_recovers_without_restart() {
    let mut cluster = Cluster::start(2, &[]).await;
    for upstream in &cluster.upstreams {
        upstream.release(1 << 20);
    }
    // A Redis that keeps its data across a restart, as a real one would.
    let port = cluster.redis.port;
    let dir = std::env::temp_dir().join(format!("shadowcat-redis-{}-{port}", std::process::id()));
    cluster.redis.proc.child.kill().await.unwrap();
    cluster.redis = shadowcat_tests::procs::RedisServer::start_on(port, Some(&dir)).await;

    // Store health is a metric (and a line of /readyz?verbose), not
    // readiness: a Redis outage must not take every replica out of the
    // Service at once.
    let store_up = |admin: String, want: u64| async move {
        let http = shadowcat_tests::client::http();
        shadowcat_tests::eventually("store health", std::time::Duration::from_secs(20), || {
            let (http, admin) = (http.clone(), admin.clone());
            async move {
                let up = metric(&http, &admin, "shadowcat_store_up").await;
                (up == want).then_some(())
            }
        })
        .await;
    };
    let readiness = |admin: String| async move {
        let http = shadowcat_tests::client::http();
        let r = shadowcat_tests::client::send(
            &http,
            http::Method::GET,
            &format!("{admin}/readyz?verbose"),
            &[],
            bytes::Bytes::new(),
        )
        .await;
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };

    // Each replica's first command after the swap finds its old connection
    // broken and reconnects: new sessions work once every replica has.
    for replica in cluster.replicas.iter().flatten() {
        shadowcat_tests::eventually("a session on every replica", std::time::Duration::from_secs(20), || {
            let url = replica.url.clone();
            async move {
                let probe = Mcp::new(&url, "2025-06-18");
                let init = probe.request_body(
                    "initialize",
                    json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
                );
                (probe.post(&init).await.status() == 200).then_some(())
            }
        })
        .await;
        store_up(replica.admin.clone(), 1).await;
    }
    let mut mcp = Mcp::new(&cluster.front.url, "2025-06-18");
    mcp.initialize().await;
    let owner = cluster.initialized_on()[0];
    let owner_replica = cluster.replicas[owner].as_ref().unwrap();
    let mut direct = Mcp::new(&owner_replica.url, "2025-06-18");
    direct.session = mcp.session.clone();

    cluster.redis.proc.child.kill().await.unwrap();
    store_up(owner_replica.admin.clone(), 0).await;
    let (status, verbose) = readiness(owner_replica.admin.clone()).await;
    assert_eq!(status, 200, "still ready: {verbose}");
    assert!(verbose.contains("store: down"), "{verbose}");
    let mut tally = Tally::default();
    for _ in 0..5 {
        let answer = direct
            .request("tools/call", json!({"name": "echo", "arguments": {}}))
            .await;
        assert_eq!(
            answer["result"]["content"][0]["text"], "ok",
            "echo during the outage"
        );
        streamed_call(&direct, &mut tally).await.unwrap();
    }
    assert_eq!(tally.events, 15);
    // What needs Redis says so, with a retry hint.
    let init = direct.request_body(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
    );
    let mut fresh = Mcp::new(&owner_replica.url, "2025-06-18");
    fresh.session = None;
    let refused = fresh.post(&init).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");

    cluster.redis = shadowcat_tests::procs::RedisServer::start_on(port, Some(&dir)).await;
    for replica in cluster.replicas.iter().flatten() {
        store_up(replica.admin.clone(), 1).await;
    }
    // Cross-replica service is back, with no restart of Shadowcat.
    for _ in 0..4 {
        let answer = mcp
            .request("tools/call", json!({"name": "echo", "arguments": {}}))
            .await;
        assert_eq!(
            answer["result"]["content"][0]["text"], "ok",
            "echo after the outage"
        );
    }
    let mut events = {
        let body = mcp.request_body("tools/call", json!({"name": "stream", "arguments": {"count": 3}}));
        Events::new(mcp.post(&body).await)
    };
    let (first, _) = events.next_message().await.unwrap();
    drop(events);
    let resumed = Events::new(mcp.get(first.as_deref()).await).rest().await;
    assert_eq!(resumed.len(), 3, "{resumed:?}");
    assert_eq!(resumed[2].1["result"]["content"][0]["text"], "done after 3");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_port_refuses_requests_without_a_valid_signature() {
    let cluster = Cluster::start(2, &[]).await;
    let mut mcp = Mcp::new(&cluster.front.url, "2025-06-18");
    mcp.initialize().await;
    let session = mcp.session.clone().unwrap();
    let peer = &cluster.replicas[0].as_ref().unwrap().peer;
    assert!(!peer.is_empty());
    let url = format!("http://{peer}/mcp");
    let body = bytes::Bytes::from(mcp.request_body("tools/list", json!({})).to_string());
    let base = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-session-id", session.as_str()),
        ("shadowcat-hop", "1"),
    ];
    let forged = [("shadowcat-peer-auth", "t=1,sig=00")];
    for extra in [&[][..], &forged[..]] {
        let headers: Vec<_> = base.iter().chain(extra).copied().collect();
        let response =
            shadowcat_tests::client::send(&mcp.http, http::Method::POST, &url, &headers, body.clone()).await;
        assert_eq!(response.status(), 401);
        let answer = shadowcat_tests::client::json_body(response).await;
        assert_eq!(answer["error"]["code"], -32600);
    }
    // A client cannot mark its own request as forwarded on the public port
    // of a replica that does not own the session: the marker is dropped and
    // the request is forwarded to the owner as usual (were the marker kept,
    // that replica would refuse to forward it a second time: 503).
    let headers: Vec<_> = base.iter().chain(&forged).copied().collect();
    let owner = cluster.initialized_on()[0];
    let elsewhere = &cluster.replicas[1 - owner].as_ref().unwrap().url;
    let forwards = cluster.total("shadowcat_peer_forwards_total").await;
    let response =
        shadowcat_tests::client::send(&mcp.http, http::Method::POST, elsewhere, &headers, body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        count(&cluster, owner, "tools/list"),
        1,
        "served by the owner's upstream"
    );
    assert_eq!(count(&cluster, 1 - owner, "tools/list"), 0);
    assert_eq!(
        cluster.total("shadowcat_peer_forwards_total").await,
        forwards + 1,
        "forwarded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_owner_answers_504_and_the_call_runs_once() {
    let cluster = Cluster::start(2, &["--upstream-timeout", "1s"]).await;
    let mut mcp = Mcp::new(&cluster.front.url, "2025-06-18");
    mcp.initialize().await;
    let owner = cluster.initialized_on()[0];
    let other = 1 - owner;
    let mut elsewhere = Mcp::new(&cluster.replicas[other].as_ref().unwrap().url, "2025-06-18");
    elsewhere.session = mcp.session.clone();

    // Slower than the owner's upstream timeout, sent to the replica that
    // does not own the session: forwarded, and the owner's 504 comes back.
    let body = elsewhere.request_body("tools/call", json!({"name": "sleep", "arguments": {"ms": 2500}}));
    let response = elsewhere.post(&body).await;
    assert_eq!(response.status(), 504);
    let answer = shadowcat_tests::client::json_body(response).await;
    assert_eq!(answer["id"], body["id"], "the error answers the request");
    assert_eq!(answer["error"]["code"], -32603);

    // The upstream finishes it in its own time; nobody ran it a second time.
    let next = elsewhere
        .request("tools/call", json!({"name": "echo", "arguments": {}}))
        .await;
    assert_eq!(next["result"]["content"][0]["text"], "ok");
    assert_eq!(
        cluster.upstreams[owner].calls("echo"),
        1,
        "the owner still serves it"
    );
    assert_eq!(
        cluster.upstreams[other].calls("sleep") + cluster.upstreams[other].calls("echo"),
        0
    );
    assert_eq!(
        cluster.total("shadowcat_session_adoptions_total").await,
        0,
        "slow is not dead"
    );
    assert_eq!(
        cluster.upstreams[owner].calls("sleep"),
        1,
        "the slow call ran once, after its 504 too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_cut_off_from_redis_keeps_its_sessions() {
    let cluster = Cluster::start_partitionable(2, &[]).await;
    let mut mcp = Mcp::new(&cluster.front.url, "2025-06-18");
    mcp.initialize().await;
    let owner = cluster.initialized_on()[0];
    let other = 1 - owner;
    let mut elsewhere = Mcp::new(&cluster.replicas[other].as_ref().unwrap().url, "2025-06-18");
    elsewhere.session = mcp.session.clone();

    // The owner loses Redis (not the other replica, not its clients): its
    // heartbeat stops and its registration expires.
    cluster.relays[owner].pause();
    let key = format!("shadowcat:replica:replica-{owner}");
    shadowcat_tests::eventually(
        "the owner's registration to expire",
        std::time::Duration::from_secs(20),
        || {
            let exists = cluster.redis_cli(&["EXISTS", &key]);
            async move { (exists == "0").then_some(()) }
        },
    )
    .await;

    // Unregistered is not gone: asked at its address, the owner answers, so
    // the request is forwarded, and the owner serves it from its cache.
    let answer = elsewhere
        .request("tools/call", json!({"name": "echo", "arguments": {}}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "ok", "{answer}");
    assert_eq!(cluster.upstreams[owner].calls("echo"), 1);
    assert_eq!(cluster.upstreams[other].rpc_methods(), Vec::<String>::new());
    assert_eq!(
        cluster.total("shadowcat_session_adoptions_total").await,
        0,
        "no mass adoption on a hiccup"
    );
    cluster.relays[owner].resume();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_restarted_under_its_name_fails_what_the_old_process_left_unanswered() {
    let mut cluster = Cluster::start(2, &[]).await;
    let mut mcp = Mcp::new(&cluster.front.url, "2025-06-18");
    let call = call_under_way(&cluster, &mut mcp, 3).await;

    // A StatefulSet pod comes back under the same name, at once: its
    // registration is fresh, but it is another process.
    cluster.kill(call.owner).await;
    drop(call.events);
    cluster.start_replica(call.owner).await;

    let resumed = resume_lost_call(&cluster, &mcp, call.first_id.as_deref()).await;
    assert_lost(&resumed, call.call_id);
    let answer = mcp
        .request("tools/call", json!({"name": "echo", "arguments": {}}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "ok");
}

//! Several replicas behind a round-robin Service, sharing Redis: any replica
//! serves any session, resumes any stream, and takes a session over when its
//! owner dies.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use serde_json::{Value, json};
use shadowcat_tests::client::{Events, Mcp, metric};
use shadowcat_tests::cluster::Cluster;

fn progress(message: &Value) -> u64 {
    message
        .pointer("/params/progress")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("not progress: {message}"))
}

fn count(cluster: &Cluster, upstream: usize, method: &str) -> usize {
    cluster.upstreams[upstream]
        .rpc_methods()
        .iter()
        .filter(|m| *m == method)
        .count()
}

async fn forwards(cluster: &Cluster, mcp: &Mcp) -> u64 {
    let mut total = 0;
    for replica in cluster.replicas.iter().flatten() {
        total += metric(&mcp.http, &replica.admin, "shadowcat_peer_forwards_total").await;
    }
    total
}

async fn call_stream(mcp: &Mcp, count: u64) -> Events {
    let body = mcp.request_body(
        "tools/call",
        json!({"name": "stream", "arguments": {"count": count}}),
    );
    let response = mcp.post(&body).await;
    assert_eq!(response.status(), 200);
    Events::new(response)
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
    assert!(forwards(&cluster, &mcp).await >= 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_resume_on_other_replica_mid_stream_and_after_completion() {
    let cluster = Cluster::start(3, &[]).await;
    let mut mcp = Mcp::new(&cluster.front.url, "2025-11-25");
    mcp.initialize().await;
    let owner = cluster.initialized_on()[0];
    let upstream = &cluster.upstreams[owner];
    let mut events = call_stream(&mcp, 5).await;
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
    mcp.initialize().await;
    let owner = cluster.initialized_on()[0];
    let mut events = call_stream(&mcp, 5).await;
    cluster.upstreams[owner].release(1);
    let (first_id, first) = events.next_message().await.unwrap();
    assert_eq!(progress(&first), 1);
    let call_id = {
        // The request id is the one before the client's next.
        let next = mcp.request_body("ping", json!({}));
        next["id"].as_u64().unwrap() - 1
    };

    cluster.kill(owner).await;
    drop(events);

    // Resuming on a live replica: the lost call is answered with an error.
    let resumed = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        Events::new(mcp.get(first_id.as_deref()).await).rest().await
    })
    .await
    .unwrap_or_else(|_| {
        let logs: Vec<String> = cluster
            .replicas
            .iter()
            .flatten()
            .map(|r| r.proc.output())
            .collect();
        panic!("resume did not end:\n{}", logs.join("\n-----\n"))
    });
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    let error = &resumed[0].1;
    assert_eq!(error["id"], call_id);
    assert_eq!(error["error"]["code"], -32603);
    assert!(error["error"]["message"].as_str().unwrap().contains("lost"));

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

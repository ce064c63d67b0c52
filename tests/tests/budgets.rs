//! Memory has a byte budget: large results, oversized events, floods of
//! sessions and padded `initialize` requests all get a clear answer and
//! leave Shadowcat within its bounds.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use serde_json::json;
use shadowcat_tests::client::{Mcp, answer, json_body, metric};
use shadowcat_tests::procs::{RedisServer, Shadowcat, redis_cli};
use shadowcat_tests::upstream::Scripted;

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn large_results_keep_the_memory_store_within_its_byte_budget() {
    let upstream = Scripted::start().await;
    let budget = 4 * MIB;
    let proxy = Shadowcat::start(
        &upstream.url,
        &[
            "--store-max-bytes",
            &budget.to_string(),
            "--sse-max-log-bytes",
            &MIB.to_string(),
            "--sse-max-event-bytes",
            &MIB.to_string(),
        ],
    )
    .await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    for n in 0..24 {
        let reply = mcp
            .request(
                "tools/call",
                json!({"name": "big", "arguments": {"bytes": 600_000}}),
            )
            .await;
        let text = reply["result"]["content"][0]["text"].as_str().unwrap();
        assert_eq!(text.len(), 600_000, "call {n} got its whole result");
    }
    // 14 MB went through; the gauge (refreshed every couple of seconds)
    // shows what is held. The budget itself is enforced on every append.
    let held = shadowcat_tests::eventually("the store gauge", std::time::Duration::from_secs(10), || {
        let (http, admin) = (mcp.http.clone(), proxy.admin.clone());
        async move {
            let held = metric(&http, &admin, "shadowcat_store_event_bytes").await;
            (held > MIB).then_some(held)
        }
    })
    .await;
    assert!(held <= budget, "{held} bytes held, budget {budget}");

    // One event over the limit: the call gets a JSON-RPC error saying so,
    // and Shadowcat goes on.
    let reply = mcp
        .request(
            "tools/call",
            json!({"name": "big", "arguments": {"bytes": 2 * MIB}}),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32603, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the limit")
    );
    assert_eq!(
        metric(&mcp.http, &proxy.admin, "shadowcat_sse_events_too_large_total").await,
        1
    );
    let echo = mcp
        .request("tools/call", json!({"name": "echo", "arguments": {}}))
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "ok");
}

async fn try_initialize(url: &str) -> http::Response<hyper::body::Incoming> {
    let mcp = Mcp::new(url, "2025-06-18");
    let body = mcp.request_body(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "flood", "version": "0"}}),
    );
    mcp.post(&body).await
}

#[tokio::test]
async fn sessions_beyond_the_cap_get_503_and_never_reach_the_upstream() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(&upstream.url, &["--max-sessions", "5"]).await;
    for _ in 0..5 {
        assert_eq!(try_initialize(&proxy.url).await.status(), 200);
    }
    let refused = try_initialize(&proxy.url).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    let body = json_body(refused).await;
    assert_eq!(body["error"]["code"], -32603);
    assert_eq!(body["id"], 1, "the error answers the request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum of 5 sessions")
    );
    let inits = upstream
        .rpc_methods()
        .iter()
        .filter(|m| *m == "initialize")
        .count();
    assert_eq!(inits, 5, "the refused initialize never reached the upstream");
    assert_eq!(
        metric(
            &shadowcat_tests::client::http(),
            &proxy.admin,
            "shadowcat_sessions_refused_total"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_flood_of_initializes_is_held_to_the_session_rate() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(&upstream.url, &["--session-rate", "3"]).await;
    let mut admitted = 0;
    let mut refused = Vec::new();
    for _ in 0..12 {
        let response = try_initialize(&proxy.url).await;
        match response.status().as_u16() {
            200 => admitted += 1,
            503 => refused.push(json_body(response).await),
            other => panic!("unexpected {other}"),
        }
    }
    // A burst of one second's worth, plus what refills while the loop runs.
    assert!((3..=6).contains(&admitted), "admitted {admitted}");
    assert!(
        refused[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 new sessions per second"),
        "{}",
        refused[0]
    );
}

#[tokio::test]
async fn a_padded_initialize_is_not_kept_whole() {
    let upstream = Scripted::start().await;
    let redis = RedisServer::start().await;
    let proxy = Shadowcat::start(&upstream.url, &["--store", &redis.url]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    let body = mcp.request_body(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}},
               "clientInfo": {"name": "padded", "version": "1", "icons": [{"src": "x".repeat(1 << 20)}]},
               "padding": "y".repeat(2 << 20)}),
    );
    let response = mcp.post(&body).await;
    assert_eq!(response.status(), 200);
    mcp.session = Some(response.headers()["mcp-session-id"].to_str().unwrap().to_owned());
    answer(response).await;
    let key = format!("shadowcat:{{{}}}:session", mcp.session.as_ref().unwrap());
    let kept: usize = redis_cli(redis.port, &["HSTRLEN", &key, "initialize"])
        .parse()
        .unwrap();
    assert!(
        (1..1024).contains(&kept),
        "the record keeps what re-initializing needs, not 3 MiB ({kept} bytes)"
    );
}

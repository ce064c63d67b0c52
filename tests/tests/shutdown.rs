//! SIGTERM: in-flight answers finish, streams that would outlast the drain
//! are told to come back (`retry:`), and the process exits within the drain
//! timeout.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::time::Duration;

use serde_json::json;
use shadowcat_tests::client::{Events, Mcp};
use shadowcat_tests::procs::Shadowcat;
use shadowcat_tests::upstream::Scripted;
use shadowcat_tests::within;

async fn streaming_call(drain: &str) -> (Scripted, Shadowcat, Events) {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(
        &upstream.url,
        &["--drain-timeout", drain, "--sse-retry", "2500ms"],
    )
    .await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let body = mcp.request_body("tools/call", json!({"name": "stream", "arguments": {"count": 3}}));
    let mut events = Events::new(mcp.post(&body).await);
    upstream.release(1);
    events.next_message().await.unwrap();
    (upstream, proxy, events)
}

async fn exits_cleanly(proxy: &mut Shadowcat) {
    let status = within(
        "shadowcat to exit",
        Duration::from_secs(30),
        proxy.proc.child.wait(),
    )
    .await
    .unwrap();
    assert!(status.success(), "{status}\n{}", proxy.proc.output());
    // Its output may still be in the pipe: wait for the last line.
    proxy
        .proc
        .wait_line("the stopped log line", |l| {
            l.contains("\"stopped\"").then_some(())
        })
        .await;
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_answer_finish() {
    let (upstream, mut proxy, mut events) = streaming_call("20s").await;
    proxy.proc.terminate();
    proxy
        .proc
        .wait_line("shutdown to begin", |l| l.contains("shutting down").then_some(()))
        .await;
    // The answer comes after SIGTERM, and still reaches the client.
    upstream.release(3);
    let rest = events.rest().await;
    assert_eq!(rest.len(), 3, "{rest:?}");
    assert_eq!(rest[2].1["result"]["content"][0]["text"], "done after 3");
    exits_cleanly(&mut proxy).await;
    assert!(!proxy.proc.output().contains("streams still pumping"));
}

#[tokio::test]
async fn sigterm_closes_a_stream_that_outlasts_the_drain_with_retry() {
    let (_upstream, mut proxy, mut events) = streaming_call("2s").await;
    proxy.proc.terminate();
    // Nothing more comes from the upstream: before the drain ends, the
    // client is told when to come back, then the connection closes.
    assert!(events.next_message().await.is_none());
    assert!(events.raw.contains("retry: 2500"), "{}", events.raw);
    exits_cleanly(&mut proxy).await;
}

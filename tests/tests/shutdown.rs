//! SIGTERM: streams are told to come back (`retry:`), in-flight pumps finish,
//! and the process exits within the drain timeout.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::time::Duration;

use serde_json::json;
use shadowcat_tests::client::{Events, Mcp};
use shadowcat_tests::procs::Shadowcat;
use shadowcat_tests::upstream::Scripted;
use shadowcat_tests::within;

#[tokio::test]
async fn sigterm_closes_streams_with_retry_and_drains_pumps() {
    let upstream = Scripted::start().await;
    let mut proxy = Shadowcat::start(
        &upstream.url,
        &["--drain-timeout", "20s", "--sse-retry", "2500ms"],
    )
    .await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let body = mcp.request_body("tools/call", json!({"name": "stream", "arguments": {"count": 3}}));
    let mut events = Events::new(mcp.post(&body).await);
    upstream.release(1);
    events.next_message().await.unwrap();

    proxy.proc.terminate();
    // The client is told when to come back, then the connection closes.
    assert!(events.next_message().await.is_none());
    assert!(events.raw.contains("retry: 2500"), "{}", events.raw);

    // The pump still runs: the upstream's remaining events are read.
    upstream.release(3);
    upstream.wait_sent(4).await;
    let status = within(
        "shadowcat to exit",
        Duration::from_secs(20),
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
    let output = proxy.proc.output();
    assert!(!output.contains("streams still pumping"), "{output}");
}

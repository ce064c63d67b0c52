//! Streams over hours, in small: a standalone stream quiet for longer than
//! the retention and the session's idle timeout, a tool call silent for
//! longer than the retention, priming ids that say where a reader starts,
//! a standalone stream that recovers from a failed open, 405 without an
//! upstream GET stream, and a newer GET taking over from an older one.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::time::Duration;

use serde_json::json;
use shadowcat_tests::client::{Events, Mcp, progress};
use shadowcat_tests::procs::{RedisServer, Shadowcat};
use shadowcat_tests::upstream::{Options, Scripted};

async fn standalone_upstream() -> Scripted {
    Scripted::start_with(Options {
        standalone: true,
        ..Default::default()
    })
    .await
}

async fn notify(mcp: &Mcp, text: &str) {
    let answer = mcp
        .request(
            "tools/call",
            json!({"name": "notify", "arguments": {"text": text}}),
        )
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "notified 1", "{answer}");
}

fn said(message: &serde_json::Value) -> &str {
    message["params"]["data"].as_str().unwrap()
}

async fn quiet_standalone_stream(redis: Option<&RedisServer>) {
    let upstream = standalone_upstream().await;
    let mut args = vec![
        "--sse-retention",
        "1s",
        "--session-idle-timeout",
        "2s",
        "--sse-keep-alive-interval",
        "300ms",
    ];
    if let Some(redis) = redis {
        args.extend(["--store", redis.url.as_str()]);
    }
    let proxy = Shadowcat::start(&upstream.url, &args).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-11-25");
    mcp.initialize().await;
    // Shadowcat opens the upstream's GET stream itself.
    upstream.wait_standalone_streams(1).await;
    let mut get = Events::new(mcp.get(None).await);
    let priming = get.next().await.unwrap();
    assert!(priming.id.unwrap().ends_with(".0"));

    // The point of this test is time passing: quiet for three times the
    // retention and twice the session's idle timeout. The stream's log lives
    // as long as its session, and a connected reader keeps the session alive.
    tokio::time::sleep(Duration::from_secs(4)).await;
    notify(&mcp, "after a quiet while").await;
    let (id, message) = get.next_message().await.unwrap();
    assert_eq!(said(&message), "after a quiet while");
    drop(get);

    // Quiet again, then a message while no client is connected: it waits in
    // the log, and a resume from the last id gets it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    notify(&mcp, "while away").await;
    let mut resumed = Events::new(mcp.get(id.as_deref()).await);
    let (_, message) = resumed.next_message().await.unwrap();
    assert_eq!(said(&message), "while away");
}

#[tokio::test]
async fn a_quiet_standalone_stream_delivers_after_longer_than_the_retention() {
    quiet_standalone_stream(None).await;
}

#[tokio::test]
async fn a_quiet_standalone_stream_delivers_after_longer_than_the_retention_on_redis() {
    let redis = RedisServer::start().await;
    quiet_standalone_stream(Some(&redis)).await;
}

async fn silent_tool_call(redis: Option<&RedisServer>) {
    let upstream = Scripted::start().await;
    let mut args = vec!["--sse-retention", "1s", "--sse-response-retention", "1s"];
    if let Some(redis) = redis {
        args.extend(["--store", redis.url.as_str()]);
    }
    let proxy = Shadowcat::start(&upstream.url, &args).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    // One progress event and the result, each after 2.5 s of silence.
    let body = mcp.request_body(
        "tools/call",
        json!({"name": "stream", "arguments": {"count": 1, "delay_ms": 2500}}),
    );
    let mut events = Events::new(mcp.post(&body).await);
    let (first, message) = events.next_message().await.unwrap();
    assert_eq!(progress(&message), 1);
    drop(events);
    upstream.wait_sent(2).await;
    let rest = Events::new(mcp.get(first.as_deref()).await).rest().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0].1["result"]["content"][0]["text"], "done after 1");
}

#[tokio::test]
async fn a_tool_call_silent_for_longer_than_the_retention_still_answers() {
    silent_tool_call(None).await;
}

#[tokio::test]
async fn a_tool_call_silent_for_longer_than_the_retention_still_answers_on_redis() {
    let redis = RedisServer::start().await;
    silent_tool_call(Some(&redis)).await;
}

#[tokio::test]
async fn the_priming_id_names_where_the_reader_starts() {
    let upstream = standalone_upstream().await;
    let proxy = Shadowcat::start(&upstream.url, &[]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-11-25");
    mcp.initialize().await;
    // Shadowcat opens the upstream's GET stream itself.
    upstream.wait_standalone_streams(1).await;
    // Two messages before any client GET: they wait in the log.
    notify(&mcp, "one").await;
    notify(&mcp, "two").await;
    let mut get = Events::new(mcp.get(None).await);
    let priming = get.next().await.unwrap().id.unwrap();
    assert!(priming.ends_with(".0"), "{priming}");
    assert_eq!(said(&get.next_message().await.unwrap().1), "one");
    assert_eq!(said(&get.next_message().await.unwrap().1), "two");
    drop(get);

    // A new GET goes on after what was delivered, and its priming id says so.
    notify(&mcp, "three").await;
    let mut get = Events::new(mcp.get(None).await);
    let priming = get.next().await.unwrap().id.unwrap();
    assert!(priming.ends_with(".2"), "{priming}");
    assert_eq!(said(&get.next_message().await.unwrap().1), "three");
    drop(get);

    // Resuming from that priming id replays only what came after it, never
    // the messages (sampling requests, say) the client already handled.
    let mut resumed = Events::new(mcp.get(Some(&priming)).await);
    assert_eq!(said(&resumed.next_message().await.unwrap().1), "three");
}

#[tokio::test]
async fn a_standalone_stream_that_failed_to_open_opens_on_the_next_get() {
    let upstream = standalone_upstream().await;
    upstream.fail_gets(usize::MAX);
    let proxy = Shadowcat::start(&upstream.url, &[]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let failed = mcp.get(None).await;
    assert_eq!(failed.status(), 502, "a transient failure is not a 405");
    let body = shadowcat_tests::client::json_body(failed).await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("503"),
        "{body}"
    );

    upstream.fail_gets(0);
    let mut get = Events::new(mcp.get(None).await);
    notify(&mcp, "recovered").await;
    assert_eq!(said(&get.next_message().await.unwrap().1), "recovered");
}

/// Without a GET stream upstream a GET is 405; with one, a newer GET takes
/// over from an older one, which ends, so no message goes out twice.
#[tokio::test]
async fn a_get_is_405_without_an_upstream_stream_and_a_newer_get_takes_over() {
    let plain = Scripted::start().await;
    let proxy = Shadowcat::start(&plain.url, &[]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let refused = mcp.get(None).await;
    assert_eq!(refused.status(), 405);
    let body = shadowcat_tests::client::json_body(refused).await;
    assert!(body["error"]["message"].is_string(), "{body}");

    let upstream = standalone_upstream().await;
    let proxy = Shadowcat::start(&upstream.url, &[]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let mut older = Events::new(mcp.get(None).await);
    notify(&mcp, "one").await;
    assert_eq!(said(&older.next_message().await.unwrap().1), "one");
    let mut newer = Events::new(mcp.get(None).await);
    // The older stream ends: the newer one took over.
    let left = older.rest().await;
    notify(&mcp, "two").await;
    assert_eq!(said(&newer.next_message().await.unwrap().1), "two");
    assert!(left.is_empty(), "{left:?}");
}

//! Event streams through Shadowcat: delivered as produced, resumable with
//! `Last-Event-ID` while the upstream is still sending and after it finished.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use serde_json::json;
use shadowcat_tests::client::{Events, Mcp, metric, progress};
use shadowcat_tests::procs::{RedisServer, Shadowcat};
use shadowcat_tests::upstream::Scripted;

/// Where Shadowcat keeps its state in a test: its own memory, or a Redis of
/// the test's own (kept alive as long as the test holds it).
enum Backing {
    Memory,
    Redis,
}

async fn setup(version: &str) -> (Scripted, Shadowcat, Mcp) {
    let (upstream, proxy, mcp, _) = setup_with(version, Backing::Memory).await;
    (upstream, proxy, mcp)
}

async fn setup_with(version: &str, backing: Backing) -> (Scripted, Shadowcat, Mcp, Option<RedisServer>) {
    let upstream = Scripted::start().await;
    let redis = match backing {
        Backing::Memory => None,
        Backing::Redis => Some(RedisServer::start().await),
    };
    let args: Vec<&str> = redis
        .as_ref()
        .map(|r| vec!["--store", r.url.as_str()])
        .unwrap_or_default();
    let proxy = Shadowcat::start(&upstream.url, &args).await;
    let mut mcp = Mcp::new(&proxy.url, version);
    mcp.initialize().await;
    (upstream, proxy, mcp, redis)
}

#[tokio::test]
async fn sse_event_reaches_client_before_upstream_sends_the_next() {
    let (upstream, _proxy, mcp) = setup("2025-06-18").await;
    let mut events = mcp.call_stream(2).await;
    upstream.release(1);
    let (_, first) = events.next_message().await.unwrap();
    assert_eq!(progress(&first), 1);
    // Only now may the upstream send event 2: had Shadowcat buffered, the
    // first event could not have arrived.
    upstream.release(1);
    let (_, second) = events.next_message().await.unwrap();
    assert_eq!(progress(&second), 2);
    upstream.release(1);
    let (_, answer) = events.next_message().await.unwrap();
    assert_eq!(answer["result"]["content"][0]["text"], "done after 2");
    assert!(
        events.next_message().await.is_none(),
        "stream must end after the response"
    );
}

#[tokio::test]
async fn sse_resume_mid_stream_gets_exactly_the_missing_events() {
    resume_mid_stream(Backing::Memory).await;
}

#[tokio::test]
async fn sse_resume_mid_stream_through_redis_store() {
    resume_mid_stream(Backing::Redis).await;
}

async fn resume_mid_stream(backing: Backing) {
    let (upstream, _proxy, mcp, _redis) = setup_with("2025-11-25", backing).await;
    let mut events = mcp.call_stream(6).await;
    let priming = events.next().await.unwrap();
    assert_eq!(
        priming.data.as_deref(),
        Some(""),
        "2025-11-25 streams start with a priming event"
    );
    assert!(priming.id.as_deref().unwrap().ends_with(".0"));
    upstream.release(2);
    let mut last_id = None;
    for expected in 1..=2 {
        let (id, message) = events.next_message().await.unwrap();
        assert_eq!(progress(&message), expected);
        last_id = id;
    }
    drop(events);
    // The upstream goes on while no client is connected.
    upstream.release(2);
    upstream.wait_sent(4).await;

    let resumed = mcp.get(last_id.as_deref()).await;
    assert_eq!(resumed.status(), 200);
    let mut resumed = Events::new(resumed);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(progress(&resumed.next_message().await.unwrap().1));
    }
    // Then live: what the upstream sends now arrives on the resumed stream.
    upstream.release(3);
    let rest = resumed.rest().await;
    got.extend(
        rest.iter()
            .filter(|(_, m)| m.get("method").is_some())
            .map(|(_, m)| progress(m)),
    );
    assert_eq!(got, vec![3, 4, 5, 6], "missing events, in order, no duplicates");
    let answer = &rest.last().unwrap().1;
    assert_eq!(answer["result"]["content"][0]["text"], "done after 6");
    let ids: Vec<_> = rest.iter().map(|(id, _)| id.clone().unwrap()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique);
}

#[tokio::test]
async fn sse_resume_after_completion_replays_the_tail_and_ends() {
    resume_after_completion(Backing::Memory).await;
}

#[tokio::test]
async fn sse_resume_after_completion_through_redis_store() {
    resume_after_completion(Backing::Redis).await;
}

async fn resume_after_completion(backing: Backing) {
    let (upstream, proxy, mcp, _redis) = setup_with("2025-06-18", backing).await;
    let mut events = mcp.call_stream(4).await;
    upstream.release(1);
    let (first_id, first) = events.next_message().await.unwrap();
    assert_eq!(progress(&first), 1);
    drop(events);
    upstream.release(4);
    upstream.wait_sent(5).await;

    // The pump drained the stream into the log although the client left.
    let resumed = Events::new(mcp.get(first_id.as_deref()).await).rest().await;
    let progress_seen: Vec<_> = resumed
        .iter()
        .filter(|(_, m)| m.get("method").is_some())
        .map(|(_, m)| progress(m))
        .collect();
    assert_eq!(progress_seen, vec![2, 3, 4]);
    assert_eq!(
        resumed.last().unwrap().1["result"]["content"][0]["text"],
        "done after 4"
    );

    // Resuming again from the same id gives the same answer: the log is durable.
    let again = Events::new(mcp.get(first_id.as_deref()).await).rest().await;
    assert_eq!(again, resumed);

    assert_eq!(
        metric(&mcp.http, &proxy.admin, "shadowcat_sse_events_replayed_total").await,
        8
    );
}

#[tokio::test]
async fn sse_resume_that_cannot_be_exact_is_a_clear_counted_miss() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(
        &upstream.url,
        &[
            "--sse-max-events-per-stream",
            "3",
            "--sse-retention",
            "1s",
            "--sse-response-retention",
            "1s",
        ],
    )
    .await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let miss = |reason: &'static str| {
        let (http, admin) = (mcp.http.clone(), proxy.admin.clone());
        async move {
            metric(
                &http,
                &admin,
                &format!("shadowcat_sse_replay_misses_total{{reason=\"{reason}\"}}"),
            )
            .await
        }
    };
    let gone = |response: http::Response<hyper::body::Incoming>| async move {
        assert_eq!(response.status(), 410);
        let body = shadowcat_tests::client::json_body(response).await;
        assert_eq!(body["error"]["code"], -32000);
        body["error"]["message"].as_str().unwrap().to_owned()
    };

    // A stream this session never had.
    let message = gone(mcp.get(Some("0123abcd.7")).await).await;
    assert!(message.contains("unknown in this session"), "{message}");
    assert_eq!(miss("gone").await, 1);

    // A stream whose oldest events were dropped (3 kept of 6 and the result).
    let mut events = mcp.call_stream(6).await;
    upstream.release(1);
    let (first, _) = events.next_message().await.unwrap();
    drop(events);
    // The reader of the dropped connection must be gone before the stream
    // runs past what the log keeps: a reader still being polled would meet
    // the trimming itself and count a second miss.
    shadowcat_tests::eventually(
        "the dropped client's reader to close",
        std::time::Duration::from_secs(10),
        || {
            let (http, admin) = (mcp.http.clone(), proxy.admin.clone());
            async move { (metric(&http, &admin, "shadowcat_sse_streams_active").await == 0).then_some(()) }
        },
    )
    .await;
    upstream.release(6);
    upstream.wait_sent(7).await;
    // Every event in the log and the stream ended: from here, what the
    // resumption finds does not change under it.
    let pumped = "shadowcat_sse_events_pumped_total";
    shadowcat_tests::eventually(
        "all seven events in the log",
        std::time::Duration::from_secs(10),
        || {
            let (http, admin) = (mcp.http.clone(), proxy.admin.clone());
            async move { (metric(&http, &admin, pumped).await == 7).then_some(()) }
        },
    )
    .await;
    let first = first.unwrap();
    let stream_done = async {
        shadowcat_tests::eventually("the stream to end", std::time::Duration::from_secs(10), || {
            let first = first.clone();
            let mcp = &mcp;
            async move {
                let response = mcp.get(Some(&first)).await;
                (response.status() == 410).then_some(response)
            }
        })
        .await
    };
    let message = gone(stream_done.await).await;
    assert!(message.contains("no longer retained"), "{message}");
    assert_eq!(miss("trimmed").await, 1);

    // A finished stream, past its retention.
    let message = shadowcat_tests::eventually(
        "the finished stream to expire",
        std::time::Duration::from_secs(20),
        || {
            let first = first.clone();
            let mcp = &mcp;
            async move {
                let response = mcp.get(Some(&first)).await;
                if response.status() != 410 {
                    return None;
                }
                let body = shadowcat_tests::client::json_body(response).await;
                let text = body["error"]["message"].as_str().unwrap().to_owned();
                text.contains("retention").then_some(text)
            }
        },
    )
    .await;
    assert!(message.contains("cannot resume after"), "{message}");
    assert_eq!(miss("gone").await, 2);
}

#[tokio::test]
async fn upstream_never_sees_shadowcat_session_ids() {
    let (upstream, _proxy, mcp) = setup("2025-06-18").await;
    let answer = mcp
        .request("tools/call", json!({"name": "echo", "arguments": {}}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "ok");
    let ours = mcp.session.clone().unwrap();
    assert!(
        !ours.starts_with("up-"),
        "the client must see Shadowcat's id, not the upstream's"
    );
    let seen = upstream.seen.lock().unwrap().clone();
    let call = seen
        .iter()
        .find(|s| s.rpc_method.as_deref() == Some("tools/call"))
        .unwrap();
    assert_eq!(call.session.as_deref(), Some("up-0"));
    assert!(seen.iter().all(|s| s.session.as_deref() != Some(ours.as_str())));
}

#[tokio::test]
async fn idle_streams_get_keep_alives_and_long_connections_close_with_retry() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(
        &upstream.url,
        &[
            "--sse-keep-alive-interval",
            "100ms",
            "--sse-max-connection-time",
            "1s",
            "--sse-retry",
            "750ms",
        ],
    )
    .await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let mut events = mcp.call_stream(2).await;
    upstream.release(1);
    let (first_id, _) = events.next_message().await.unwrap();
    // Nothing more is released: the stream idles, so keep-alives go out...
    events.wait_raw(": keep-alive").await;
    // ...until the connection's time is up: `retry:`, then the end.
    assert!(events.next_message().await.is_none());
    assert!(events.raw.contains("retry: 750"), "{}", events.raw);
    // The stream itself goes on: resuming picks it up where it was.
    upstream.release(2);
    let rest = Events::new(mcp.get(first_id.as_deref()).await).rest().await;
    assert_eq!(progress(&rest[0].1), 2);
    assert_eq!(rest[1].1["result"]["content"][0]["text"], "done after 2");
}

#[tokio::test]
async fn stateless_streams_are_relayed_without_ids() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(&upstream.url, &[]).await;
    let mcp = Mcp::new(&proxy.url, "2026-07-28");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "stream", "arguments": {"count": 2}}});
    let response = shadowcat_tests::client::send(
        &mcp.http,
        http::Method::POST,
        &mcp.url,
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "stream"),
        ],
        bytes::Bytes::from(body.to_string()),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("mcp-session-id").is_none());
    assert_eq!(response.headers().get("x-accel-buffering").unwrap(), "no");
    let mut events = Events::new(response);
    upstream.release(1);
    let (id, first) = events.next_message().await.unwrap();
    assert_eq!(
        (id, progress(&first)),
        (None, 1),
        "no ids, no log: this revision has no resumption"
    );
    upstream.release(2);
    let rest = events.rest().await;
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|(id, _)| id.is_none()));
    assert_eq!(rest[1].1["result"]["content"][0]["text"], "done after 2");
}

#[tokio::test]
async fn upstream_that_forgot_the_session_is_reinitialized_transparently() {
    // 404 is the spec's answer; 400 is what server-everything sends.
    for status in [404, 400] {
        let (upstream, proxy, mcp) = setup("2025-06-18").await;
        let sub = mcp
            .request("resources/subscribe", json!({"uri": "test://watched"}))
            .await;
        assert!(sub.get("result").is_some());
        upstream.forget_sessions(status);
        let answer = mcp
            .request("tools/call", json!({"name": "echo", "arguments": {}}))
            .await;
        assert_eq!(answer["result"]["content"][0]["text"], "ok", "status {status}");
        let methods = upstream.rpc_methods();
        let tail: Vec<&str> = methods.iter().rev().take(5).rev().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "tools/call",
                "initialize",
                "notifications/initialized",
                "resources/subscribe",
                "tools/call"
            ],
            "the failed call, the re-initialize with the recorded subscription, the retried call"
        );
        let seen = upstream.seen.lock().unwrap().clone();
        assert_eq!(
            seen.last().unwrap().session.as_deref(),
            Some("up-1"),
            "the retry uses the new upstream session"
        );
        let reinits = metric(
            &mcp.http,
            &proxy.admin,
            "shadowcat_upstream_reinitializations_total",
        )
        .await;
        assert_eq!(reinits, 1);
    }
}

/// A stream whose client left is read on for `--sse-drain-limit`, no longer:
/// then the request gets a JSON-RPC error in the log, where a resuming client
/// finds it, rather than a stream that never ends.
#[tokio::test]
async fn a_stream_whose_client_left_is_drained_only_for_the_drain_limit() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(&upstream.url, &["--sse-drain-limit", "1s"]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let mut events = mcp.call_stream(3).await;
    upstream.release(1);
    let (first, message) = events.next_message().await.unwrap();
    assert_eq!(progress(&message), 1);
    drop(events);
    // The upstream never sends another event. With the default limit (five
    // minutes) this read would outlast the client's patience and fail.
    let rest = Events::new(mcp.get(first.as_deref()).await).rest().await;
    let messages: Vec<_> = rest.iter().map(|(_, m)| m).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let error = &messages[0]["error"];
    assert!(
        error["message"].as_str().unwrap().contains("stopped waiting"),
        "{error}"
    );
    assert_eq!(upstream.sent(), 1, "nothing was released after the first event");
}

//! SIGTERM: in-flight answers finish, streams that would outlast the drain
//! are told to come back (`retry:`), and the process exits within the drain
//! timeout; a server started as a child (`-- CMD`) is stopped after it.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::time::Duration;

use serde_json::json;
use shadowcat_tests::client::{Events, Mcp};
use shadowcat_tests::procs::{self, Shadowcat};
use shadowcat_tests::upstream::{Options, Scripted};
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

/// Waits for a clean exit, within `limit` of now (the shutdown delay and
/// the drain timeout, plus a margin for a slow machine).
async fn exits_cleanly(proxy: &mut Shadowcat, limit: Duration) {
    let status = within(
        "shadowcat to exit",
        limit + Duration::from_secs(5),
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
    exits_cleanly(&mut proxy, Duration::from_secs(20)).await;
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
    exits_cleanly(&mut proxy, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn sigterm_closes_standalone_streams_with_retry_at_once() {
    let upstream = Scripted::start_with(Options {
        standalone: true,
        ..Default::default()
    })
    .await;
    let mut proxy = Shadowcat::start(
        &upstream.url,
        &["--drain-timeout", "20s", "--sse-retry", "2500ms"],
    )
    .await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let mut events = Events::new(mcp.get(None).await);
    upstream.wait_standalone_streams(1).await;
    proxy.proc.terminate();
    // A standalone stream never ends by itself: it is closed as the drain
    // begins, long before the drain timeout, and told when to come back.
    within(
        "the standalone stream to close",
        Duration::from_secs(10),
        events.rest(),
    )
    .await;
    assert!(events.raw.contains("retry: 2500"), "{}", events.raw);
    exits_cleanly(&mut proxy, Duration::from_secs(20)).await;
}

async fn admin_status(proxy: &Shadowcat, method: http::Method, path: &str) -> u16 {
    let http = shadowcat_tests::client::http();
    shadowcat_tests::client::send(
        &http,
        method,
        &format!("{}{path}", proxy.admin),
        &[],
        bytes::Bytes::new(),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn sigterm_with_a_shutdown_delay_serves_on_while_not_ready() {
    let upstream = Scripted::start().await;
    let mut proxy = Shadowcat::start(&upstream.url, &["--shutdown-delay", "3s"]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    proxy.proc.terminate();
    shadowcat_tests::eventually("readiness to fail", Duration::from_secs(2), || async {
        (admin_status(&proxy, http::Method::GET, "/readyz").await == 503).then_some(())
    })
    .await;
    // Endpoints take a moment to drop the pod: what still arrives is served.
    let answer = mcp
        .request("tools/call", json!({"name": "echo", "arguments": {}}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "ok");
    let mut late = Mcp::new(&proxy.url, "2025-06-18");
    late.initialize().await;
    exits_cleanly(&mut proxy, Duration::from_secs(3 + 25)).await;
}

#[tokio::test]
async fn post_drain_answers_once_in_flight_answers_are_in_the_log() {
    let (upstream, mut proxy, mut events) = streaming_call("20s").await;
    let drain = {
        let admin = proxy.admin.clone();
        tokio::spawn(async move {
            let http = shadowcat_tests::client::http();
            let response = shadowcat_tests::client::send(
                &http,
                http::Method::POST,
                &format!("{admin}/drain"),
                &[],
                bytes::Bytes::new(),
            )
            .await;
            response.status().as_u16()
        })
    };
    shadowcat_tests::eventually("the drain to begin", Duration::from_secs(10), || async {
        (admin_status(&proxy, http::Method::GET, "/readyz").await == 503).then_some(())
    })
    .await;
    assert!(!drain.is_finished(), "an answer is still on its way");
    upstream.release(3);
    let rest = events.rest().await;
    assert_eq!(
        rest.last().unwrap().1["result"]["content"][0]["text"],
        "done after 3"
    );
    assert_eq!(
        within("drain", Duration::from_secs(20), drain).await.unwrap(),
        200
    );
    // Drained: no new connections, still alive for probes until SIGTERM.
    assert!(
        tokio::net::TcpStream::connect(proxy.url.trim_start_matches("http://").trim_end_matches("/mcp"))
            .await
            .is_err()
    );
    assert_eq!(admin_status(&proxy, http::Method::GET, "/healthz").await, 200);
    proxy.proc.terminate();
    exits_cleanly(&mut proxy, Duration::ZERO).await;
}

/// Shadowcat's exit code, once it exits.
async fn exit_code(proxy: &mut Shadowcat) -> Option<i32> {
    let wait = proxy.proc.child.wait();
    within("shadowcat to exit", Duration::from_secs(40), wait)
        .await
        .unwrap()
        .code()
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: the command may hold spaces, so split after it.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent == Some(pid) {
            children.push(child);
        }
    }
    children
}

/// `shadowcat … -- CMD` starts the server, proxies to it once it answers,
/// stops it after its own drain on SIGTERM, and ends when it ends.
#[tokio::test]
async fn child_mode_runs_the_server_and_ends_with_it() {
    let start = || async {
        let port = shadowcat_tests::free_port();
        let server = procs::shadowcat_bin().with_file_name("scripted-upstream");
        let upstream = format!("http://127.0.0.1:{port}/mcp");
        let port = port.to_string();
        let proxy = Shadowcat::start(
            &upstream,
            &["--", server.to_str().unwrap(), "--port", &port, "--tag", "child"],
        )
        .await;
        let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
        mcp.initialize().await;
        let answer = mcp.request("tools/call", json!({"name": "echo"})).await;
        assert_eq!(answer["result"]["content"][0]["text"], "ok", "{answer}");
        let pid = proxy.proc.child.id().unwrap();
        let children = children_of(pid);
        assert_eq!(children.len(), 1, "one server process: {children:?}");
        (proxy, children[0])
    };
    let gone = |pid: u32| async move {
        shadowcat_tests::eventually("the server to be gone", Duration::from_secs(20), || async move {
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        })
        .await;
    };

    // SIGTERM: Shadowcat drains, then stops the server, then exits.
    let (mut proxy, server) = start().await;
    proxy.proc.terminate();
    let status = exit_code(&mut proxy).await;
    gone(server).await;
    // The server died of the SIGTERM it was sent, so it has no exit code.
    assert_eq!(status, Some(1), "{}", proxy.proc.output());

    // The server dies by itself: Shadowcat ends too, saying so.
    let (mut proxy, server) = start().await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &server.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = exit_code(&mut proxy).await;
    assert_eq!(status, Some(1));
    proxy
        .proc
        .wait_line("the exit logged", |l| {
            l.contains("upstream command exited").then_some(())
        })
        .await;
}

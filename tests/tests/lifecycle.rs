//! A pod's shutdown as the kubelet runs it once the webhook has injected
//! the sidecar, with real processes: the MCP server container's `preStop`
//! hook (`GET /drain` on the sidecar's admin port, with the header the
//! injected hook sends) runs to completion, then the server gets SIGTERM,
//! then, once it has exited, the native sidecar gets SIGTERM. A slow
//! streamed tool call in flight completes. Without the hook (the same order
//! less the first step) the same call is cut: the hook is what saves it.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::time::Duration;

use serde_json::json;
use shadowcat_tests::client::{self, Events, Mcp};
use shadowcat_tests::procs::{Shadowcat, UpstreamProc};
use shadowcat_tests::{free_port, within};

/// The MCP server as its own process, Shadowcat in front with the drain
/// settings the operator renders (a short shutdown delay here), and a
/// call streaming `count` events 300 ms apart, its first event read.
async fn pod_with_a_call_in_flight(count: u64) -> (UpstreamProc, Shadowcat, Events, tempfile_dir::Dir) {
    let dir = tempfile_dir::Dir::new();
    let server = UpstreamProc::start(free_port(), &dir.path().join("upstream.log"), "pod").await;
    let sidecar = Shadowcat::start(&server.url, &["--shutdown-delay", "1s", "--drain-timeout", "20s"]).await;
    let mut mcp = Mcp::new(&sidecar.url, "2025-06-18");
    mcp.initialize().await;
    let body = mcp.request_body(
        "tools/call",
        json!({"name": "stream", "arguments": {"count": count, "delay_ms": 300}}),
    );
    let mut events = Events::new(mcp.post(&body).await);
    events.next_message().await.unwrap();
    (server, sidecar, events, dir)
}

/// The kubelet's `preStop` HTTP hook: a GET, with the injected header.
async fn pre_stop(sidecar: &Shadowcat, header: bool) -> u16 {
    let headers: &[(&str, &str)] = if header {
        &[("X-Shadowcat-Drain", "preStop")]
    } else {
        &[]
    };
    client::send(
        &client::http(),
        http::Method::GET,
        &format!("{}/drain", sidecar.admin),
        headers,
        bytes::Bytes::new(),
    )
    .await
    .status()
    .as_u16()
}

/// SIGTERM to the server, which exits at once.
async fn stop(server: &mut UpstreamProc) {
    server.proc.terminate();
    within(
        "the server to exit",
        Duration::from_secs(10),
        server.proc.child.wait(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn prestop_then_sigterm_to_the_server_then_to_the_sidecar_completes_the_call() {
    let (mut server, mut sidecar, mut events, _dir) = pod_with_a_call_in_flight(10).await;
    // 1. preStop: the kubelet waits for the hook's answer; the sidecar gives
    //    it once the answer in flight is in its log, the server still up.
    let hook = within(
        "the preStop hook",
        Duration::from_secs(30),
        pre_stop(&sidecar, true),
    )
    .await;
    assert_eq!(hook, 200, "{}", sidecar.proc.output());
    // 2. SIGTERM to the server.
    stop(&mut server).await;
    // 3. SIGTERM to the sidecar, after the server has exited.
    sidecar.proc.terminate();
    let status = within(
        "the sidecar to exit",
        Duration::from_secs(15),
        sidecar.proc.child.wait(),
    )
    .await
    .unwrap();
    assert!(status.success(), "{status}\n{}", sidecar.proc.output());
    let rest = within("the rest of the stream", Duration::from_secs(10), events.rest()).await;
    assert_eq!(rest.len(), 10, "9 progress events and the result: {rest:?}");
    assert_eq!(rest[9].1["result"]["content"][0]["text"], "done after 10");
}

#[tokio::test]
async fn without_the_prestop_hook_the_same_call_is_cut() {
    let (mut server, sidecar, mut events, _dir) = pod_with_a_call_in_flight(10).await;
    stop(&mut server).await;
    sidecar.proc.terminate();
    let rest = within("the stream to end", Duration::from_secs(40), events.rest()).await;
    assert!(
        !rest
            .iter()
            .any(|(_, m)| m["result"]["content"][0]["text"] == "done after 10"),
        "the result cannot come from a server that is gone: {rest:?}"
    );
}

/// A GET without the header drains nothing: a crawler or a curious
/// browser on the admin port never takes a pod out of service.
#[tokio::test]
async fn a_get_without_the_header_does_not_drain() {
    let (_server, sidecar, mut events, _dir) = pod_with_a_call_in_flight(3).await;
    assert_eq!(pre_stop(&sidecar, false).await, 405);
    let rest = events.rest().await;
    assert_eq!(
        rest.last().unwrap().1["result"]["content"][0]["text"],
        "done after 3"
    );
    let ready = client::send(
        &client::http(),
        http::Method::GET,
        &format!("{}/readyz", sidecar.admin),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(ready.status(), 200, "still in service");
}

/// A temporary directory, removed when dropped.
mod tempfile_dir {
    pub struct Dir(std::path::PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!(
                "shadowcat-lifecycle-{}-{}",
                std::process::id(),
                rand_suffix()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}

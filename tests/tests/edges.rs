//! The edges of the listener and of what Shadowcat passes on: Host and
//! Origin checks, slow and surplus connections, secrets kept out of logs,
//! upstream sessions ended when Shadowcat gives them up, and how flags, the
//! environment and the config file layer.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::json;
use shadowcat_tests::client::{Mcp, json_body, metric, send, try_send};
use shadowcat_tests::procs::{RedisServer, Shadowcat, fixture};
use shadowcat_tests::upstream::Scripted;
use shadowcat_tests::{eventually, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;

async fn post_init(url: &str, extra: &[(&str, &str)]) -> http::Response<hyper::body::Incoming> {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    headers.extend_from_slice(extra);
    send(
        &shadowcat_tests::client::http(),
        Method::POST,
        url,
        &headers,
        Bytes::from(INIT),
    )
    .await
}

#[tokio::test]
async fn a_loopback_listener_keeps_the_servers_dns_rebinding_protection() {
    // The TypeScript SDK server refuses a foreign Host when reached directly...
    let server = fixture().await;
    let direct = post_init(&server.url, &[("host", "evil.example")]).await;
    assert_eq!(direct.status(), 403);
    // ...and behind Shadowcat it stays refused.
    let proxy = Shadowcat::start(&server.url, &[]).await;
    for (header, value) in [("host", "evil.example:8080"), ("origin", "http://evil.example")] {
        let refused = post_init(&proxy.url, &[(header, value)]).await;
        assert_eq!(refused.status(), 403, "{header}: {value}");
        let body = json_body(refused).await;
        assert_eq!(body["error"]["code"], -32600);
        assert!(body["error"]["message"].as_str().unwrap().contains("not allowed"));
    }
    let fine = post_init(&proxy.url, &[("origin", "http://localhost:6274")]).await;
    assert_eq!(fine.status(), 200);
}

#[tokio::test]
async fn allowed_hosts_replace_the_loopback_default() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(&upstream.url, &["--allowed-hosts", "mcp.example"]).await;
    assert_eq!(
        post_init(&proxy.url, &[("host", "mcp.example:443")])
            .await
            .status(),
        200
    );
    assert_eq!(
        post_init(&proxy.url, &[("host", "localhost")]).await.status(),
        403
    );
}

/// Reads until the server closes the connection; `true` if it did.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn public_addr(proxy: &Shadowcat) -> String {
    proxy
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(&upstream.url, &["--header-read-timeout", "500ms"]).await;
    let mut slow = tokio::net::TcpStream::connect(public_addr(&proxy)).await.unwrap();
    slow.write_all(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: app")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut slow).await,
        "half-sent headers must not hold a connection"
    );
    assert_eq!(
        post_init(&proxy.url, &[]).await.status(),
        200,
        "others are served"
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(&upstream.url, &["--header-read-timeout", "500ms"]).await;
    let mut slow = tokio::net::TcpStream::connect(public_addr(&proxy)).await.unwrap();
    slow.write_all(
        b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server answers and closes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received within"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_counted() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(&upstream.url, &["--max-connections", "2"]).await;
    let addr = public_addr(&proxy);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let http = shadowcat_tests::client::http();
    eventually("both connections to count", Duration::from_secs(10), || {
        let (http, admin) = (http.clone(), proxy.admin.clone());
        async move {
            let open = metric(&http, &admin, "shadowcat_connections_active{listener=\"public\"}").await;
            (open == 2).then_some(())
        }
    })
    .await;
    let mut surplus = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(closed_by_server(&mut surplus).await);
    assert_eq!(
        metric(
            &http,
            &proxy.admin,
            "shadowcat_connections_refused_total{listener=\"public\"}"
        )
        .await,
        1
    );
    drop(held.pop());
    eventually("a slot to free up", Duration::from_secs(10), || async {
        // Until the server sees the close, a new connection is still refused.
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        let http = shadowcat_tests::client::http();
        let sent = try_send(&http, Method::POST, &proxy.url, &headers, Bytes::from(INIT)).await;
        sent.ok().filter(|r| r.status() == 200).map(drop)
    })
    .await;
}

#[tokio::test]
async fn secrets_stay_out_of_the_logs() {
    let port = free_port();
    let redis = RedisServer::start_with(port, None, &["--requirepass", "s3cret-redis-pass"]).await;
    let upstream = Scripted::start().await;
    let store = format!("redis://:s3cret-redis-pass@127.0.0.1:{}", redis.port);
    let proxy = Shadowcat::start(&upstream.url, &["--store", &store]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let body = mcp.request_body("tools/call", json!({"name": "echo", "arguments": {}}));
    let session = mcp.session.clone().unwrap();
    let response = send(
        &mcp.http,
        Method::POST,
        &mcp.url,
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2025-06-18"),
            ("mcp-session-id", &session),
            ("authorization", "Bearer tok-do-not-log-1234"),
        ],
        Bytes::from(body.to_string()),
    )
    .await;
    assert_eq!(response.status(), 200);
    // A failure that logs its request, token and all: a malformed
    // Last-Event-ID.
    let response = send(
        &mcp.http,
        Method::GET,
        &mcp.url,
        &[
            ("accept", "text/event-stream"),
            ("mcp-protocol-version", "2025-06-18"),
            ("mcp-session-id", &session),
            ("last-event-id", "not-an-id"),
            ("authorization", "Bearer tok-do-not-log-1234"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(response.status(), 400);
    proxy
        .proc
        .wait_line("the refusal logged", |line| {
            line.contains("bad_last_event_id").then_some(())
        })
        .await;
    let output = proxy.proc.output();
    assert!(
        output.contains("redis://:***@127.0.0.1"),
        "the store is logged, redacted"
    );
    assert!(!output.contains("s3cret-redis-pass"), "{output}");
    assert!(!output.contains("tok-do-not-log-1234"), "{output}");
}

#[tokio::test]
async fn an_expired_session_is_ended_upstream_too() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(&upstream.url, &["--session-idle-timeout", "1s"]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    // Idle for longer than the idle timeout (any request would restart it).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let body = mcp.request_body("tools/call", json!({"name": "echo", "arguments": {}}));
    assert_eq!(mcp.post(&body).await.status(), 404);
    eventually(
        "the upstream session to be deleted",
        Duration::from_secs(10),
        || async {
            upstream
                .seen
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.method == "DELETE" && s.session.as_deref() == Some("up-0"))
                .then_some(())
        },
    )
    .await;
}

/// Where a shadowcat started with `args` and `env` listens (its "listening"
/// line), with `file` as its config file.
async fn listens_at(file: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("shadowcat-layers-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, file).unwrap();
    let mut cmd = tokio::process::Command::new(shadowcat_tests::procs::shadowcat_bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(args);
    cmd.envs(env.iter().copied()).env("SHADOWCAT_LOG", "info");
    let proc = shadowcat_tests::procs::Proc::spawn(cmd);
    let public = proc
        .wait_line("shadowcat to listen", |line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            (v["message"] == "listening").then(|| v["public"].as_str().map(str::to_owned))?
        })
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    public
}

/// Settings layer as the README says: a flag over its environment variable
/// over the config file over the default.
#[tokio::test]
async fn a_flag_beats_the_environment_which_beats_the_file() {
    let [file, env, flag] = [free_port(), free_port(), free_port()].map(|p| format!("127.0.0.1:{p}"));
    let yaml = format!("upstream: http://127.0.0.1:1/mcp\nlisten: {file}\nlogFormat: json\n");
    assert_eq!(listens_at(&yaml, &[], &[]).await, file);
    let from_env = [("SHADOWCAT_LISTEN", env.as_str())];
    assert_eq!(listens_at(&yaml, &from_env, &[]).await, env);
    assert_eq!(listens_at(&yaml, &from_env, &["--listen", &flag]).await, flag);
}

//! Bad input gets a clear answer — status and JSON-RPC error — and the proxy
//! keeps serving: one row per case, then a normal request still succeeds.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use shadowcat_tests::client::{Mcp, json_body, send};
use shadowcat_tests::free_port;
use shadowcat_tests::procs::Shadowcat;
use shadowcat_tests::upstream::Scripted;

const JSON: (&str, &str) = ("content-type", "application/json");
const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");
const LIST: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;

async fn expect(
    mcp: &Mcp,
    method: Method,
    headers: &[(&str, &str)],
    body: &str,
    status: u16,
    code: i64,
) -> Value {
    let response = send(
        &mcp.http,
        method.clone(),
        &mcp.url,
        headers,
        Bytes::from(body.to_owned()),
    )
    .await;
    assert_eq!(response.status(), status, "{method} {headers:?} {body}");
    let answer = json_body(response).await;
    assert_eq!(answer["error"]["code"], code, "{answer}");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    answer
}

#[tokio::test]
async fn bad_input_matrix_then_a_normal_request_succeeds() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(
        &upstream.url,
        &[
            "--max-body-bytes",
            "1024",
            "--allowed-origins",
            "https://ok.example",
        ],
    )
    .await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let session = mcp.session.clone().unwrap();
    let sid = ("mcp-session-id", session.as_str());
    let calls_before = upstream.rpc_methods().len();

    let parse = expect(&mcp, Method::POST, &[JSON, ACCEPT, sid], "{not json", 400, -32700).await;
    assert_eq!(parse["id"], Value::Null);
    expect(
        &mcp,
        Method::POST,
        &[JSON, ACCEPT, sid],
        r#"{"hello":"world"}"#,
        400,
        -32600,
    )
    .await;
    expect(&mcp, Method::POST, &[JSON, ACCEPT, sid], "[]", 400, -32600).await;
    expect(
        &mcp,
        Method::POST,
        &[("content-type", "text/plain"), ACCEPT, sid],
        LIST,
        415,
        -32600,
    )
    .await;
    expect(
        &mcp,
        Method::POST,
        &[JSON, ("accept", "application/json"), sid],
        LIST,
        406,
        -32600,
    )
    .await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"pad":"{}"}}}}"#,
        "a".repeat(2000)
    );
    expect(&mcp, Method::POST, &[JSON, ACCEPT, sid], &big, 413, -32600).await;
    expect(
        &mcp,
        Method::POST,
        &[JSON, ACCEPT, sid, ("mcp-protocol-version", "1999-01-01")],
        LIST,
        400,
        -32600,
    )
    .await;
    expect(
        &mcp,
        Method::POST,
        &[JSON, ACCEPT, sid, ("origin", "https://evil.example")],
        LIST,
        403,
        -32600,
    )
    .await;
    let missing = expect(&mcp, Method::POST, &[JSON, ACCEPT], LIST, 400, -32600).await;
    assert_eq!(missing["id"], 7, "errors carry the request's id");
    expect(
        &mcp,
        Method::POST,
        &[JSON, ACCEPT, ("mcp-session-id", "no-such-session")],
        LIST,
        404,
        -32600,
    )
    .await;
    expect(
        &mcp,
        Method::GET,
        &[
            ("accept", "text/event-stream"),
            sid,
            ("last-event-id", "not an id"),
        ],
        "",
        400,
        -32600,
    )
    .await;
    expect(
        &mcp,
        Method::GET,
        &[("accept", "application/json"), sid],
        "",
        406,
        -32600,
    )
    .await;
    expect(&mcp, Method::PUT, &[JSON, ACCEPT, sid], LIST, 405, -32600).await;
    let batch = format!("[{LIST}]");
    expect(
        &mcp,
        Method::POST,
        &[JSON, ACCEPT, sid, ("mcp-protocol-version", "2025-06-18")],
        &batch,
        400,
        -32600,
    )
    .await;

    assert_eq!(
        upstream.rpc_methods().len(),
        calls_before,
        "bad input must never reach the upstream"
    );
    let answer = mcp.request("tools/list", json!({})).await;
    assert!(answer.get("result").is_some(), "{answer}");
}

#[tokio::test]
async fn upstream_down_is_502_with_a_json_rpc_error() {
    let dead = format!("http://127.0.0.1:{}/mcp", free_port());
    let proxy = Shadowcat::start(&dead, &[]).await;
    let mcp = Mcp::new(&proxy.url, "2025-06-18");
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let answer = expect(&mcp, Method::POST, &[JSON, ACCEPT], init, 502, -32603).await;
    assert_eq!(answer["id"], 1);
    // Not ready while the upstream is down.
    let ready = send(
        &mcp.http,
        Method::GET,
        &format!("{}/readyz", proxy.admin),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(ready.status(), 503);
    let health = send(
        &mcp.http,
        Method::GET,
        &format!("{}/healthz", proxy.admin),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn upstream_timeout_is_504_and_others_are_still_served() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(&upstream.url, &["--upstream-timeout", "500ms"]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let session = mcp.session.clone().unwrap();
    let slow = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"slow"}}"#;
    let answer = expect(
        &mcp,
        Method::POST,
        &[JSON, ACCEPT, ("mcp-session-id", session.as_str())],
        slow,
        504,
        -32603,
    )
    .await;
    assert_eq!(answer["id"], 9);
    let ok = mcp.request("tools/call", json!({"name": "echo"})).await;
    assert_eq!(ok["result"]["content"][0]["text"], "ok");
}

#[tokio::test]
async fn stateless_requests_check_routing_headers_and_need_no_session() {
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(&upstream.url, &[]).await;
    let mcp = Mcp::new(&proxy.url, "2026-07-28");
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}"#;
    let v = ("mcp-protocol-version", "2026-07-28");
    expect(
        &mcp,
        Method::POST,
        &[
            JSON,
            ACCEPT,
            v,
            ("mcp-method", "tools/list"),
            ("mcp-name", "echo"),
        ],
        call,
        400,
        -32020,
    )
    .await;
    expect(
        &mcp,
        Method::POST,
        &[JSON, ACCEPT, v, ("mcp-method", "tools/call")],
        call,
        400,
        -32020,
    )
    .await;
    let ok = send(
        &mcp.http,
        Method::POST,
        &mcp.url,
        &[
            JSON,
            ACCEPT,
            v,
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ],
        Bytes::from(call),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(json_body(ok).await["result"]["content"][0]["text"], "ok");
    // (Readiness probes are GETs; count the POSTs.)
    let seen: Vec<_> = upstream
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "POST")
        .cloned()
        .collect();
    assert_eq!(seen.len(), 1, "only the valid request reaches the upstream");
    assert_eq!(seen[0].session, None);
}

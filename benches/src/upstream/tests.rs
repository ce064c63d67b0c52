//! The upstream served in-process, driven by the bench's own client.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::json;

use super::{Config, serve};
use crate::client::{Session, Version};
use crate::conn::Conn;
use crate::error::CallError;

async fn start(sse_notifications: u32) -> Uri {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("address"));
    let config = Config {
        sse_notifications,
        broadcast_every: None,
    };
    tokio::spawn(serve(listener, config));
    url.parse().expect("URL")
}

#[tokio::test]
async fn sessions_json_and_sse_calls_and_stateless_calls() {
    let url = start(2).await;
    let mut session = Session::open(Conn::new(&url).expect("conn"), url.clone(), Version::V2025_06_18)
        .await
        .expect("initialize");
    assert!(session.id().is_some());
    let json = session.call("json", json!({})).await.expect("json call");
    assert_eq!(json.notifications, 0);
    let sse = session
        .call("sse", json!({"delay_ms": 1}))
        .await
        .expect("sse call");
    assert_eq!(sse.notifications, 2);
    session.end().await.expect("DELETE");

    let mut stateless = Session::stateless(Conn::new(&url).expect("conn"), url.clone());
    assert!(stateless.call("sse", json!({})).await.is_ok());
    let unknown = stateless.call("nope", json!({})).await;
    assert!(matches!(unknown, Err(CallError::JsonRpc(_))), "{unknown:?}");
}

#[tokio::test]
async fn stateless_routing_headers_must_match_the_body() {
    let url = start(0).await;
    let mut conn = Conn::new(&url).expect("conn");
    let request = Request::post(url.clone())
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "sse")
        .body(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"json"}}"#,
        )))
        .expect("request");
    let response = conn.request(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_broadcast_reaches_a_held_stream() {
    let url = start(0).await;
    let mut conn = Conn::new(&url).expect("conn");
    let get = Request::get(url.clone())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", "s-1")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let mut body = conn.request(get).await.expect("stream").into_body();
    let authority = url.authority().expect("authority");
    let port: u16 = authority.port_u16().expect("port");
    crate::scale::control::broadcast(port).await.expect("broadcast");
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("an event in time")
        .expect("a frame")
        .expect("no error");
    let text = String::from_utf8(frame.into_data().expect("data").to_vec()).expect("UTF-8");
    assert!(text.contains("\"sent_ns\":"), "{text}");
    assert_eq!(crate::scale::control::stats(port).await.expect("stats").held, 1);
}

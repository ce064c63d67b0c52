//! The reference server `server-everything`, through Shadowcat, end to end.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::time::Duration;

use serde_json::{Value, json};
use shadowcat_tests::client::{Events, Mcp, send};
use shadowcat_tests::procs::{Shadowcat, everything};
use shadowcat_tests::{eventually, within};

async fn metric(mcp: &Mcp, admin: &str, name: &str) -> u64 {
    let response = send(
        &mcp.http,
        http::Method::GET,
        &format!("{admin}/metrics"),
        &[],
        bytes::Bytes::new(),
    )
    .await;
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in metrics"))
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_session_lifecycle_through_shadowcat() {
    let server = everything().await;
    let proxy = Shadowcat::start(&server.url, &[]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-11-25");
    let init = mcp.initialize().await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-servers/everything");

    let tools = mcp.request("tools/list", json!({})).await;
    let names: Vec<_> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert!(names.contains(&json!("echo")) && names.len() > 5, "{names:?}");

    let echo = mcp
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "via shadowcat"}}),
        )
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "Echo: via shadowcat");

    // A long-running tool: progress notifications stream in before the result.
    let body = mcp.request_body(
        "tools/call",
        json!({"name": "trigger-long-running-operation", "arguments": {"duration": 1, "steps": 4},
               "_meta": {"progressToken": "p1"}}),
    );
    let response = mcp.post(&body).await;
    assert_eq!(response.status(), 200);
    let messages = Events::new(response).rest().await;
    let progress: Vec<_> = messages
        .iter()
        .filter(|(_, m)| m["method"] == "notifications/progress")
        .map(|(_, m)| m["params"]["progress"].as_u64().unwrap())
        .collect();
    assert_eq!(progress, vec![1, 2, 3, 4]);
    let last = &messages.last().unwrap().1;
    assert_eq!(last["id"], body["id"]);
    assert!(
        last["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("completed")
    );
    assert!(
        messages
            .iter()
            .all(|(id, _)| id.as_deref().is_some_and(|id| id.contains('.'))),
        "Shadowcat's ids"
    );

    // Resource updates go out on the standalone stream — including the ones
    // the server sends before the client's GET arrives.
    let resources = mcp.request("resources/list", json!({})).await;
    let uri = resources["result"]["resources"][0]["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let sub = mcp.request("resources/subscribe", json!({"uri": uri})).await;
    assert!(sub.get("result").is_some(), "{sub}");
    let pumped_before = metric(&mcp, &proxy.admin, "shadowcat_sse_events_pumped_total").await;
    mcp.request(
        "tools/call",
        json!({"name": "toggle-subscriber-updates", "arguments": {}}),
    )
    .await;
    // The toggle's own answer is one pumped event; anything past it came on
    // the standalone stream, which no client has opened yet.
    let standalone_events = pumped_before + 1;
    let admin = proxy.admin.clone();
    eventually("an update pumped before any GET", Duration::from_secs(20), || {
        let (mcp, admin) = (&mcp, &admin);
        async move {
            (metric(mcp, admin, "shadowcat_sse_events_pumped_total").await > standalone_events).then_some(())
        }
    })
    .await;
    let get = mcp.get(None).await;
    assert_eq!(get.status(), 200);
    let mut stream = Events::new(get);
    let update = within("resource update", Duration::from_secs(20), async {
        loop {
            let (_, m) = stream.next_message().await.expect("stream ended");
            if m["method"] == "notifications/resources/updated" {
                return m;
            }
        }
    })
    .await;
    assert_eq!(update["params"]["uri"], Value::String(uri));
    drop(stream);

    let deleted = mcp.delete().await;
    assert_eq!(deleted.status(), 200);
    let after = mcp.post(&mcp.request_body("tools/list", json!({}))).await;
    assert_eq!(after.status(), 404, "a deleted session is gone");
}

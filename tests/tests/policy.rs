//! Policy on the wire: rules, tool filtering and renames, rate limits (one
//! replica and three sharing Redis), hooks on every SSE event, audit, and
//! reloading the policy under load.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use shadowcat_tests::client::{Events, Mcp, answer, json_body, metric, send};
use shadowcat_tests::cluster::Cluster;
use shadowcat_tests::procs::Shadowcat;
use shadowcat_tests::upstream::{Options, Scripted};
use shadowcat_tests::{eventually, within};

/// Writes a config file holding `yaml`; a fresh path per call.
fn config_file(yaml: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "shadowcat-policy-{}-{}.yaml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Rewrites a config file in place, as a ConfigMap update does: a new file
/// renamed over the old one.
fn rewrite(path: &PathBuf, yaml: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, yaml).unwrap();
    std::fs::rename(&next, path).unwrap();
}

const MATRIX_POLICY: &str = r#"
policy:
  rules:
    - id: no-sleep
      when: 'method == "tools/call" && name == "sleep"'
      action: deny
    - id: no-ping
      when: 'method == "ping"'
      action: deny
      message: no pings here
    - id: no-sampling
      when: 'direction == "server" && method == "sampling/createMessage"'
      action: deny
    - id: quiet
      when: 'direction == "server" && method == "notifications/message" && params.data == "psst"'
      action: deny
    - id: no-roots-news
      when: 'method == "notifications/roots/list_changed"'
      action: deny
  tools:
    exclude: ["admin_*"]
    rename:
      - {from: echo, to: say, description: Says it back}
  rateLimits:
    - id: big-calls
      key: [session, tool]
      when: 'name == "big"'
      requests: 2
      per: 1h
"#;

/// A client for one version: a session, or none at 2026-07-28.
async fn client(url: &str, version: &str) -> Mcp {
    let mut mcp = Mcp::new(url, version);
    if version != "2026-07-28" {
        mcp.initialize().await;
    }
    mcp
}

/// POSTs a message with the headers its version needs.
async fn post(mcp: &Mcp, body: &Value) -> Response<Incoming> {
    if mcp.version != "2026-07-28" {
        return mcp.post(body).await;
    }
    let method = body["method"].as_str().unwrap_or_default().to_owned();
    let name = body
        .pointer("/params/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method.as_str()),
    ];
    if !name.is_empty() {
        headers.push(("mcp-name", name.as_str()));
    }
    send(
        &mcp.http,
        Method::POST,
        &mcp.url,
        &headers,
        Bytes::from(body.to_string()),
    )
    .await
}

async fn request(mcp: &Mcp, method: &str, params: Value) -> Value {
    let response = post(mcp, &mcp.request_body(method, params)).await;
    assert_eq!(response.status(), 200, "{method}");
    answer(response).await
}

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_matrix_holds_at_every_protocol_version() {
    let upstream = Scripted::start_with(Options {
        standalone: true,
        ..Default::default()
    })
    .await;
    let config = config_file(MATRIX_POLICY);
    let proxy = Shadowcat::start(&upstream.url, &["--config", config.to_str().unwrap()]).await;
    let seen_tool = |tool: &str| upstream.calls(tool);
    for version in ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"] {
        let mcp = client(&proxy.url, version).await;
        // allow + rename: `say` reaches the upstream as `echo`.
        let echoes = seen_tool("echo");
        let said = request(&mcp, "tools/call", json!({"name": "say", "arguments": {}})).await;
        assert_eq!(said["result"]["content"][0]["text"], "ok", "{version}: {said}");
        assert_eq!(
            seen_tool("echo"),
            echoes + 1,
            "{version}: mapped back to the upstream's name"
        );
        // The old name of a renamed tool, a hidden tool and a denied one all
        // read as unknown tools, and none reaches the upstream.
        for tool in ["echo", "admin_reset", "sleep"] {
            let before = seen_tool(tool);
            let refused = request(&mcp, "tools/call", json!({"name": tool, "arguments": {"ms": 1}})).await;
            assert_eq!(refused["error"]["code"], -32602, "{version} {tool}: {refused}");
            assert_eq!(
                refused["error"]["message"],
                format!("Unknown tool: {tool}"),
                "{version}"
            );
            assert_eq!(
                seen_tool(tool),
                before,
                "{version}: {tool} never reached the upstream"
            );
        }
        // deny with the rule's message and id.
        let pinged = request(&mcp, "ping", json!({})).await;
        assert_eq!(pinged["error"]["code"], -32003, "{version}: {pinged}");
        assert_eq!(pinged["error"]["message"], "no pings here");
        assert_eq!(pinged["error"]["data"]["rule"], "no-ping");
        assert!(!upstream.rpc_methods().iter().any(|m| m == "ping"), "{version}");
        // A denied notification has no id to answer: 403 with the reason.
        let note = post(
            &mcp,
            &json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}),
        )
        .await;
        assert_eq!(note.status(), 403, "{version}");
        let note = json_body(note).await;
        assert_eq!(note["id"], Value::Null);
        assert_eq!(note["error"]["data"]["rule"], "no-roots-news");
        // filter: both pages of tools/list, the cursor kept.
        let first = request(&mcp, "tools/list", json!({})).await;
        assert_eq!(tool_names(&first), ["say", "stream"], "{version}: {first}");
        assert_eq!(first["result"]["tools"][0]["description"], "Says it back");
        assert_eq!(first["result"]["nextCursor"], "page-2");
        let second = request(&mcp, "tools/list", json!({"cursor": "page-2"})).await;
        assert_eq!(tool_names(&second), ["sample", "notify", "big"], "{version}");
        assert!(second["result"].get("nextCursor").is_none());
        // rate limit: two `big` calls per session per hour, then 429.
        for _ in 0..2 {
            let big = request(
                &mcp,
                "tools/call",
                json!({"name": "big", "arguments": {"bytes": 10}}),
            )
            .await;
            assert!(big.get("result").is_some(), "{version}: {big}");
        }
        let limited = post(
            &mcp,
            &mcp.request_body("tools/call", json!({"name": "big", "arguments": {}})),
        )
        .await;
        assert_eq!(limited.status(), 429, "{version}");
        let retry: u64 = limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=1800).contains(&retry), "{version}: retry after {retry}s");
        let limited = json_body(limited).await;
        assert_eq!(limited["error"]["code"], -32029, "{version}");
        assert_eq!(limited["error"]["data"]["limit"], "big-calls");
        if version == "2026-07-28" {
            continue;
        }
        // A sampling request from the server is withheld from the client and
        // answered upstream with an error, so the call still completes.
        let response = post(
            &mcp,
            &mcp.request_body("tools/call", json!({"name": "sample", "arguments": {}})),
        )
        .await;
        assert_eq!(response.status(), 200);
        let messages = within(
            "the sample call",
            Duration::from_secs(20),
            Events::new(response).rest(),
        )
        .await;
        assert_eq!(
            messages.len(),
            1,
            "{version}: only the result reaches the client: {messages:?}"
        );
        let result = &messages[0].1;
        assert!(result.get("result").is_some(), "{version}: {result}");
        let seen = upstream.seen.lock().unwrap().clone();
        let reply = seen
            .iter()
            .rev()
            .find(|s| {
                s.rpc_method.is_none() && s.id.as_ref().is_some_and(|id| id.to_string().contains("sample-"))
            })
            .expect("the upstream got an answer to its sampling request");
        assert_eq!(reply.method, "POST", "{version}");
        // A server notification a rule withholds never reaches the
        // standalone stream; the next one does.
        let quiet = "shadowcat_policy_decisions_total{direction=\"server\",decision=\"deny\",rule=\"quiet\"";
        let before = metric(&mcp.http, &proxy.admin, quiet).await;
        let standalone = mcp.get(None).await;
        assert_eq!(standalone.status(), 200, "{version}");
        let mut standalone = Events::new(standalone);
        // Until the session's upstream stream is open, `notify` reaches no one.
        eventually(
            "`psst` to reach the session's stream",
            Duration::from_secs(10),
            || async {
                let sent = request(
                    &mcp,
                    "tools/call",
                    json!({"name": "notify", "arguments": {"text": "psst"}}),
                )
                .await;
                (sent["result"]["content"][0]["text"] != "notified 0").then_some(())
            },
        )
        .await;
        request(
            &mcp,
            "tools/call",
            json!({"name": "notify", "arguments": {"text": "hello"}}),
        )
        .await;
        let (_, note) = within(
            "the next notification",
            Duration::from_secs(10),
            standalone.next_message(),
        )
        .await
        .unwrap();
        assert_eq!(
            note["params"]["data"], "hello",
            "{version}: the withheld one never came"
        );
        assert!(metric(&mcp.http, &proxy.admin, quiet).await > before, "{version}");
    }
    // 2025-03-26: a batch is decided message by message, and the answer
    // holds the upstream's responses and the refusals.
    let mcp = client(&proxy.url, "2025-03-26").await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": "b1", "method": "tools/call", "params": {"name": "say", "arguments": {}}},
        {"jsonrpc": "2.0", "id": "b2", "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}},
    ]);
    let response = mcp.post(&batch).await;
    assert_eq!(response.status(), 200);
    let answers = match json_body(response).await {
        Value::Array(all) => all,
        other => panic!("a batch answer: {other}"),
    };
    let by_id = |id: &str| answers.iter().find(|a| a["id"] == id).cloned().unwrap();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(by_id("b1")["result"]["content"][0]["text"], "ok");
    assert_eq!(by_id("b2")["error"]["data"]["rule"], "no-ping");
    // A batch whose forwarded part the upstream refuses (400): the refusal
    // still joins the upstream's answer, with its status.
    let batch = json!([
        {"jsonrpc": "2.0", "id": "r1", "method": "tools/call", "params": {"name": "reject", "arguments": {}}},
        {"jsonrpc": "2.0", "id": "r2", "method": "ping"},
    ]);
    let response = mcp.post(&batch).await;
    assert_eq!(response.status(), 400);
    let answers = json_body(response).await;
    let ids: Vec<&Value> = answers.as_array().unwrap().iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [&json!("r1"), &json!("r2")], "{answers}");
    // A batch whose answer is a stream: the refusal leads it.
    let batch = json!([
        {"jsonrpc": "2.0", "id": "s1", "method": "tools/call", "params": {"name": "stream", "arguments": {"count": 1}}},
        {"jsonrpc": "2.0", "id": "s2", "method": "tools/call", "params": {"name": "admin_reset"}},
    ]);
    let response = mcp.post(&batch).await;
    assert_eq!(response.status(), 200);
    let mut events = Events::new(response);
    let (_, first) = events.next_message().await.unwrap();
    assert_eq!(first["id"], "s2");
    assert_eq!(first["error"]["message"], "Unknown tool: admin_reset");
    upstream.release(2);
    let rest = within("the stream", Duration::from_secs(20), events.rest()).await;
    assert_eq!(rest.last().unwrap().1["id"], "s1", "{rest:?}");
    // Every decision is counted per rule.
    let denied = metric(
        &mcp.http,
        &proxy.admin,
        "shadowcat_policy_decisions_total{direction=\"client\",decision=\"deny\",rule=\"no-ping\"",
    )
    .await;
    assert_eq!(denied, 6, "one ping per version, two in batches");
}

/// A hook server: answers each call with `answer(call)` after `delay`.
struct HookServer {
    url: String,
    calls: Arc<AtomicUsize>,
    /// Calls whose signature (with the secret `hook-secret`) was right.
    signed: Arc<AtomicUsize>,
}

async fn hook_server(delay: Duration, answer: fn(&Value) -> Value) -> HookServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let signed = Arc::new(AtomicUsize::new(0));
    let (counted, checked) = (calls.clone(), signed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (calls, signed) = (counted.clone(), checked.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (calls, signed) = (calls.clone(), signed.clone());
                    async move {
                        let header =
                            |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
                        let (time, signature) =
                            (header("x-shadowcat-timestamp"), header("x-shadowcat-signature"));
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        if let (Some(time), Some(signature)) = (time, signature) {
                            let expected = shadowcat_proxy::policy::hook::sign(b"hook-secret", &time, &body);
                            if signature == format!("sha256={expected}") {
                                signed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        let call: Value = serde_json::from_slice(&body).unwrap();
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer(&call).to_string()))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    HookServer { url, calls, signed }
}

/// Uppercases the `message` of progress notifications; passes the rest.
fn shout(call: &Value) -> Value {
    let mut message = call["message"].clone();
    if message["method"] == "notifications/progress" {
        message["params"]["message"] =
            json!(format!("EVENT {}", message["params"]["progress"]).to_uppercase());
        return json!({"action": "modify", "message": message});
    }
    json!({"action": "pass"})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_sees_every_sse_event_as_it_comes_in_order() {
    let hook = hook_server(Duration::ZERO, shout).await;
    let upstream = Scripted::start().await;
    let secret = std::env::temp_dir().join(format!("shadowcat-hook-secret-{}", std::process::id()));
    std::fs::write(&secret, "hook-secret\n").unwrap();
    let config = config_file(&format!(
        "policy:\n  hooks:\n    - id: shout\n      url: {}\n      secretFile: {}\n      when: 'direction == \"server\"'\n",
        hook.url,
        secret.display()
    ));
    let proxy = Shadowcat::start(&upstream.url, &["--config", config.to_str().unwrap()]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-11-25");
    mcp.initialize().await;
    let mut events = mcp.call_stream(10).await;
    for i in 1..=10u64 {
        upstream.release(1);
        let (_, message) = within("the next event", Duration::from_secs(10), events.next_message())
            .await
            .unwrap();
        assert_eq!(
            message["params"]["message"],
            format!("EVENT {i}"),
            "modified, in order"
        );
        assert_eq!(
            upstream.sent(),
            i as usize,
            "event {i} reached the client before event {} was sent",
            i + 1
        );
    }
    upstream.release(1);
    let rest = within("the result", Duration::from_secs(10), events.rest()).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].1["result"]["content"][0]["text"], "done after 10");
    let calls = hook.calls.load(Ordering::SeqCst);
    assert!(calls >= 11, "every server message went to the hook");
    assert_eq!(
        hook.signed.load(Ordering::SeqCst),
        calls,
        "every call was signed with the secret"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_that_times_out_follows_its_failure_policy() {
    let slow = hook_server(Duration::from_secs(5), |_| json!({"action": "pass"})).await;
    let upstream = Scripted::start().await;
    for (failure, refused) in [("closed", true), ("open", false)] {
        let config = config_file(&format!(
            "policy:\n  hooks:\n    - id: slow\n      url: {}\n      timeout: 200ms\n      failure: {failure}\n      when: 'direction == \"client\" && method == \"tools/call\"'\n",
            slow.url
        ));
        let proxy = Shadowcat::start(&upstream.url, &["--config", config.to_str().unwrap()]).await;
        let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
        mcp.initialize().await;
        let echoes = upstream.calls("echo");
        let answer = mcp
            .request("tools/call", json!({"name": "echo", "arguments": {}}))
            .await;
        if refused {
            assert_eq!(answer["error"]["code"], -32000, "{answer}");
            assert_eq!(answer["error"]["data"]["hook"], "slow");
            assert_eq!(
                upstream.calls("echo"),
                echoes,
                "fail-closed: nothing reached the upstream"
            );
        } else {
            assert_eq!(
                answer["result"]["content"][0]["text"], "ok",
                "fail-open: passed unchanged"
            );
            assert_eq!(upstream.calls("echo"), echoes + 1);
        }
        let timeouts = metric(
            &mcp.http,
            &proxy.admin,
            "shadowcat_policy_hook_calls_total{id=\"slow\",outcome=\"timeout\"",
        )
        .await;
        assert_eq!(timeouts, 1, "{failure}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_is_shared_by_three_replicas_behind_round_robin() {
    let config = config_file(
        "policy:\n  rateLimits:\n    - id: calls\n      when: 'method == \"tools/call\"'\n      requests: 10\n      per: 1h\n",
    );
    let cluster = Cluster::start(3, &["--config", config.to_str().unwrap()]).await;
    let mcp = Mcp::new(&cluster.front.url, "2026-07-28");
    let mut allowed = 0;
    let mut limited = 0;
    for _ in 0..30 {
        let response = post(
            &mcp,
            &mcp.request_body("tools/call", json!({"name": "echo", "arguments": {}})),
        )
        .await;
        match response.status().as_u16() {
            200 => allowed += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // One bucket of 10 for the whole Service (the refill over the test's
    // seconds is well under one token), not 10 per replica.
    assert_eq!(allowed, 10, "{}", cluster.all_output());
    assert_eq!(limited, 20);
    assert_eq!(
        cluster
            .total("shadowcat_policy_rate_limits_total{id=\"calls\",outcome=\"limited\"")
            .await,
        20
    );
    let served: Vec<usize> = cluster.upstreams.iter().map(|u| u.calls("echo")).collect();
    assert_eq!(served.iter().sum::<usize>(), 10);
    assert!(
        served.iter().filter(|&&n| n > 0).count() >= 2,
        "round robin spread the calls: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_events_pair_requests_with_their_outcomes_and_redact_by_rule() {
    let upstream = Scripted::start().await;
    let audit = std::env::temp_dir().join(format!("shadowcat-audit-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&audit);
    let config = config_file(&format!(
        "policy:\n  rules:\n    - {{id: no-sleep, when: 'name == \"sleep\"', action: deny}}\n  audit:\n    to: {}\n    arguments: true\n    redact: 'name == \"notify\"'\n",
        audit.display()
    ));
    let proxy = Shadowcat::start(&upstream.url, &["--config", config.to_str().unwrap()]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    mcp.request("tools/call", json!({"name": "echo", "arguments": {"word": "hi"}}))
        .await;
    mcp.request(
        "tools/call",
        json!({"name": "notify", "arguments": {"text": "secret"}}),
    )
    .await;
    mcp.request("tools/call", json!({"name": "sleep", "arguments": {"ms": 1}}))
        .await;
    let events: Vec<Value> = eventually(
        "three tool-call audit events",
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(&audit).ok()?;
            let events: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .filter(|e: &Value| e["method"] == "tools/call")
                .collect();
            (events.len() >= 3).then_some(events)
        },
    )
    .await;
    let of = |name: &str| events.iter().find(|e| e["name"] == name).unwrap().clone();
    let echo = of("echo");
    assert_eq!(echo["decision"], "allow");
    assert_eq!(echo["outcome"], "result");
    assert_eq!(echo["session"], mcp.session.clone().unwrap());
    assert_eq!(echo["arguments"]["word"], "hi");
    assert!(echo["durationMs"].as_f64().unwrap() >= 0.0);
    assert!(echo["bytesIn"].as_u64().unwrap() > 0 && echo["bytesOut"].as_u64().unwrap() > 0);
    assert!(echo["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(of("notify")["arguments"], "[redacted]");
    let sleep = of("sleep");
    assert_eq!(sleep["decision"], "deny");
    assert_eq!(sleep["rule"], "no-sleep");
    assert_eq!(sleep["errorCode"], -32602);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_reloads_under_load_and_an_invalid_one_leaves_the_old_in_force() {
    let upstream = Scripted::start().await;
    let deny = |tool: &str| {
        format!("policy:\n  rules:\n    - {{id: no-{tool}, when: 'name == \"{tool}\"', action: deny}}\n")
    };
    let config = config_file(&deny("sleep"));
    let proxy = Shadowcat::start(&upstream.url, &["--config", config.to_str().unwrap()]).await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let mcp = Arc::new(mcp);
    let refused = |answer: &Value| answer["error"]["code"] == -32602;
    assert!(refused(
        &mcp.request("tools/call", json!({"name": "sleep", "arguments": {"ms": 1}}))
            .await
    ));
    // Load: four clients calling `echo` (which no policy here refuses) all along.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (mcp, stop) = (mcp.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let call = mcp.request_body("tools/call", json!({"name": "echo", "arguments": {}}));
                match mcp.try_post(&call).await {
                    Ok(r) if r.status() == 200 => {
                        let a = answer(r).await;
                        if a.get("result").is_some() {
                            ok += 1;
                        } else {
                            failed.push(a.to_string());
                        }
                    }
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        }));
    }
    let reloads = |result: &'static str| {
        let (http, admin) = (mcp.http.clone(), proxy.admin.clone());
        async move {
            metric(
                &http,
                &admin,
                &format!("shadowcat_policy_reloads_total{{result=\"{result}\""),
            )
            .await
        }
    };
    rewrite(&config, &deny("notify"));
    eventually("the reload", Duration::from_secs(10), || async {
        (reloads("ok").await >= 1).then_some(())
    })
    .await;
    let slept = mcp
        .request("tools/call", json!({"name": "sleep", "arguments": {"ms": 1}}))
        .await;
    assert!(slept.get("result").is_some(), "the old rule is gone: {slept}");
    assert!(refused(
        &mcp.request("tools/call", json!({"name": "notify", "arguments": {}}))
            .await
    ));
    // An invalid policy is refused, with where it is wrong; the last good one stays.
    rewrite(
        &config,
        "policy:\n  rules:\n    - {id: broken, when: 'name ==', action: deny}\n",
    );
    eventually("the refusal", Duration::from_secs(10), || async {
        (reloads("invalid").await >= 1).then_some(())
    })
    .await;
    assert!(
        proxy.proc.output().contains("rules[0].when"),
        "{}",
        proxy.proc.output()
    );
    assert!(refused(
        &mcp.request("tools/call", json!({"name": "notify", "arguments": {}}))
            .await
    ));
    // A change beyond `policy` is not applied in place, and the log says so.
    rewrite(&config, &format!("sessionIdleTimeout: 45m\n{}", deny("notify")));
    let said = eventually("the restart notice", Duration::from_secs(10), || async {
        let output = proxy.proc.output();
        output.contains("take effect on restart").then_some(output)
    })
    .await;
    assert!(said.contains("config changed beyond `policy`"));
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for task in load {
        let (ok, failed) = within("the load", Duration::from_secs(20), task).await.unwrap();
        assert!(failed.is_empty(), "no request fails during a reload: {failed:?}");
        total += ok;
    }
    assert!(total > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_json_answer_larger_than_the_policy_reads_is_a_clear_error_not_a_bypass() {
    let upstream = Scripted::start().await;
    let config = config_file("policy:\n  tools:\n    exclude: [\"admin_*\"]\n");
    let proxy = Shadowcat::start(
        &upstream.url,
        &[
            "--config",
            config.to_str().unwrap(),
            "--sse-max-event-bytes",
            "65536",
        ],
    )
    .await;
    let mut mcp = Mcp::new(&proxy.url, "2025-06-18");
    mcp.initialize().await;
    let fits = mcp
        .request(
            "tools/call",
            json!({"name": "bigjson", "arguments": {"bytes": 60000}}),
        )
        .await;
    assert_eq!(
        fits["result"]["content"][0]["text"].as_str().unwrap().len(),
        60000
    );
    let response = mcp
        .post(&mcp.request_body(
            "tools/call",
            json!({"name": "bigjson", "arguments": {"bytes": 70000}}),
        ))
        .await;
    assert_eq!(response.status(), 502);
    let error = json_body(response).await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sse.maxEventBytes"),
        "{error}"
    );
    // Without a policy the same answer streams straight through.
    let plain = Shadowcat::start(&upstream.url, &["--sse-max-event-bytes", "65536"]).await;
    let mut mcp = Mcp::new(&plain.url, "2025-06-18");
    mcp.initialize().await;
    let big = mcp
        .request(
            "tools/call",
            json!({"name": "bigjson", "arguments": {"bytes": 70000}}),
        )
        .await;
    assert_eq!(big["result"]["content"][0]["text"].as_str().unwrap().len(), 70000);
}

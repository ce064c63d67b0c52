//! Shadowcat as an OAuth 2.1 resource server, against a real authorization
//! server (`oidc-provider`): every bad token gets the answer the
//! specification asks for, sessions belong to their principal on every
//! replica, and the client's token never reaches the upstream.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use shadowcat_tests::client::{Mcp, json_body, metric, send};
use shadowcat_tests::cluster::Cluster;
use shadowcat_tests::oauth::{AuthServer, now};
use shadowcat_tests::procs::Shadowcat;
use shadowcat_tests::upstream::Scripted;
use shadowcat_tests::{eventually, free_port};

const VERSION: &str = "2025-06-18";

/// Scopes as a platform team would write them: `mcp` for anything, more for
/// some tools; the subject passed upstream as a header.
const CONFIG: &str = "\
auth:
  scopes:
    default: [mcp]
    tools:
      echo: [mcp:tools]
      rm: [mcp:admin, mcp:write]
  claimHeaders:
    sub: X-Mcp-Subject
";

struct Setup {
    issuer: AuthServer,
    upstream: Scripted,
    proxy: Shadowcat,
    resource: String,
}

fn temp_file(name: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "shadowcat-auth-{}-{}-{name}",
        std::process::id(),
        free_port()
    ));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// An authorization server, an upstream, and Shadowcat verifying tokens for
/// its own URL in front of it, with the scopes of [`CONFIG`].
async fn setup(extra: &[&str]) -> Setup {
    setup_over(None, CONFIG, extra).await
}

/// [`setup`] in front of `upstream` (default: a scripted one), configured
/// with `config`.
async fn setup_over(upstream_url: Option<&str>, config: &str, extra: &[&str]) -> Setup {
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let issuer = AuthServer::start(&[&resource]).await;
    let upstream = Scripted::start().await;
    let upstream_url = upstream_url.unwrap_or(&upstream.url).to_owned();
    let config = temp_file("config.yaml", config);
    let credential = temp_file("upstream-credential", "Bearer upstream-secret\n");
    let mut flags = vec![
        "--config",
        &config,
        "--auth-issuer",
        &issuer.issuer,
        "--auth-resource",
        &resource,
        "--auth-jwks-min-refresh-interval",
        "1s",
        "--upstream-auth-file",
        &credential,
    ];
    flags.extend_from_slice(extra);
    let proxy = Shadowcat::start_at(&upstream_url, &format!("127.0.0.1:{port}"), &flags).await;
    Setup {
        issuer,
        upstream,
        proxy,
        resource,
    }
}

/// A POST of one request with `token` (if any) and the session (if any).
async fn post(
    s: &Setup,
    token: Option<&str>,
    session: Option<&str>,
    body: &Value,
    query: &str,
) -> (u16, String, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let extra: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    post_with(s, &extra, session, body, query).await
}

/// [`post`] with these headers instead of a bearer token.
async fn post_with(
    s: &Setup,
    extra: &[(&str, &str)],
    session: Option<&str>,
    body: &Value,
    query: &str,
) -> (u16, String, Value) {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", VERSION),
    ];
    headers.extend_from_slice(extra);
    if let Some(id) = session {
        headers.push(("mcp-session-id", id));
    }
    let http = shadowcat_tests::client::http();
    let url = format!("{}{query}", s.proxy.url);
    let response = send(&http, Method::POST, &url, &headers, Bytes::from(body.to_string())).await;
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, json_body(response).await)
}

fn call(tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
}

async fn outcome(s: &Setup, outcome: &str) -> u64 {
    let http = shadowcat_tests::client::http();
    metric(
        &http,
        &s.proxy.admin,
        &format!("shadowcat_auth_checks_total{{outcome=\"{outcome}\"}}"),
    )
    .await
}

/// A session of `client` (alice or bob) with the scopes `scope`.
async fn session_of(s: &Setup, client: &str, scope: &str) -> Mcp {
    let mut mcp = Mcp::new(&s.proxy.url, VERSION);
    mcp.token = Some(s.issuer.token(client, &s.resource, scope).await);
    mcp.initialize().await;
    mcp
}

#[tokio::test]
async fn every_bad_token_gets_its_answer_and_a_good_one_still_works() {
    let s = setup(&[]).await;
    let metadata = format!(
        "resource_metadata=\"http://127.0.0.1:{}/.well-known/oauth-protected-resource/mcp\"",
        s.proxy.url.split(':').nth(2).unwrap().trim_end_matches("/mcp")
    );
    let alice = session_of(&s, "alice", "mcp mcp:tools").await;
    let session = alice.session.clone();
    let session = session.as_deref();
    let good = alice.token.clone().unwrap();
    let claims = |over: Value| {
        let mut c = json!({
            "iss": s.issuer.issuer, "sub": "alice", "aud": s.resource,
            "iat": now(), "exp": now() + 600, "scope": "mcp mcp:tools", "client_id": "alice",
        });
        for (k, v) in over.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let foreign = s
        .issuer
        .token("alice", "http://other.example/mcp", "mcp mcp:tools")
        .await;
    let rows: Vec<(&str, Option<String>, &str)> = vec![
        ("malformed", Some("not-a-jwt".into()), "malformed"),
        (
            "expired",
            Some(
                s.issuer
                    .sign(claims(json!({"exp": now() - 600})), json!({}), None)
                    .await,
            ),
            "expired",
        ),
        (
            "not yet valid",
            Some(
                s.issuer
                    .sign(claims(json!({"nbf": now() + 600})), json!({}), None)
                    .await,
            ),
            "not_yet_valid",
        ),
        (
            "wrong issuer",
            Some(
                s.issuer
                    .sign(claims(json!({"iss": "http://evil.example"})), json!({}), None)
                    .await,
            ),
            "wrong_issuer",
        ),
        ("wrong audience", Some(foreign), "wrong_audience"),
        (
            "alg none",
            Some(s.issuer.sign(claims(json!({})), json!({}), Some("none")).await),
            "algorithm",
        ),
        (
            "HS256 keyed with the public key",
            Some(
                s.issuer
                    .sign(claims(json!({})), json!({}), Some("hs256-public"))
                    .await,
            ),
            "algorithm",
        ),
        (
            "unknown kid",
            Some(
                s.issuer
                    .sign(claims(json!({})), json!({"kid": "nope"}), None)
                    .await,
            ),
            "unknown_key",
        ),
        (
            "a signature that does not verify",
            Some({
                // One character of the signature changed (not the last,
                // whose low bits base64url may not carry).
                let at = good.len() - 10;
                let swap = if &good[at..=at] == "A" { "B" } else { "A" };
                format!("{}{swap}{}", &good[..at], &good[at + 1..])
            }),
            "bad_signature",
        ),
    ];
    // No token: a challenge without an error code, naming the metadata and the scope.
    let (status, challenge, body) = post(&s, None, session, &call("echo"), "").await;
    assert_eq!(status, 401, "no token");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains(&metadata), "{challenge}");
    assert!(challenge.contains("scope=\"mcp\""), "{challenge}");
    assert!(
        !challenge.contains("error="),
        "no error code without a token: {challenge}"
    );
    assert_eq!(body["error"]["code"], -32600);
    // The body of a request without a valid token is not even read.
    assert_eq!(body["id"], Value::Null);
    assert_eq!(outcome(&s, "missing").await, 1);

    for (row, token, label) in &rows {
        let before = outcome(&s, label).await;
        let (status, challenge, body) = post(&s, token.as_deref(), session, &call("echo"), "").await;
        assert_eq!(status, 401, "{row}: {body}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{row}: {challenge}"
        );
        assert!(challenge.contains(&metadata), "{row}: {challenge}");
        assert_eq!(body["error"]["code"], -32600, "{row}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("unauthorized: "),
            "{row}: {body}"
        );
        assert_eq!(outcome(&s, label).await, before + 1, "{row} counted as {label}");
    }

    // Audiences compare as canonical URIs: scheme and host case, and a
    // trailing slash, do not matter.
    let loud = s.resource.replace("http://", "HTTP://") + "/";
    let token = s
        .issuer
        .sign(claims(json!({"aud": [loud]})), json!({}), None)
        .await;
    let (status, _, body) = post(&s, Some(&token), session, &call("echo"), "").await;
    assert_eq!(status, 200, "{body}");

    // Another scheme is no token; a header that is not a bearer token is malformed.
    let basic = [("authorization", "Basic YWxpY2U6cHc=")];
    let (status, challenge, _) = post_with(&s, &basic, session, &call("echo"), "").await;
    assert_eq!(status, 401, "Basic");
    assert!(!challenge.contains("error="), "{challenge}");
    assert_eq!(outcome(&s, "missing").await, 2);
    let spaced = [("authorization", "Bearer a b")];
    let (status, challenge, _) = post_with(&s, &spaced, session, &call("echo"), "").await;
    assert_eq!(status, 400, "a bearer token with a space");
    assert!(challenge.contains("error=\"invalid_request\""), "{challenge}");
    assert_eq!(outcome(&s, "bad_header").await, 1);
    // A client cannot pose as someone else to the upstream through a claim header.
    let bearer = format!("Bearer {good}");
    let posing = [("authorization", bearer.as_str()), ("x-mcp-subject", "mallory")];
    let (status, _, _) = post_with(&s, &posing, session, &call("echo"), "").await;
    assert_eq!(status, 200);

    // A token in the query string is refused, even a good one.
    let (status, challenge, _) =
        post(&s, None, session, &call("echo"), &format!("?access_token={good}")).await;
    assert_eq!(status, 400, "query-string token");
    assert!(challenge.contains("error=\"invalid_request\""), "{challenge}");
    assert_eq!(outcome(&s, "query_token").await, 1);

    // Scope: one challenge listing every scope the call needs.
    let narrow = s.issuer.token("alice", &s.resource, "mcp").await;
    let (status, challenge, body) = post(&s, Some(&narrow), session, &call("rm"), "").await;
    assert_eq!(status, 403, "{body}");
    assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
    assert!(
        challenge.contains("scope=\"mcp mcp:admin mcp:write\""),
        "{challenge}"
    );
    assert!(challenge.contains(&metadata), "{challenge}");
    // The same token may do what its scope covers.
    let (status, _, _) = post(
        &s,
        Some(&narrow),
        session,
        &json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = post(&s, Some(&narrow), session, &call("echo"), "").await;
    assert_eq!(status, 403, "echo needs mcp:tools");
    assert_eq!(outcome(&s, "insufficient_scope").await, 2);

    // After all of that, the good token still works.
    let answer = alice
        .request("tools/call", json!({"name": "echo", "arguments": {}}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "ok");

    // The upstream never saw a client's token: only its own credential, and
    // the subject as the configured claim header.
    let seen = s.upstream.seen.lock().unwrap().clone();
    assert!(seen.len() >= 4, "{seen:?}");
    for request in &seen {
        assert_eq!(
            request.authorization.as_deref(),
            Some("Bearer upstream-secret"),
            "{request:?}"
        );
    }
    let posts: Vec<_> = seen.iter().filter(|r| r.method == "POST").collect();
    assert!(
        posts.iter().all(|r| r.subject.as_deref() == Some("alice")),
        "{posts:?}"
    );
    assert_eq!(
        s.upstream.calls("echo"),
        3,
        "the canonical audience, the posing client, alice"
    );
    assert!(
        !s.proxy.proc.output().contains(&good),
        "the token must never be logged"
    );
}

#[tokio::test]
async fn a_session_belongs_to_its_principal() {
    let s = setup(&[]).await;
    let alice = session_of(&s, "alice", "mcp mcp:tools").await;
    let mut bob = Mcp::new(&s.proxy.url, VERSION);
    bob.token = Some(s.issuer.token("bob", &s.resource, "mcp mcp:tools").await);
    bob.session = alice.session.clone();

    let mut events = alice.call_stream(2).await;
    s.upstream.release(1);
    let (first, _) = events.next_message().await.unwrap();
    let first = first.unwrap();

    let response = bob
        .post(&bob.request_body("tools/call", json!({"name": "echo", "arguments": {}})))
        .await;
    assert_eq!(response.status(), 404, "bob on alice's session");
    let body = json_body(response).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session not found"),
        "{body}"
    );
    assert_eq!(
        bob.get(Some(&first)).await.status(),
        404,
        "bob resuming alice's stream"
    );
    assert_eq!(
        bob.get(None).await.status(),
        404,
        "bob opening alice's standalone stream"
    );
    assert_eq!(bob.delete().await.status(), 404, "bob ending alice's session");
    assert_eq!(outcome(&s, "wrong_principal").await, 4);
    let log = s.proxy.proc.output();
    assert!(
        log.contains(&format!("bob ({})", s.issuer.issuer)) && log.contains("another principal's session"),
        "the refusal names the principal: {log}"
    );

    // Alice's session is untouched: her call goes on, she resumes it.
    s.upstream.release(2);
    drop(events);
    let resumed = shadowcat_tests::client::Events::new(alice.get(Some(&first)).await)
        .rest()
        .await;
    assert!(
        resumed.iter().any(|(_, m)| m.get("result").is_some()),
        "{resumed:?}"
    );
    assert_eq!(s.upstream.calls("echo"), 0, "bob's call never ran");
    assert_eq!(alice.delete().await.status(), 200);
}

#[tokio::test]
async fn protected_resource_metadata_is_served_where_clients_look() {
    let s = setup(&[]).await;
    let http = shadowcat_tests::client::http();
    let base = s.proxy.url.trim_end_matches("/mcp");
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let response = send(&http, Method::GET, &format!("{base}{path}"), &[], Bytes::new()).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let doc = json_body(response).await;
        assert_eq!(doc["resource"], s.resource.as_str(), "{path}");
        assert_eq!(doc["authorization_servers"], json!([s.issuer.issuer]));
        assert_eq!(
            doc["scopes_supported"],
            json!(["mcp", "mcp:admin", "mcp:tools", "mcp:write"])
        );
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    }
    let response = send(
        &http,
        Method::POST,
        &format!("{base}/.well-known/oauth-protected-resource"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(response.status(), 405);
    // Without a token, metadata is all a client gets: not even a 404 for a
    // session id it guessed.
    let (status, _, _) = post(
        &s,
        None,
        Some("0123456789abcdef0123456789abcdef"),
        &call("echo"),
        "",
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_rotated_signing_key_is_followed_without_restart() {
    let s = setup(&[]).await;
    let mut alice = session_of(&s, "alice", "mcp mcp:tools").await;
    for _ in 0..20 {
        alice.request("tools/list", json!({})).await;
    }
    assert_eq!(
        s.issuer.jwks_fetches().await,
        1,
        "keys are cached, not fetched per request"
    );

    let old = alice.token.clone().unwrap();
    s.issuer.rotate(false).await;
    let new = s.issuer.token("alice", &s.resource, "mcp mcp:tools").await;
    alice.token = Some(new);
    // The first token signed with the new key makes Shadowcat fetch the keys
    // again (at most once per --auth-jwks-min-refresh-interval, here 1 s).
    eventually("the new key to be accepted", Duration::from_secs(10), || {
        let alice = &alice;
        async move {
            let body = alice.request_body("tools/list", json!({}));
            (alice.post(&body).await.status() == 200).then_some(())
        }
    })
    .await;
    // The old key is gone from the issuer, so are its tokens here.
    alice.token = Some(old);
    let response = alice.post(&alice.request_body("tools/list", json!({}))).await;
    assert_eq!(response.status(), 401, "a token of the withdrawn key");
    assert!(s.issuer.jwks_fetches().await <= 3, "refetches are rate-limited");
    let http = shadowcat_tests::client::http();
    let fetches = metric(
        &http,
        &s.proxy.admin,
        "shadowcat_auth_key_fetches_total{result=\"ok\"}",
    )
    .await;
    assert!((2..=3).contains(&fetches), "{fetches}");
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_carry_the_principal_and_reinitialize_with_the_upstream_credential() {
    let resource = "https://mcp.example.test/mcp";
    let issuer = AuthServer::start(&[resource]).await;
    let credential = temp_file("cluster-credential", "Bearer upstream-secret");
    let mut cluster = Cluster::start(
        2,
        &[
            "--auth-issuer",
            &issuer.issuer,
            "--auth-resource",
            resource,
            "--auth-scopes",
            "mcp",
            "--upstream-auth-file",
            &credential,
        ],
    )
    .await;
    let url = |i: usize| cluster.replicas[i].as_ref().unwrap().url.clone();
    let mut alice = Mcp::new(&url(0), VERSION);
    alice.token = Some(issuer.token("alice", resource, "mcp").await);
    alice.initialize().await;
    assert_eq!(cluster.initialized_on(), vec![0]);

    // Through the other replica: alice's requests are forwarded to the owner
    // with her verified identity; bob's are refused before they go anywhere.
    let mut via = Mcp::new(&url(1), VERSION);
    via.session = alice.session.clone();
    via.token = alice.token.clone();
    let answer = via
        .request("tools/call", json!({"name": "echo", "arguments": {}}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "ok");
    assert_eq!(cluster.upstreams[0].calls("echo"), 1);
    let mut bob = Mcp::new(&url(1), VERSION);
    bob.session = alice.session.clone();
    bob.token = Some(issuer.token("bob", resource, "mcp").await);
    let response = bob
        .post(&bob.request_body("tools/call", json!({"name": "echo", "arguments": {}})))
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(bob.get(None).await.status(), 404);
    // Resumption is served by any replica from the store: checked there too
    // (alice learns the stream is unknown, bob that the session is).
    assert_eq!(via.get(Some("0123abcd.1")).await.status(), 410);
    assert_eq!(bob.get(Some("0123abcd.1")).await.status(), 404);
    assert_eq!(cluster.upstreams[0].calls("echo"), 1, "bob's call never ran");

    // The owner dies; the other replica adopts the session, re-initializing
    // its upstream with the upstream credential (never a client's token).
    cluster.kill(0).await;
    let answer = via
        .request("tools/call", json!({"name": "echo", "arguments": {}}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "ok");
    let seen = cluster.upstreams[1].seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|r| r.rpc_method.as_deref() == Some("initialize")),
        "re-initialized: {seen:?}"
    );
    for upstream in &cluster.upstreams {
        for request in upstream.seen.lock().unwrap().iter() {
            assert_eq!(
                request.authorization.as_deref(),
                Some("Bearer upstream-secret"),
                "{request:?}"
            );
        }
    }
    // Bob still cannot use it on its new owner.
    let response = bob.post(&bob.request_body("tools/list", json!({}))).await;
    assert_eq!(response.status(), 404);
}

/// Runs a client from `tests/peers` and reads its one JSON line; also what
/// it traced on stderr.
async fn run_client(program: &std::path::Path, args: &[&str]) -> (Value, String) {
    let output = shadowcat_tests::within(
        "the SDK client",
        Duration::from_secs(90),
        tokio::process::Command::new(program)
            .args(args)
            .env("DEBUG", "1")
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let trace = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_str(line)
        .unwrap_or_else(|_| panic!("no JSON line from {program:?} {args:?}: {stdout}\n{trace}"));
    (report, trace)
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_clients_discover_the_authorization_server_through_shadowcat_and_complete_a_session() {
    // A real SDK server behind it; scopes the SDKs can learn from the 401.
    let server = shadowcat_tests::procs::fixture().await;
    let s = setup_over(Some(&server.url), "auth:\n  scopes:\n    default: [mcp]\n", &[]).await;
    let peers = shadowcat_tests::root().join("tests/peers");
    let node = std::path::PathBuf::from("node");
    let script = peers.join("oauth-client.mjs");
    let script = script.to_str().unwrap();
    let python_script = peers
        .join("python_oauth_client.py")
        .to_string_lossy()
        .into_owned();
    let metadata = format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        s.proxy.url.trim_end_matches("/mcp")
    );
    let flows: Vec<(&str, std::path::PathBuf, Vec<&str>)> = vec![
        (
            "TypeScript, client credentials",
            node.clone(),
            vec![
                script,
                "--flow",
                "client-credentials",
                "--client-id",
                "alice",
                "--client-secret",
                "alice-secret",
                "--scope",
                "mcp",
            ],
        ),
        (
            "TypeScript, authorization code + PKCE, registered dynamically",
            node.clone(),
            vec![script, "--flow", "authorization-code", "--login", "carol"],
        ),
        (
            "Python, client credentials",
            peers.join(".venv/bin/python"),
            vec![
                python_script.as_str(),
                "--client-id",
                "bob",
                "--client-secret",
                "bob-secret",
                "--issuer",
                s.issuer.issuer.as_str(),
            ],
        ),
    ];
    for (flow, program, mut args) in flows {
        args.extend(["--url", s.proxy.url.as_str()]);
        let (report, trace) = run_client(&program, &args).await;
        assert_eq!(
            report["ok"],
            true,
            "{flow}: {report}\n{trace}\n{}",
            s.proxy.proc.output()
        );
        assert!(
            report["tools"].as_array().unwrap().iter().any(|t| t == "echo"),
            "{flow}: {report}"
        );
        assert!(
            report["echo"].as_str().is_some_and(|t| t.contains("hi")),
            "{flow}: {report}"
        );
        assert_eq!(
            report["discovered"]["authorizationServer"],
            s.issuer.issuer.as_str(),
            "{flow}: {report}"
        );
        if let Some(url) = report["discovered"]["resourceMetadataUrl"].as_str() {
            assert_eq!(url, metadata, "{flow}");
        }
    }
    // Each flow began without a token, was told where to look, and came back with one.
    assert!(outcome(&s, "missing").await >= 3);
    assert!(outcome(&s, "ok").await >= 9);
    let seen = s.upstream.seen.lock().unwrap().len();
    assert_eq!(seen, 0, "the scripted upstream is not in this test");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_conformance_suite_passes_with_tokens_verified() {
    // The suite sends no token: a front in the tests adds a valid one to
    // each of its requests, and nothing else.
    let server = shadowcat_tests::procs::fixture().await;
    let s = setup_over(Some(&server.url), "auth:\n  scopes:\n    default: [mcp]\n", &[]).await;
    let token = s.issuer.token("alice", &s.resource, "mcp").await;
    let bearer = format!("Bearer {token}");
    let front = shadowcat_tests::cluster::Front::adding(&s.proxy.url, &[("authorization", &bearer)]).await;
    let results = shadowcat_tests::conformance::run(&front.url).await;
    assert!(results.len() >= 25, "the full active suite: {results:?}");
    let failed = shadowcat_tests::conformance::failing(&results);
    assert!(failed.is_empty(), "{failed:?}\n{}", s.proxy.proc.output());
    assert!(outcome(&s, "ok").await >= 25);
    assert_eq!(outcome(&s, "missing").await, 0);
}

#[tokio::test]
async fn stateless_requests_are_each_verified_and_scoped_by_their_body() {
    let s = setup(&[]).await;
    let http = shadowcat_tests::client::http();
    let good = s.issuer.token("alice", &s.resource, "mcp").await;
    let stateless = |token: Option<&str>, tool: &str, header_name: &str| {
        let body = call(tool);
        let bearer = token.map(|t| format!("Bearer {t}"));
        let header_name = header_name.to_owned();
        let (http, url) = (&http, &s.proxy.url);
        async move {
            let mut headers = vec![
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", header_name.as_str()),
            ];
            if let Some(b) = &bearer {
                headers.push(("authorization", b.as_str()));
            }
            let response = send(http, Method::POST, url, &headers, Bytes::from(body.to_string())).await;
            let status = response.status().as_u16();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, challenge)
        }
    };
    let (status, challenge) = stateless(None, "echo", "echo").await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains("resource_metadata="));
    // `echo` needs mcp:tools, which this token lacks: the body says so,
    // whatever the mirrored header claims (a mismatch is refused anyway).
    let (status, challenge) = stateless(Some(&good), "echo", "echo").await;
    assert_eq!(status, 403);
    assert!(challenge.unwrap().contains("scope=\"mcp mcp:tools\""));
    let (status, _) = stateless(Some(&good), "echo", "other").await;
    assert_eq!(status, 403, "scopes come from the body, before the header check");
    let tools = s.issuer.token("alice", &s.resource, "mcp mcp:tools").await;
    for _ in 0..3 {
        let (status, _) = stateless(Some(&tools), "echo", "echo").await;
        assert_eq!(status, 200);
    }
    assert_eq!(s.upstream.calls("echo"), 3);
    assert_eq!(outcome(&s, "ok").await, 5, "every request verified on its own");
}

#[tokio::test]
async fn a_token_that_verified_still_expires() {
    // Verified tokens are remembered (their signature is not checked again),
    // but not past their `exp`.
    let s = setup(&["--auth-leeway", "0s"]).await;
    let alice = session_of(&s, "alice", "mcp mcp:tools").await;
    let claims = json!({
        "iss": s.issuer.issuer, "sub": "alice", "aud": s.resource,
        "iat": now(), "exp": now() + 2, "scope": "mcp mcp:tools",
    });
    let short = s.issuer.sign(claims, json!({}), None).await;
    let (status, _, _) = post(&s, Some(&short), alice.session.as_deref(), &call("echo"), "").await;
    assert_eq!(status, 200);
    let challenge = eventually("the token to expire", Duration::from_secs(10), || {
        let (s, short, session) = (&s, &short, alice.session.as_deref());
        async move {
            let (status, challenge, _) = post(s, Some(short), session, &call("echo"), "").await;
            (status == 401).then_some(challenge)
        }
    })
    .await;
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(outcome(&s, "expired").await, 1);
}

#[tokio::test]
async fn a_configured_jwks_url_needs_no_discovery() {
    // The issuer names a path with no metadata behind it: only the
    // configured key URL can make its tokens verify.
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let server = AuthServer::start(&[&resource]).await;
    let issuer = format!("{}/realms/nowhere", server.issuer);
    let upstream = Scripted::start().await;
    let jwks = format!("{}/jwks", server.issuer);
    let proxy = Shadowcat::start_at(
        &upstream.url,
        &format!("127.0.0.1:{port}"),
        &[
            "--auth-issuer",
            &issuer,
            "--auth-resource",
            &resource,
            "--auth-jwks-url",
            &jwks,
        ],
    )
    .await;
    let claims = json!({"iss": issuer, "sub": "alice", "aud": resource, "exp": now() + 600});
    let mut mcp = Mcp::new(&proxy.url, VERSION);
    mcp.token = Some(server.sign(claims, json!({}), None).await);
    mcp.initialize().await;
    let answer = mcp
        .request("tools/call", json!({"name": "echo", "arguments": {}}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "ok");
}

#[tokio::test]
async fn an_unreachable_authorization_server_is_a_503_not_a_401() {
    // No keys could be fetched: the client's token is not at fault.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start(
        &upstream.url,
        &["--auth-issuer", &dead, "--auth-resource", "http://127.0.0.1/mcp"],
    )
    .await;
    let mut mcp = Mcp::new(&proxy.url, VERSION);
    let head = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ"; // {"alg":"RS256","kid":"k"}
    mcp.token = Some(format!("{head}.e30.c2ln"));
    let response = mcp.post(&mcp.request_body("initialize", json!({}))).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body = json_body(response).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be fetched"),
        "{body}"
    );
    let seen = upstream.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|r| r.method != "POST"),
        "only readiness probes reached it: {seen:?}"
    );
    assert!(
        metric(
            &mcp.http,
            &proxy.admin,
            "shadowcat_auth_key_fetches_total{result=\"error\"}"
        )
        .await
            >= 1
    );
}

#[tokio::test]
async fn keys_are_taken_only_from_metadata_that_names_the_issuer() {
    // `localhost` reaches the same authorization server, whose metadata
    // names it as 127.0.0.1: a mix-up, so no key is taken from it.
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let server = AuthServer::start(&[&resource]).await;
    let impostor = server.issuer.replace("127.0.0.1", "localhost");
    let upstream = Scripted::start().await;
    let proxy = Shadowcat::start_at(
        &upstream.url,
        &format!("127.0.0.1:{port}"),
        &["--auth-issuer", &impostor, "--auth-resource", &resource],
    )
    .await;
    let claims = json!({"iss": impostor, "sub": "alice", "aud": resource, "exp": now() + 600});
    let mut mcp = Mcp::new(&proxy.url, VERSION);
    mcp.token = Some(server.sign(claims, json!({}), None).await);
    let response = mcp.post(&mcp.request_body("initialize", json!({}))).await;
    assert_eq!(response.status(), 503, "no keys from metadata of another issuer");
    proxy
        .proc
        .wait_line("the mix-up in the log", |l| {
            l.contains("refusing its keys").then_some(())
        })
        .await;
}

#[tokio::test]
async fn the_upstream_credential_can_be_a_token_exchanged_for_its_audience() {
    // RFC 8693: Shadowcat trades the client's token for one meant for the
    // upstream, acting for the same subject, once per principal.
    let upstream_audience = "http://upstream.internal/mcp";
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let server = AuthServer::start_with(&[&resource], &["--exchange-audience", upstream_audience]).await;
    let upstream = Scripted::start().await;
    let secret = temp_file("exchange-secret", "shadowcat-secret\n");
    let proxy = Shadowcat::start_at(
        &upstream.url,
        &format!("127.0.0.1:{port}"),
        &[
            "--auth-issuer",
            &server.issuer,
            "--auth-resource",
            &resource,
            "--upstream-token-exchange-audience",
            upstream_audience,
            "--upstream-token-exchange-client-id",
            "shadowcat",
            "--upstream-token-exchange-client-secret-file",
            &secret,
        ],
    )
    .await;
    let mut alice = Mcp::new(&proxy.url, VERSION);
    alice.token = Some(server.token("alice", &resource, "mcp mcp:tools").await);
    alice.initialize().await;
    for _ in 0..3 {
        alice
            .request("tools/call", json!({"name": "echo", "arguments": {}}))
            .await;
    }
    let mut bob = Mcp::new(&proxy.url, VERSION);
    bob.token = Some(server.token("bob", &resource, "mcp").await);
    bob.initialize().await;

    let seen = upstream.seen.lock().unwrap().clone();
    let posts: Vec<_> = seen.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 7, "{posts:?}");
    let mut subjects = std::collections::BTreeSet::new();
    for request in &posts {
        let bearer = request.authorization.as_deref().unwrap();
        let token = bearer.strip_prefix("Bearer ").unwrap();
        assert_ne!(Some(token), alice.token.as_deref(), "never the client's token");
        assert_ne!(Some(token), bob.token.as_deref(), "never the client's token");
        let claims = shadowcat_tests::oauth::claims(token);
        assert_eq!(claims["aud"], upstream_audience, "{claims}");
        assert_eq!(claims["act"]["sub"], "shadowcat", "{claims}");
        subjects.insert(claims["sub"].as_str().unwrap().to_owned());
    }
    assert_eq!(subjects, ["alice".to_owned(), "bob".to_owned()].into());
    assert_eq!(
        server.stat("exchange").await,
        2,
        "one exchange per principal, kept for its lifetime"
    );

    // An exchange the server refuses (an audience it does not serve) is a
    // 403; one that cannot be made (nothing at the endpoint) a 503.
    let dead = format!("http://127.0.0.1:{}/token", free_port());
    for (flag, value, status, outcome) in [
        (
            "--upstream-token-exchange-audience",
            "http://unknown.example/mcp",
            403,
            "exchange_refused",
        ),
        (
            "--upstream-token-exchange-endpoint",
            dead.as_str(),
            503,
            "exchange_unavailable",
        ),
    ] {
        let port = free_port();
        let mut flags = vec![
            "--auth-issuer",
            &server.issuer,
            "--auth-resource",
            &resource,
            "--upstream-token-exchange-client-id",
            "shadowcat",
            "--upstream-token-exchange-client-secret-file",
            &secret,
            flag,
            value,
        ];
        if flag != "--upstream-token-exchange-audience" {
            flags.extend(["--upstream-token-exchange-audience", upstream_audience]);
        }
        let other = Shadowcat::start_at(&upstream.url, &format!("127.0.0.1:{port}"), &flags).await;
        let mut carol = Mcp::new(&other.url, VERSION);
        carol.token = alice.token.clone();
        let response = carol.post(&carol.request_body("initialize", json!({}))).await;
        assert_eq!(response.status(), status, "{outcome}");
        let counted = metric(
            &carol.http,
            &other.admin,
            &format!("shadowcat_auth_checks_total{{outcome=\"{outcome}\"}}"),
        )
        .await;
        assert_eq!(counted, 1, "{outcome}");
    }
    let seen = upstream.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|r| r.method == "POST").count(),
        7,
        "nothing more went upstream"
    );
}

#[tokio::test]
async fn opaque_tokens_are_introspected_and_held_to_the_same_rules() {
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let server = AuthServer::start_with(&[], &["--opaque-resource", &resource]).await;
    let upstream = Scripted::start().await;
    let secret = temp_file("introspection-secret", "resource-server-secret\n");
    let proxy = Shadowcat::start_at(
        &upstream.url,
        &format!("127.0.0.1:{port}"),
        &[
            "--auth-issuer",
            &server.issuer,
            "--auth-resource",
            &resource,
            "--auth-scopes",
            "mcp",
            "--auth-introspection-client-id",
            "resource-server",
            "--auth-introspection-client-secret-file",
            &secret,
        ],
    )
    .await;
    let token = server.token("alice", &resource, "mcp").await;
    assert_ne!(token.split('.').count(), 3, "an opaque token: {token}");
    let mut alice = Mcp::new(&proxy.url, VERSION);
    alice.token = Some(token);
    alice.initialize().await;
    for _ in 0..3 {
        alice
            .request("tools/call", json!({"name": "echo", "arguments": {}}))
            .await;
    }
    assert_eq!(
        server.stat("introspection").await,
        1,
        "answers are kept until the token's exp"
    );

    // Not active, or short of scope: the same answers as for a JWT.
    let mut stranger = Mcp::new(&proxy.url, VERSION);
    stranger.token = Some("not-a-token-the-server-issued".into());
    let response = stranger
        .post(&stranger.request_body("initialize", json!({})))
        .await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let http = shadowcat_tests::client::http();
    let inactive = metric(
        &http,
        &proxy.admin,
        "shadowcat_auth_checks_total{outcome=\"inactive\"}",
    )
    .await;
    assert_eq!(inactive, 1);
    let mut narrow = Mcp::new(&proxy.url, VERSION);
    narrow.token = Some(server.token("bob", &resource, "mcp:tools").await);
    let response = narrow.post(&narrow.request_body("initialize", json!({}))).await;
    assert_eq!(response.status(), 403, "bob's token lacks mcp");
    // Sessions stay bound: bob's opaque token on alice's session.
    narrow.token = Some(server.token("bob", &resource, "mcp").await);
    narrow.session = alice.session.clone();
    let response = narrow.post(&narrow.request_body("tools/list", json!({}))).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_refused_request_whose_body_comes_late_still_gets_its_401_and_keeps_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup(&[]).await;
    let addr = s
        .proxy
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = call("echo").to_string();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: {VERSION}\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    // The body follows the headers late, as it may on a busy network.
    for _ in 0..2 {
        conn.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        conn.write_all(body.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let answer = shadowcat_tests::within("the 401", Duration::from_secs(10), async {
            loop {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed: {}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).into_owned();
                if text.contains("\r\n\r\n") && text.ends_with('}') {
                    return text;
                }
            }
        })
        .await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
}

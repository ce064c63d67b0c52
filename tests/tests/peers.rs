//! Real MCP peers through Shadowcat: the official conformance suite (direct
//! vs proxied, per scenario) and the Python SDK's Streamable HTTP client.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::collections::BTreeMap;

use serde_json::json;
use shadowcat_tests::client::Mcp;
use shadowcat_tests::conformance::{self, failing};
use shadowcat_tests::procs::{NodeServer, Shadowcat, everything, fixture};
use shadowcat_tests::root;

/// Every scenario that passes directly must pass through the proxy.
async fn compare(
    server: &NodeServer,
    proxy: &Shadowcat,
) -> (BTreeMap<String, Option<String>>, BTreeMap<String, Option<String>>) {
    let direct = conformance::run(&server.url).await;
    let proxied = conformance::run(&proxy.url).await;
    assert_eq!(
        direct.keys().collect::<Vec<_>>(),
        proxied.keys().collect::<Vec<_>>(),
        "same scenarios"
    );
    let regressions: Vec<_> = direct
        .iter()
        .filter(|(name, failed)| failed.is_none() && proxied[*name].is_some())
        .map(|(name, _)| (name, &proxied[name]))
        .collect();
    assert!(
        regressions.is_empty(),
        "pass direct but fail through Shadowcat: {regressions:?}\n{}",
        proxy.proc.output()
    );
    (direct, proxied)
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_fixture_passes_every_scenario_through_shadowcat_repeatedly() {
    let server = fixture().await;
    let proxy = Shadowcat::start(&server.url, &[]).await;
    let (direct, _) = compare(&server, &proxy).await;
    assert!(
        direct.len() >= 25,
        "expected the full active suite, got {}",
        direct.len()
    );
    assert_eq!(
        failing(&direct),
        Vec::<String>::new(),
        "the fixture must pass every scenario directly"
    );
    // Messages sent before a GET stream is open are where proxies lose them:
    // run the whole suite through Shadowcat again, several times.
    for round in 0..3 {
        let proxied = conformance::run(&proxy.url).await;
        assert_eq!(
            failing(&proxied),
            Vec::<String>::new(),
            "round {round}\n{}",
            proxy.proc.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_server_everything_through_shadowcat_loses_nothing() {
    let server = everything().await;
    let proxy = Shadowcat::start(&server.url, &[]).await;
    let (direct, proxied) = compare(&server, &proxy).await;
    let passed = |r: &BTreeMap<String, Option<String>>| r.values().filter(|f| f.is_none()).count();
    println!(
        "server-everything: {} of {} direct, {} proxied",
        passed(&direct),
        direct.len(),
        passed(&proxied)
    );
    assert!(
        passed(&direct) >= 10,
        "server-everything passes part of the suite directly"
    );
}

async fn python_client(url: &str) -> serde_json::Value {
    let python = root().join("tests/peers/.venv/bin/python");
    assert!(python.exists(), "run tests/peers/install.sh first");
    let output = tokio::process::Command::new(python)
        .arg(root().join("tests/peers/python_client.py"))
        .args([url, "--message", "hello through shadowcat"])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "python client failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_client_completes_a_session_through_shadowcat() {
    for server in [fixture().await, everything().await] {
        let proxy = Shadowcat::start(&server.url, &[]).await;
        let report = python_client(&proxy.url).await;
        assert!(report["tools"].as_u64().unwrap() > 0, "{report}");
        assert!(report["echo"].as_str().unwrap().contains("shadowcat"), "{report}");
        assert_eq!(report["deleteStatus"], 200, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_fixture_passes_every_scenario_through_redis_store() {
    let redis = shadowcat_tests::procs::RedisServer::start().await;
    let server = fixture().await;
    let proxy = Shadowcat::start(&server.url, &["--store", &redis.url]).await;
    let (direct, proxied) = compare(&server, &proxy).await;
    assert_eq!(failing(&direct), Vec::<String>::new());
    assert_eq!(failing(&proxied), Vec::<String>::new(), "{}", proxy.proc.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_and_python_sdk_pass_through_three_replicas_round_robin() {
    let servers = [fixture().await, fixture().await, fixture().await];
    let urls = servers.iter().map(|s| s.url.clone()).collect();
    let cluster = shadowcat_tests::cluster::Cluster::start_over(Vec::new(), urls, &[]).await;
    let results = conformance::run(&cluster.front.url).await;
    let logs = || {
        cluster
            .replicas
            .iter()
            .flatten()
            .map(|r| r.proc.output())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(results.len() >= 25);
    assert_eq!(failing(&results), Vec::<String>::new(), "{}", logs());
    let report = python_client(&cluster.front.url).await;
    assert!(report["echo"].as_str().unwrap().contains("shadowcat"), "{report}");
    assert_eq!(report["deleteStatus"], 200, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_is_unchanged_by_a_permissive_policy_and_a_hidden_tool_reads_as_unknown() {
    let server = fixture().await;
    let dir = std::env::temp_dir();
    let permissive = dir.join(format!("shadowcat-permissive-{}.yaml", std::process::id()));
    std::fs::write(
        &permissive,
        "policy:\n  rules:\n    - {id: everyone, when: 'true', action: allow}\n  \
         rateLimits:\n    - {id: roomy, key: [session], requests: 100000}\n  audit:\n    to: /dev/null\n    arguments: true\n",
    )
    .unwrap();
    let proxy = Shadowcat::start(&server.url, &["--config", permissive.to_str().unwrap()]).await;
    let (direct, proxied) = compare(&server, &proxy).await;
    assert_eq!(
        direct, proxied,
        "a permissive policy changes no scenario's outcome"
    );

    let hiding = dir.join(format!("shadowcat-hiding-{}.yaml", std::process::id()));
    std::fs::write(
        &hiding,
        "policy:\n  tools:\n    exclude: [test_simple_text]\n    \
         unknownToolMessage: 'MCP error -32602: Unknown tool: {name}'\n",
    )
    .unwrap();
    let proxy = Shadowcat::start(&server.url, &["--config", hiding.to_str().unwrap()]).await;
    let tools = |answer: &serde_json::Value| -> Vec<String> {
        answer["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut via_proxy = Mcp::new(&proxy.url, "2025-06-18");
    via_proxy.initialize().await;
    let mut direct = Mcp::new(&server.url, "2025-06-18");
    direct.initialize().await;
    let all = tools(&direct.request("tools/list", json!({})).await);
    let shown = tools(&via_proxy.request("tools/list", json!({})).await);
    assert!(all.contains(&"test_simple_text".to_owned()));
    let expected: Vec<String> = all.into_iter().filter(|t| t != "test_simple_text").collect();
    assert_eq!(shown, expected, "only the hidden tool is missing");
    let hidden = via_proxy
        .request("tools/call", json!({"name": "test_simple_text", "arguments": {}}))
        .await;
    let unknown = direct
        .request(
            "tools/call",
            json!({"name": "test_simple_text_", "arguments": {}}),
        )
        .await;
    assert_eq!(
        hidden["error"]["code"], unknown["error"]["code"],
        "{hidden} vs {unknown}"
    );
    assert_eq!(
        hidden["error"]["message"]
            .as_str()
            .unwrap()
            .replace("test_simple_text", "X"),
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .replace("test_simple_text_", "X"),
        "the same words as the server's own answer for a tool it does not have"
    );
}

//! The policy's decisions on messages, without HTTP.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};
use shadowcat_crds::PolicyConfig;

use super::*;
use crate::store::MemoryStore;

fn policy(yaml: &str) -> Policy {
    let config: PolicyConfig = serde_yaml::from_str(yaml).expect("policy YAML");
    let store = MemoryStore::new(crate::store::suite::limits());
    build(&config, &(store as Arc<dyn Store>), &Arc::new(Metrics::new())).expect("a valid policy")
}

fn alice() -> Scope {
    Scope {
        session: "s1".into(),
        version: "2025-06-18".into(),
        identity: Some(Arc::new(Identity {
            issuer: "https://as".into(),
            subject: "alice".into(),
            scopes: Default::default(),
            headers: Default::default(),
            upstream_token: None,
            claims: json!({"groups": ["viewers"]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            principal: Default::default(),
        })),
    }
}

fn call(id: u64, tool: &str) -> Bytes {
    Bytes::from(
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {"x": 1}}})
            .to_string(),
    )
}

fn body(bytes: &Option<Bytes>) -> Value {
    serde_json::from_slice(bytes.as_deref().expect("something forwarded")).expect("JSON")
}

const READ_ONLY: &str = r#"
rules:
  - id: viewers-read-only
    when: 'method == "tools/call" && "viewers" in principal.claims.groups && !name.startsWith("get_")'
    action: deny
tools:
  exclude: ["admin_*"]
  rename:
    - {from: echo, to: say, description: "Says it back"}
"#;

#[tokio::test]
async fn rules_see_the_principal_and_the_tool() {
    let p = policy(READ_ONLY);
    let admitted = p.client(&alice(), &call(1, "get_weather")).await;
    assert!(admitted.refusals.is_empty());
    assert_eq!(admitted.pending.len(), 1);
    assert_eq!(admitted.pending[0].name, "get_weather");
    let admitted = p.client(&alice(), &call(2, "add")).await;
    assert!(admitted.forward.is_none());
    let error = &admitted.refusals[0]["error"];
    assert_eq!(admitted.refusals[0]["id"], 2);
    assert_eq!(
        error["code"],
        code::INVALID_PARAMS,
        "a denied call reads as an unknown tool"
    );
    assert_eq!(error["message"], "Unknown tool: add");
    let nobody = Scope {
        identity: None,
        ..alice()
    };
    let admitted = p.client(&nobody, &call(3, "add")).await;
    assert!(
        admitted.forward.is_some(),
        "the rule's claim lookup fails: no match, default allow"
    );
}

#[tokio::test]
async fn hidden_and_renamed_tools() {
    let p = policy("tools: {exclude: [\"admin_*\"], rename: [{from: echo, to: say}]}");
    let admitted = p.client(&alice(), &call(1, "admin_wipe")).await;
    assert_eq!(
        admitted.refusals[0]["error"]["message"],
        "Unknown tool: admin_wipe"
    );
    let admitted = p.client(&alice(), &call(2, "echo")).await;
    assert_eq!(admitted.refusals[0]["error"]["message"], "Unknown tool: echo");
    let admitted = p.client(&alice(), &call(3, "say")).await;
    assert_eq!(
        body(&admitted.forward)["params"]["name"],
        "echo",
        "mapped back to the upstream's name"
    );
    assert_eq!(body(&admitted.forward)["params"]["arguments"]["x"], 1);
}

#[tokio::test]
async fn list_results_are_filtered_and_renamed_keeping_the_cursor() {
    let p = policy(READ_ONLY);
    let scope = alice();
    let list = Bytes::from(
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {"cursor": "c1"}}).to_string(),
    );
    let mut exchange = p.client(&scope, &list).await.pending;
    let answer = json!({"jsonrpc": "2.0", "id": 7, "result": {
        "tools": [{"name": "get_weather"}, {"name": "admin_wipe"}, {"name": "echo", "description": "old"}, {"name": "add"}],
        "nextCursor": "c2"}});
    let out = p
        .server_body(&scope, &mut exchange, answer.to_string().as_bytes())
        .await
        .expect("changed");
    let out: Value = serde_json::from_slice(&out).unwrap();
    let names: Vec<&str> = out["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // `echo` is not get_*: alice (a viewer) may not call it, so she does not see it either.
    assert_eq!(names, ["get_weather"]);
    assert_eq!(out["result"]["nextCursor"], "c2");
    assert!(exchange.is_empty(), "the response closed its request");

    let editor = Scope {
        identity: None,
        ..alice()
    };
    let mut exchange = p.client(&editor, &list).await.pending;
    let out = p
        .server_body(&editor, &mut exchange, answer.to_string().as_bytes())
        .await
        .expect("changed");
    let out: Value = serde_json::from_slice(&out).unwrap();
    let tools = out["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["get_weather", "say", "add"]);
    assert_eq!(tools[1]["description"], "Says it back");
}

#[tokio::test]
async fn server_messages_refused_by_rules() {
    let p = policy(
        r#"
rules:
  - {id: no-sampling, when: 'direction == "server" && method == "sampling/createMessage"', action: deny}
  - {id: quiet, when: 'kind == "notification" && method == "notifications/message"', action: deny}
  - {id: no-secrets, when: 'direction == "server" && kind == "response" && name == "secret"', action: deny, message: "no"}
"#,
    );
    let scope = alice();
    let mut exchange = Vec::new();
    let sampling =
        json!({"jsonrpc": "2.0", "id": "s-1", "method": "sampling/createMessage", "params": {}}).to_string();
    let Verdict::Answer { replies, rest: None } = p.server_event(&scope, &mut exchange, &sampling).await
    else {
        panic!("the server's request is answered upstream");
    };
    let reply = &replies[0];
    let reply: Value = serde_json::from_slice(reply).unwrap();
    assert_eq!(reply["id"], "s-1");
    assert_eq!(reply["error"]["code"], code::POLICY_DENIED);
    assert_eq!(reply["error"]["data"]["rule"], "no-sampling");
    let log =
        json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info"}}).to_string();
    assert_eq!(p.server_event(&scope, &mut exchange, &log).await, Verdict::Drop);
    let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}).to_string();
    assert_eq!(
        p.server_event(&scope, &mut exchange, &progress).await,
        Verdict::Same
    );

    let mut exchange = p.client(&scope, &call(9, "secret")).await.pending;
    let answer = json!({"jsonrpc": "2.0", "id": 9, "result": {"content": []}}).to_string();
    let Verdict::Replace(out) = p.server_event(&scope, &mut exchange, &answer).await else {
        panic!("a refused response becomes an error, so the client is not left waiting");
    };
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["id"], 9);
    assert_eq!(out["error"]["message"], "no");
}

#[tokio::test]
async fn batches_are_decided_message_by_message() {
    let p = policy("rules: [{id: no-add, when: 'name == \"add\"', action: deny}]");
    let batch = Bytes::from(
        json!([
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "add"}},
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}
        ])
        .to_string(),
    );
    let admitted = p.client(&alice(), &batch).await;
    let forwarded = body(&admitted.forward);
    assert_eq!(forwarded.as_array().map(Vec::len), Some(2));
    assert_eq!(forwarded[0]["id"], 1);
    assert_eq!(admitted.refusals.len(), 1);
    assert_eq!(admitted.refusals[0]["id"], 2);
    assert_eq!(admitted.pending.len(), 1);
}

#[tokio::test]
async fn rate_limits_refuse_past_the_burst_per_key() {
    let p = policy("rateLimits: [{id: per-user, key: [principal], requests: 2, per: 1m}]");
    let (a, b) = (
        alice(),
        Scope {
            identity: None,
            ..alice()
        },
    );
    for id in 0..2 {
        assert!(p.client(&a, &call(id, "echo")).await.forward.is_some());
    }
    let refused = p.client(&a, &call(3, "echo")).await;
    assert!(refused.forward.is_none());
    assert_eq!(refused.refusals[0]["error"]["code"], code::RATE_LIMITED);
    assert_eq!(refused.refusals[0]["error"]["data"]["limit"], "per-user");
    let wait = refused.retry_after.expect("a retry-after");
    assert!(
        wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    assert!(
        p.client(&b, &call(4, "echo")).await.forward.is_some(),
        "another principal has its own bucket"
    );
    let note = Bytes::from(json!({"jsonrpc": "2.0", "method": "notifications/progress"}).to_string());
    assert!(
        p.client(&a, &note).await.forward.is_some(),
        "notifications take no token"
    );
}

#[tokio::test]
async fn the_default_can_deny() {
    let p = policy("default: deny\nrules: [{id: init, when: 'method == \"initialize\"', action: allow}]");
    let init =
        Bytes::from(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}).to_string());
    assert!(p.client(&alice(), &init).await.forward.is_some());
    let ping = Bytes::from(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string());
    let refused = p.client(&alice(), &ping).await;
    assert_eq!(refused.refusals[0]["error"]["data"]["rule"], "default");
    let note = Bytes::from(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
    let refused = p.client(&alice(), &note).await;
    assert!(refused.forward.is_none());
    assert_eq!(
        refused.refused_other.expect("an error to answer with")["id"],
        Value::Null
    );
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z/_]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("tools/call"),
            Just("tools/list"),
            Just("sampling/createMessage"),
            Just("initialize")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("jsonrpc".to_owned()),
                    Just("id".to_owned()),
                    Just("method".to_owned()),
                    Just("params".to_owned()),
                    Just("name".to_owned()),
                    Just("arguments".to_owned()),
                    Just("result".to_owned()),
                    Just("tools".to_owned()),
                    Just("error".to_owned()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn no_message_makes_the_policy_panic(messages in prop::collection::vec(json_value(), 1..4)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let p = policy(&format!("{READ_ONLY}\nrateLimits: [{{id: l, key: [tool, method], requests: 1000}}]\n"));
            let scope = alice();
            for message in &messages {
                let text = message.to_string();
                let _ = p.client(&scope, &Bytes::from(text.clone())).await;
                let mut exchange = vec![Pending {
                    id: message.get("id").cloned().unwrap_or(Value::Null),
                    method: "tools/list".into(),
                    name: String::new(),
                    rule: "default".into(),
                    started: Instant::now(),
                    bytes: 0,
                    arguments: None,
                }];
                let _ = p.server_event(&scope, &mut exchange, &text).await;
                let _ = p.server_body(&scope, &mut exchange, text.as_bytes()).await;
            }
        });
    }
}

#[tokio::test]
async fn denied_prompts_and_resources_read_as_missing() {
    let p = policy("rules: [{id: secret, when: 'name.startsWith(\"secret\")', action: deny}]");
    let get = Bytes::from(
        json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": "secret-plan"}})
            .to_string(),
    );
    let refused = p.client(&alice(), &get).await;
    assert_eq!(refused.refusals[0]["error"]["code"], code::INVALID_PARAMS);
    assert_eq!(
        refused.refusals[0]["error"]["message"],
        "Unknown prompt: secret-plan"
    );
    let read = Bytes::from(
        json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "secret://x"}})
            .to_string(),
    );
    let refused = p.client(&alice(), &read).await;
    assert_eq!(refused.refusals[0]["error"]["code"], code::RESOURCE_NOT_FOUND);
    assert_eq!(refused.refusals[0]["error"]["data"]["uri"], "secret://x");
}

#[tokio::test]
async fn an_unreachable_limit_store_fails_open_or_closed_as_configured() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!("upstream: http://127.0.0.1:1/mcp\nstore: redis://127.0.0.1:{port}\n");
    let settings = shadowcat_crds::SidecarConfig::from_yaml(&yaml)
        .unwrap()
        .validate()
        .unwrap();
    let shadowcat_crds::StoreSettings::Redis(redis) = settings.store else {
        unreachable!()
    };
    let store: Arc<dyn Store> =
        Arc::new(crate::store::RedisStore::new(&redis, crate::store::suite::limits()).unwrap());
    for (failure, forwarded) in [("open", true), ("closed", false)] {
        let config: PolicyConfig = serde_yaml::from_str(&format!(
            "rateLimitFailure: {failure}\nrateLimits: [{{id: l, requests: 1}}]"
        ))
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let p = build(&config, &store, &metrics).unwrap();
        let admitted = p.client(&alice(), &call(1, "echo")).await;
        assert_eq!(admitted.forward.is_some(), forwarded, "{failure}");
        if !forwarded {
            assert_eq!(admitted.refusals[0]["error"]["code"], code::SERVER_ERROR);
        }
        let errors = metrics
            .policy_rate_limits
            .get_or_create(&PolicyPartLabels {
                id: "l".into(),
                outcome: "store_error",
            })
            .get();
        assert_eq!(errors, 1, "{failure}");
    }
}

#[tokio::test]
async fn rules_read_the_field_the_server_reads() {
    let p = policy("rules: [{id: etc, when: 'name.startsWith(\"file:///etc/\")', action: deny}]");
    // A `name` beside the `uri` must not be what the rule sees.
    let read = Bytes::from(
        json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "file:///etc/shadow", "name": "x"}})
            .to_string(),
    );
    let refused = p.client(&alice(), &read).await;
    assert!(refused.forward.is_none());
    assert_eq!(refused.refusals[0]["error"]["data"]["uri"], "file:///etc/shadow");
}

#[tokio::test]
async fn a_response_finds_its_request_whatever_form_its_number_id_takes() {
    let p = policy("tools: {exclude: [\"admin_*\"]}");
    let list = Bytes::from(r#"{"jsonrpc":"2.0","id":1.0,"method":"tools/list"}"#);
    let mut exchange = p.client(&alice(), &list).await.pending;
    let answer =
        json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "admin_x"}, {"name": "ok"}]}});
    let out = p
        .server_body(&alice(), &mut exchange, answer.to_string().as_bytes())
        .await
        .expect("filtered");
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["result"]["tools"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_refused_client_response_still_answers_the_server() {
    let p = policy(
        "rules: [{id: no-samples, when: 'direction == \"client\" && kind == \"response\"', action: deny}]",
    );
    let response = Bytes::from(json!({"jsonrpc": "2.0", "id": "s-1", "result": {"content": {}}}).to_string());
    let admitted = p.client(&alice(), &response).await;
    let forwarded = body(&admitted.forward);
    assert_eq!(forwarded["id"], "s-1");
    assert_eq!(
        forwarded["error"]["code"],
        code::POLICY_DENIED,
        "the server gets an error, not silence"
    );
}

#[tokio::test]
async fn each_withheld_request_of_a_batch_event_is_answered() {
    let p = policy("rules: [{id: no-sampling, when: 'method == \"sampling/createMessage\"', action: deny}]");
    let event = json!([
        {"jsonrpc": "2.0", "id": "a", "method": "sampling/createMessage", "params": {}},
        {"jsonrpc": "2.0", "id": "b", "method": "sampling/createMessage", "params": {}},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}
    ])
    .to_string();
    let Verdict::Answer {
        replies,
        rest: Some(rest),
    } = p.server_event(&alice(), &mut Vec::new(), &event).await
    else {
        panic!("both answered, the notification kept");
    };
    assert_eq!(replies.len(), 2);
    let rest: Value = serde_json::from_str(&rest).unwrap();
    assert_eq!(rest[0]["method"], "notifications/progress");
}

#[tokio::test]
async fn renamed_and_hidden_tools_stay_hidden_in_every_answer() {
    let p = policy(
        "rules: [{id: no-say, when: 'name == \"echo\"', action: deny}]\ntools: {exclude: [\"admin_*\"], rename: [{from: echo, to: say}]}",
    );
    let refused = p.client(&alice(), &call(1, "say")).await;
    assert_eq!(
        refused.refusals[0]["error"]["message"], "Unknown tool: say",
        "the upstream name stays hidden"
    );
    let note = Bytes::from(
        json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "admin_x"}}).to_string(),
    );
    assert!(
        p.client(&alice(), &note).await.forward.is_none(),
        "a hidden tool is hidden without an id too"
    );
}

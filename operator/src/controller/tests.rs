//! The reconciler against a fake API server, one scenario per situation:
//! every call it makes, in order, and nothing else (a write the scenario
//! does not list fails it). The user's workload is read, never written,
//! unless `rollout: auto` asks for its one annotation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::{Value, json};
use shadowcat_crds::{McpProxy, SidecarConfig};

use super::reconcile;
use crate::fixtures::{
    Call, Proxy, deployment, deployment_labelled, list, not_found, path, pod, scenario, secret,
    secret_holding, verify,
};
use crate::render::{self, Defaults};

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn is(status: &Value, type_: &str) -> (String, String) {
    let c = condition(status, type_);
    (
        c["status"].as_str().unwrap().to_owned(),
        c["reason"].as_str().unwrap().to_owned(),
    )
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_owned(), reason.to_owned())
}

fn answer_proxy() -> Value {
    serde_json::to_value(Proxy::new().0).unwrap()
}

fn hash(proxy: &McpProxy) -> String {
    render::config_yaml(&render::sidecar_config(proxy, &Defaults::default()))
        .unwrap()
        .1
}

fn status_error(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": message})
}

/// The ConfigMap's calls: none of ours under another name, none of the
/// name, applied (its body checked by `check`).
fn config_map_calls(check: impl Fn(&Value) + Send + 'static) -> Vec<Call> {
    vec![
        Call::new("GET", path::CONFIG_MAPS, list("ConfigMapList", vec![])).query("labelSelector"),
        Call::new("GET", path::CONFIG_MAP, not_found()).status(404),
        Call::new("PATCH", path::CONFIG_MAP, json!({}))
            .query("fieldManager=shadowcat-operator")
            .query("force=true")
            .check(move |cm| {
                assert_eq!(cm["metadata"]["ownerReferences"][0]["kind"], "McpProxy");
                check(cm);
            }),
    ]
}

/// No Service and no NetworkPolicy asked for, none left over.
fn nothing_else() -> Vec<Call> {
    vec![
        Call::new("GET", path::SERVICES, list("ServiceList", vec![])),
        Call::new("GET", path::NETWORK_POLICIES, list("NetworkPolicyList", vec![])),
    ]
}

/// The pods labelled for `weather`.
fn pods(items: Vec<k8s_openapi::api::core::v1::Pod>) -> Call {
    let items = items
        .into_iter()
        .map(|p| serde_json::to_value(p).unwrap())
        .collect();
    Call::new("GET", path::PODS, list("PodList", items))
        .query("labelSelector=shadowcat.dev%2Fproxy%3Dweather")
}

/// A pod the webhook left without the sidecar, saying why on it.
fn refused_pod(name: &str) -> k8s_openapi::api::core::v1::Pod {
    use kube::ResourceExt;
    let mut refused = pod(name, None);
    refused.annotations_mut().insert(
        crate::inject::SKIPPED.into(),
        "container \"server\" uses port 8080".into(),
    );
    refused
}

/// Three pods with the sidecar on config `hash`.
fn injected_pods(hash: &str) -> Call {
    pods(vec![
        pod("mcp-server-a", Some(hash)),
        pod("mcp-server-b", Some(hash)),
        pod("mcp-server-c", Some(hash)),
    ])
}

/// The whole apply of `proxy` (memory store, no Service) on a target with
/// `ready` of 3 replicas ready; the config and the hash status reports go
/// into `configs` and `hashes`.
fn apply_calls(
    proxy: &McpProxy,
    ready: i32,
    hashes: Arc<Mutex<Vec<String>>>,
    configs: Arc<Mutex<Vec<String>>>,
) -> Vec<Call> {
    let mut calls = vec![Call::new("GET", path::DEPLOYMENT, deployment(ready))];
    calls.extend(config_map_calls(move |cm| {
        let config = cm["data"]["config.yaml"].as_str().unwrap();
        assert!(config.contains("upstream: http://127.0.0.1:3000/mcp"), "{config}");
        configs.lock().unwrap().push(config.to_owned());
    }));
    calls.extend(nothing_else());
    calls.push(injected_pods(&hash(proxy)));
    calls.push(Call::new("PATCH", path::STATUS, answer_proxy()).check(move |s| {
        assert_eq!(s["status"]["observedGeneration"], 1);
        assert_eq!(is(s, "ConfigValid"), pair("True", "Valid"));
        assert_eq!(is(s, "PolicyValid").0, "True");
        assert_eq!(is(s, "Accepted"), pair("True", "Accepted"));
        assert_eq!(is(s, "Injected"), pair("True", "Injected"));
        let expected = if ready == 3 {
            pair("True", "Ready")
        } else {
            pair("False", "RollingOut")
        };
        assert_eq!(is(s, "Ready"), expected);
        assert_eq!(s["status"]["readyReplicas"], ready);
        assert_eq!(
            (&s["status"]["injectedPods"], &s["status"]["currentPods"]),
            (&json!(3), &json!(3))
        );
        assert_eq!(s["status"]["podsWithoutSidecar"], 0);
        hashes
            .lock()
            .unwrap()
            .push(s["status"]["configHash"].as_str().unwrap().to_owned());
    }));
    calls
}

/// `rollout: auto`: the finalizer (which releases the annotation) goes on
/// before anything is written.
#[tokio::test]
async fn with_auto_rollout_the_finalizer_is_added_before_anything_else() {
    let (ctx, server) = scenario(vec![Call::new("PATCH", path::PROXY, answer_proxy()).check(
        |patch| {
            let ops = patch.as_array().expect("a JSON patch");
            assert!(
                ops.iter()
                    .any(|op| op["op"] == "add" && op["value"].to_string().contains("shadowcat.dev/cleanup"))
            );
        },
    )]);
    let action = reconcile(Proxy::new().auto_rollout().fresh().arc(), ctx)
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    verify(server).await;
}

/// `rollout: manual` holds no finalizer: one an earlier operator version
/// put there is taken off first (test-and-remove, so a concurrent change
/// is not clobbered); deleted, such an McpProxy goes at once.
#[tokio::test]
async fn with_manual_rollout_no_finalizer_is_held() {
    let (ctx, server) = scenario(vec![
        // No earlier version's sidecar in the target to guard.
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
        Call::new("PATCH", path::PROXY, answer_proxy()).check(|patch| {
            assert_eq!(
                patch,
                &json!([
                    {"op": "test", "path": "/metadata/finalizers/0", "value": "shadowcat.dev/cleanup"},
                    {"op": "remove", "path": "/metadata/finalizers/0"}
                ])
            );
        }),
    ]);
    let action = reconcile(Proxy::new().finalized().arc(), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    verify(server).await;
    let (ctx, server) = scenario(vec![]);
    let action = reconcile(Proxy::new().deleting().arc(), ctx).await.unwrap();
    assert_eq!(action, Action::await_change(), "deleted, nothing to do, no call");
    verify(server).await;
}

#[tokio::test]
async fn create_applies_the_config_and_never_writes_the_workload() {
    let hashes = Arc::new(Mutex::new(Vec::new()));
    let proxy = Proxy::new();
    let (ctx, server) = scenario(apply_calls(&proxy.0, 0, hashes.clone(), Arc::default()));
    let action = reconcile(proxy.arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    verify(server).await;
    assert_eq!(hashes.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn reconcile_again_applies_the_same_objects() {
    let hashes = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..2 {
        let proxy = Proxy::new();
        let (ctx, server) = scenario(apply_calls(&proxy.0, 3, hashes.clone(), Arc::default()));
        reconcile(proxy.arc(), ctx).await.unwrap();
        verify(server).await;
    }
    let hashes = hashes.lock().unwrap();
    assert_eq!(hashes[0], hashes[1], "no change, no new hash");
}

#[tokio::test]
async fn spec_change_changes_the_config_hash() {
    let hashes = Arc::new(Mutex::new(Vec::new()));
    for retention in ["10m", "20m"] {
        let proxy = Proxy::new().retention(retention);
        let (ctx, server) = scenario(apply_calls(&proxy.0, 3, hashes.clone(), Arc::default()));
        reconcile(proxy.arc(), ctx).await.unwrap();
        verify(server).await;
    }
    let hashes = hashes.lock().unwrap();
    assert_ne!(hashes[0], hashes[1]);
}

/// The sidecar reloads `policy` from the mounted ConfigMap: a new policy
/// goes into the ConfigMap, and the hash stays, so nothing rolls.
#[tokio::test]
async fn policy_change_updates_the_config_map_and_not_the_hash() {
    let hashes = Arc::new(Mutex::new(Vec::new()));
    let configs = Arc::new(Mutex::new(Vec::new()));
    for proxy in [
        Proxy::new(),
        Proxy::new().policy(),
        Proxy::new().policy().policy_tool("delete_repo"),
    ] {
        let (ctx, server) = scenario(apply_calls(&proxy.0, 3, hashes.clone(), configs.clone()));
        reconcile(proxy.arc(), ctx).await.unwrap();
        verify(server).await;
    }
    let hashes = hashes.lock().unwrap();
    assert_eq!(hashes.len(), 3);
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    let configs = configs.lock().unwrap();
    assert!(
        configs[0] != configs[1] && configs[1] != configs[2],
        "each policy reaches the ConfigMap: {configs:?}"
    );
    assert!(configs[2].contains("delete_repo"), "{}", configs[2]);
    let written = Proxy::new().policy().0.spec.policy.unwrap();
    assert_eq!(
        SidecarConfig::from_yaml(&configs[1]).unwrap().policy,
        Some(written)
    );
}

/// Status, from start to end of a rollout: the workload's controller has
/// not seen the generation; pods lag on the old config; a pod runs without
/// the sidecar (the webhook was down); then all is well.
#[tokio::test]
async fn ready_comes_from_the_rollout_and_the_pods() {
    let proxy = Proxy::new().auto_rollout();
    let current = hash(&proxy.0);
    let mut unobserved = deployment(3);
    unobserved["metadata"]["generation"] = json!(2);
    type Case<'a> = (
        Value,
        Vec<k8s_openapi::api::core::v1::Pod>,
        (&'a str, &'a str),
        (&'a str, &'a str),
    );
    let cases: Vec<Case> = vec![
        (
            unobserved,
            vec![pod("a", Some(&current))],
            ("True", "Injected"),
            ("False", "RollingOut"),
        ),
        (
            deployment(3),
            vec![pod("a", Some(&current)), pod("b", Some("old"))],
            ("True", "Injected"),
            ("False", "RollingOut"),
        ),
        (
            deployment(3),
            vec![pod("a", Some(&current)), pod("b", None), refused_pod("c")],
            ("False", "PodsWithoutSidecar"),
            ("False", "PodsWithoutSidecar"),
        ),
        (
            deployment(3),
            vec![pod("a", Some(&current)), pod("b", Some(&current))],
            ("True", "Injected"),
            ("True", "Ready"),
        ),
    ];
    for (target, listed, injected, ready) in cases {
        let mut calls = vec![Call::new("GET", path::DEPLOYMENT, target)];
        calls.extend(config_map_calls(|_| {}));
        calls.extend(nothing_else());
        calls.push(
            Call::new("PATCH", path::DEPLOYMENT, deployment(3))
                .query("fieldManager=shadowcat.dev%2Fweather")
                .check(|d| {
                    assert!(
                        d["spec"]["template"]["metadata"]["annotations"]["shadowcat.dev/config-hash"]
                            .is_string()
                    )
                }),
        );
        calls.push(pods(listed));
        calls.push(Call::new("PATCH", path::STATUS, answer_proxy()).check(move |s| {
            assert_eq!(is(s, "Injected"), pair(injected.0, injected.1), "{s}");
            assert_eq!(is(s, "Ready"), pair(ready.0, ready.1), "{s}");
            if injected.1 == "PodsWithoutSidecar" {
                let message = condition(s, "Injected")["message"].as_str().unwrap();
                assert_eq!(
                    message,
                    "2 pod(s) run without the sidecar; fix the cause, then delete them to get it: \
                     b (the webhook never saw it: unreachable under failurePolicy Ignore); \
                     c (container \"server\" uses port 8080)"
                );
                assert_eq!(s["status"]["podsWithoutSidecar"], 2);
            }
        }));
        let (ctx, server) = scenario(calls);
        reconcile(proxy.0.clone().into(), ctx).await.unwrap();
        verify(server).await;
    }
}

#[tokio::test]
async fn memory_store_with_several_replicas_is_a_warning_condition() {
    let proxy = Proxy::new();
    let mut calls = vec![Call::new("GET", path::DEPLOYMENT, deployment(3))];
    calls.extend(config_map_calls(|_| {}));
    calls.extend(nothing_else());
    calls.push(injected_pods(&hash(&proxy.0)));
    calls.push(Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
        assert_eq!(is(s, "SessionsShared"), pair("False", "MemoryStoreWithReplicas"));
        let message = condition(s, "SessionsShared")["message"].as_str().unwrap();
        assert!(
            message.contains("3 replicas") && message.contains("redis"),
            "{message}"
        );
    }));
    let (ctx, server) = scenario(calls);
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn target_missing_is_a_condition_and_the_config_still_lands() {
    let mut calls = vec![Call::new("GET", path::DEPLOYMENT, not_found()).status(404)];
    calls.extend(config_map_calls(|_| {}));
    calls.extend(nothing_else());
    calls.push(pods(vec![]));
    calls.push(
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "TargetNotFound")),
    );
    calls.push(Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
        assert_eq!(is(s, "Injected"), pair("False", "TargetNotFound"));
    }));
    let (ctx, server) = scenario(calls);
    let action = reconcile(Proxy::new().arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    verify(server).await;
}

#[tokio::test]
async fn a_pod_template_without_the_label_is_named_in_the_condition() {
    let mut calls = vec![Call::new("GET", path::DEPLOYMENT, deployment_labelled(3, None))];
    calls.extend(config_map_calls(|_| {}));
    calls.extend(nothing_else());
    calls.push(pods(vec![]));
    calls.push(Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
        assert_eq!(is(s, "Injected"), pair("False", "NotLabelled"));
        let message = condition(s, "Injected")["message"].as_str().unwrap();
        assert!(message.contains("shadowcat.dev/proxy=weather"), "{message}");
        assert_eq!(is(s, "Ready").0, "False");
    }));
    let (ctx, server) = scenario(calls);
    reconcile(Proxy::new().arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn redis_store_makes_a_peer_secret_once() {
    let proxy = Proxy::new().redis();
    let mut calls = vec![
        Call::new("GET", path::REDIS_SECRET, secret("redis", "url")),
        Call::new("GET", path::PEER_SECRET, not_found()).status(404),
        Call::new("POST", path::SECRETS, secret("weather-shadowcat-peer", "secret")).check(|s| {
            assert_eq!(s["metadata"]["name"], "weather-shadowcat-peer");
            assert_eq!(s["stringData"]["secret"].as_str().unwrap().len(), 64);
            assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "McpProxy");
        }),
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
    ];
    calls.extend(config_map_calls(|cm| {
        let config = cm["data"]["config.yaml"].as_str().unwrap();
        assert!(config.contains("peerSecretFile"), "{config}");
        assert!(!config.contains("redis://"), "the URL stays in its Secret");
    }));
    calls.extend(nothing_else());
    calls.push(injected_pods(&hash(&proxy.0)));
    calls.push(Call::new("PATCH", path::STATUS, answer_proxy()));
    let (ctx, server) = scenario(calls);
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn auth_checks_its_secrets_and_the_config_names_files_not_values() {
    let proxy = Proxy::new().auth().introspection();
    let mut calls = vec![
        Call::new(
            "GET",
            path::CA_SECRET,
            secret_holding("corp-ca", "root-bundle.pem", "-----BEGIN CERTIFICATE-----"),
        ),
        Call::new(
            "GET",
            path::INTROSPECTION_SECRET,
            secret_holding("introspection-client", "idp-secret", "1ntrospection-5ecret"),
        ),
        Call::new(
            "GET",
            path::CREDENTIAL_SECRET,
            secret_holding("mcp-credential", "api-key", "k-5ecret-upstream"),
        ),
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
    ];
    calls.extend(config_map_calls(|cm| {
        let config = cm["data"]["config.yaml"].as_str().unwrap();
        for line in [
            "issuer: https://auth.example.com/realms/mcp",
            "caFile: /etc/shadowcat-auth-ca/ca.crt",
            "valueFile: /etc/shadowcat-upstream-credential/value",
            "clientSecretFile: /etc/shadowcat-introspection/client-secret",
        ] {
            assert!(config.contains(line), "{line} not in {config}");
        }
        for secret in ["BEGIN CERTIFICATE", "k-5ecret-upstream", "1ntrospection-5ecret"] {
            assert!(!config.contains(secret), "{secret} in the ConfigMap: {config}");
        }
    }));
    calls.extend(nothing_else());
    calls.push(injected_pods(&hash(&proxy.0)));
    calls.push(
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| assert_eq!(is(s, "Injected").0, "True")),
    );
    let (ctx, server) = scenario(calls);
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn a_secret_without_its_key_is_a_condition_and_nothing_is_applied() {
    let (ctx, server) = scenario(vec![
        Call::new("GET", path::CA_SECRET, secret_holding("corp-ca", "ca.crt", "x")),
        Call::new("POST", path::EVENTS, json!({})).check(|e| {
            assert_eq!(e["reason"], "SecretMissing");
            assert!(e["note"].as_str().unwrap().contains("root-bundle.pem"), "{e}");
        }),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(is(s, "ConfigValid").0, "True");
            assert_eq!(is(s, "Injected").1, "SecretMissing");
        }),
    ]);
    let action = reconcile(Proxy::new().auth().arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    verify(server).await;
}

/// `status.configHash` names what the ConfigMap holds (the webhook stamps
/// pods with it): a reconcile that stops before writing the ConfigMap keeps
/// the previous one.
#[tokio::test]
async fn the_config_hash_moves_only_with_the_config_map() {
    let mut proxy = Proxy::new().redis();
    proxy.0.status = Some(shadowcat_crds::McpProxyStatus {
        config_hash: Some("0ld".into()),
        ..Default::default()
    });
    let (ctx, server) = scenario(vec![
        Call::new("GET", path::REDIS_SECRET, not_found()).status(404),
        Call::new("POST", path::EVENTS, json!({})),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(s["status"]["configHash"], "0ld", "the ConfigMap was not written");
        }),
    ]);
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

/// Status is written under the operator's manager, forced (it is the
/// operator's alone), as one condition of each type.
#[tokio::test]
async fn status_has_one_condition_of_each_type() {
    let proxy = Proxy::new();
    let mut calls = vec![Call::new("GET", path::DEPLOYMENT, deployment(3))];
    calls.extend(config_map_calls(|_| {}));
    calls.extend(nothing_else());
    calls.push(injected_pods(&hash(&proxy.0)));
    calls.push(
        Call::new("PATCH", path::STATUS, answer_proxy())
            .query("force=true")
            .check(|s| {
                let mut types: Vec<&str> = s["status"]["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["type"].as_str().unwrap())
                    .collect();
                types.sort_unstable();
                assert_eq!(
                    types,
                    [
                        "Accepted",
                        "ConfigValid",
                        "Injected",
                        "PolicyValid",
                        "Ready",
                        "SessionsShared"
                    ]
                );
            }),
    );
    let (ctx, server) = scenario(calls);
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn invalid_spec_is_a_condition_and_an_event_not_a_crash_loop() {
    let (ctx, server) = scenario(vec![
        Call::new("POST", path::EVENTS, json!({})).check(|e| {
            assert_eq!(e["reason"], "InvalidSpec");
            assert!(
                e["note"].as_str().unwrap().contains("sessionIdleTimeout"),
                "the message names the key"
            );
        }),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(condition(s, "ConfigValid")["status"], "False");
        }),
    ]);
    let action = reconcile(Proxy::new().invalid().arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    verify(server).await;
}

#[tokio::test]
async fn redis_secret_missing_is_a_condition_and_an_event() {
    let (ctx, server) = scenario(vec![
        Call::new("GET", path::REDIS_SECRET, not_found()).status(404),
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "SecretMissing")),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(condition(s, "Injected")["reason"], "SecretMissing");
        }),
    ]);
    let action = reconcile(Proxy::new().redis().arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    verify(server).await;
}

/// The API server's CEL rule says the same; this is for a spec it did not
/// check. Nothing is read or applied, and the message names the spec's field.
#[tokio::test]
async fn upstream_credential_with_both_or_neither_source_is_an_invalid_spec() {
    for proxy in [
        Proxy::new().auth().both_credential_sources(),
        Proxy::new().auth().no_credential_source(),
    ] {
        let (ctx, server) = scenario(vec![
            Call::new("POST", path::EVENTS, json!({})).check(|e| {
                assert_eq!(e["reason"], "InvalidSpec");
                let note = e["note"].as_str().unwrap();
                assert!(note.contains("spec.auth.upstreamCredential"), "{e}");
                assert!(
                    note.contains("secretRef") && note.contains("tokenExchange"),
                    "{e}"
                );
            }),
            Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
                let valid = condition(s, "ConfigValid");
                assert_eq!(
                    (valid["status"].as_str(), valid["reason"].as_str()),
                    (Some("False"), Some("InvalidSpec"))
                );
            }),
        ]);
        let action = reconcile(proxy.arc(), ctx).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(300)));
        verify(server).await;
    }
}

#[tokio::test]
async fn auth_resource_that_is_no_url_is_an_invalid_spec() {
    let (ctx, server) = scenario(vec![
        Call::new("POST", path::EVENTS, json!({})).check(|e| {
            assert_eq!(e["reason"], "InvalidSpec");
            assert!(e["note"].as_str().unwrap().contains("auth.resource"), "{e}");
        }),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            let valid = condition(s, "ConfigValid");
            assert_eq!(valid["status"], "False");
            assert!(valid["message"].as_str().unwrap().contains("mcp.example.com/mcp"));
        }),
    ]);
    let proxy = Proxy::new().auth().resource("mcp.example.com/mcp");
    let action = reconcile(proxy.arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    verify(server).await;
}

/// Like an invalid spec: an event, a condition that says where the error
/// is, and nothing read or applied, so the ConfigMap keeps the policy the
/// sidecars run (the scenario ends with the status; any further call would
/// fail the reconcile).
#[tokio::test]
async fn invalid_policy_is_a_condition_naming_where_and_nothing_is_applied() {
    let at = "policy.rules[1].when at line 1, column ";
    let (ctx, server) = scenario(vec![
        Call::new("POST", path::EVENTS, json!({})).check(move |e| {
            assert_eq!(e["reason"], "InvalidPolicy");
            assert!(e["note"].as_str().unwrap().starts_with(at), "{e}");
        }),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(move |s| {
            let policy = condition(s, "PolicyValid");
            assert_eq!(
                (policy["status"].as_str(), policy["reason"].as_str()),
                (Some("False"), Some("InvalidPolicy"))
            );
            let message = policy["message"].as_str().unwrap();
            assert!(message.starts_with(at), "{message}");
            let column = message[at.len()..].split(':').next().unwrap();
            assert!(column.parse::<usize>().unwrap() > 1, "{message}");
            let valid = condition(s, "ConfigValid");
            assert_eq!(
                (valid["status"].as_str(), valid["reason"].as_str()),
                (Some("False"), Some("InvalidPolicy"))
            );
            assert_eq!(valid["message"], policy["message"]);
            assert!(s["status"].get("configHash").is_none(), "{s}");
        }),
    ]);
    let proxy = Proxy::new().redis().policy().invalid_policy();
    let action = reconcile(proxy.arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    verify(server).await;
}

#[tokio::test]
async fn invalid_spec_and_invalid_policy_are_both_reported() {
    let (ctx, server) = scenario(vec![
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "InvalidSpec")),
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "InvalidPolicy")),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            let valid = condition(s, "ConfigValid");
            assert_eq!(valid["reason"], "InvalidSpec");
            assert!(valid["message"].as_str().unwrap().contains("sessionIdleTimeout"));
            assert_eq!(condition(s, "PolicyValid")["reason"], "InvalidPolicy");
        }),
    ]);
    let proxy = Proxy::new().invalid().policy().invalid_policy();
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

#[test]
fn a_target_workload_maps_back_to_the_proxies_that_name_it() {
    use kube::runtime::reflector::{ObjectRef, store};
    use kube::runtime::watcher;
    use shadowcat_crds::{McpProxy, TargetKind};

    let (reader, mut writer) = store::<McpProxy>();
    let mut other = Proxy::new().0;
    other.metadata.name = Some("other".into());
    other.spec.target_ref.name = "another-server".into();
    let mut stateful = Proxy::new().0;
    stateful.metadata.name = Some("stateful".into());
    stateful.spec.target_ref.kind = TargetKind::StatefulSet;
    for proxy in [Proxy::new().0, other, stateful] {
        writer.apply_watcher_event(&watcher::Event::Apply(proxy));
    }
    let hits = super::proxies_targeting(
        &reader,
        TargetKind::Deployment,
        Some("tools".into()),
        "mcp-server".into(),
    );
    assert_eq!(hits, vec![ObjectRef::new("weather").within("tools")]);
    assert!(
        super::proxies_targeting(
            &reader,
            TargetKind::Deployment,
            Some("elsewhere".into()),
            "mcp-server".into()
        )
        .is_empty()
    );
    let hits = super::proxies_targeting(
        &reader,
        TargetKind::StatefulSet,
        Some("tools".into()),
        "mcp-server".into(),
    );
    assert_eq!(hits, vec![ObjectRef::new("stateful").within("tools")]);
}

mod on_a_cluster;

mod refusals;

mod rollout;

mod upgrade;

//! The reconciler against a fake API server, one scenario per situation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::{Value, json};
use shadowcat_crds::SidecarConfig;

use super::reconcile;
use crate::fixtures::{Call, Proxy, deployment, not_found, path, scenario, secret, secret_holding, verify};

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn answer_proxy() -> Value {
    serde_json::to_value(Proxy::new().0).unwrap()
}

/// The calls of a successful apply on a memory-store McpProxy; the config
/// hash each deployment patch carried goes into `hashes`.
fn apply_calls(ready: i32, hashes: Arc<Mutex<Vec<String>>>) -> Vec<Call> {
    apply_calls_capturing(ready, hashes, Arc::default())
}

/// The same, the config each ConfigMap patch carried going into `configs`.
fn apply_calls_capturing(
    ready: i32,
    hashes: Arc<Mutex<Vec<String>>>,
    configs: Arc<Mutex<Vec<String>>>,
) -> Vec<Call> {
    vec![
        Call::new("PATCH", path::CONFIG_MAP, json!({})).check(move |cm| {
            let config = cm["data"]["config.yaml"].as_str().unwrap();
            assert!(config.contains("upstream: http://127.0.0.1:3000/mcp"), "{config}");
            assert_eq!(cm["metadata"]["ownerReferences"][0]["kind"], "McpProxy");
            configs.lock().unwrap().push(config.to_owned());
        }),
        Call::new("GET", path::DEPLOYMENT, deployment(ready)),
        Call::new("PATCH", path::DEPLOYMENT, deployment(ready)).check(move |d| {
            let template = &d["spec"]["template"];
            assert_eq!(template["spec"]["containers"][0]["name"], "shadowcat");
            assert_eq!(
                template["spec"]["containers"].as_array().unwrap().len(),
                1,
                "only what Shadowcat owns"
            );
            let hash = template["metadata"]["annotations"]["shadowcat.dev/config-hash"]
                .as_str()
                .unwrap();
            hashes.lock().unwrap().push(hash.to_owned());
        }),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(move |s| {
            assert_eq!(s["status"]["observedGeneration"], 1);
            assert_eq!(condition(s, "ConfigValid")["status"], "True");
            assert_eq!(condition(s, "PolicyValid")["status"], "True");
            assert_eq!(condition(s, "Injected")["status"], "True");
            let ready_condition = condition(s, "Ready");
            assert_eq!(
                ready_condition["status"],
                if ready == 3 { "True" } else { "False" }
            );
            assert_eq!(s["status"]["readyReplicas"], ready);
            assert!(s["status"]["configHash"].is_string());
        }),
    ]
}

#[tokio::test]
async fn finalizer_is_added_before_anything_else() {
    let (ctx, server) = scenario(vec![Call::new("PATCH", path::PROXY, answer_proxy()).check(
        |patch| {
            let ops = patch.as_array().expect("a JSON patch");
            assert!(
                ops.iter()
                    .any(|op| op["op"] == "add" && op["value"].to_string().contains("shadowcat.dev/cleanup"))
            );
        },
    )]);
    let action = reconcile(Proxy::new().fresh().arc(), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    verify(server).await;
}

#[tokio::test]
async fn create_applies_config_then_sidecar_then_status() {
    let hashes = Arc::new(Mutex::new(Vec::new()));
    let (ctx, server) = scenario(apply_calls(0, hashes.clone()));
    let action = reconcile(Proxy::new().arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    verify(server).await;
    assert_eq!(hashes.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn reconcile_again_applies_the_same_objects() {
    let hashes = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..2 {
        let (ctx, server) = scenario(apply_calls(3, hashes.clone()));
        reconcile(Proxy::new().arc(), ctx).await.unwrap();
        verify(server).await;
    }
    let hashes = hashes.lock().unwrap();
    assert_eq!(hashes[0], hashes[1], "no change, no roll");
}

#[tokio::test]
async fn spec_change_rolls_the_config_hash() {
    let hashes = Arc::new(Mutex::new(Vec::new()));
    for retention in ["10m", "20m"] {
        let (ctx, server) = scenario(apply_calls(3, hashes.clone()));
        reconcile(Proxy::new().retention(retention).arc(), ctx)
            .await
            .unwrap();
        verify(server).await;
    }
    let hashes = hashes.lock().unwrap();
    assert_ne!(hashes[0], hashes[1]);
}

#[tokio::test]
async fn sidecar_removed_by_hand_comes_back() {
    // The target as a user left it: no sidecar in the template (deployment()
    // has none). The same apply puts it back, and the pods are ready.
    let hashes = Arc::new(Mutex::new(Vec::new()));
    let (ctx, server) = scenario(apply_calls(3, hashes));
    reconcile(Proxy::new().arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn target_missing_is_a_condition_and_an_event_with_backoff() {
    let (ctx, server) = scenario(vec![
        Call::new("PATCH", path::CONFIG_MAP, json!({})),
        Call::new("GET", path::DEPLOYMENT, not_found()).status(404),
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "TargetNotFound")),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            let injected = condition(s, "Injected");
            assert_eq!(
                (injected["status"].as_str(), injected["reason"].as_str()),
                (Some("False"), Some("TargetNotFound"))
            );
        }),
    ]);
    let action = reconcile(Proxy::new().arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
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

#[tokio::test]
async fn redis_store_makes_a_peer_secret_and_wires_the_url_from_its_secret() {
    let (ctx, server) = scenario(vec![
        Call::new("GET", path::REDIS_SECRET, secret("redis", "url")),
        Call::new("GET", path::PEER_SECRET, not_found()).status(404),
        Call::new("POST", path::SECRETS, secret("weather-shadowcat-peer", "secret")).check(|s| {
            assert_eq!(s["metadata"]["name"], "weather-shadowcat-peer");
            assert_eq!(s["stringData"]["secret"].as_str().unwrap().len(), 64);
            assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "McpProxy");
        }),
        Call::new("PATCH", path::CONFIG_MAP, json!({})).check(|cm| {
            let config = cm["data"]["config.yaml"].as_str().unwrap();
            assert!(config.contains("peerSecretFile"), "{config}");
            assert!(!config.contains("redis://"), "the URL stays in its Secret");
        }),
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
        Call::new("PATCH", path::DEPLOYMENT, deployment(3)).check(|d| {
            let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap();
            let store = env.iter().find(|e| e["name"] == "SHADOWCAT_STORE").unwrap();
            assert_eq!(store["valueFrom"]["secretKeyRef"]["name"], "redis");
        }),
        Call::new("PATCH", path::STATUS, answer_proxy()),
    ]);
    reconcile(Proxy::new().redis().arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn auth_checks_its_secrets_then_mounts_them_without_copying_them() {
    let (ctx, server) = scenario(vec![
        Call::new(
            "GET",
            path::CA_SECRET,
            secret_holding("corp-ca", "root-bundle.pem", "-----BEGIN CERTIFICATE-----"),
        ),
        Call::new(
            "GET",
            path::CREDENTIAL_SECRET,
            secret_holding("mcp-credential", "api-key", "k-5ecret-upstream"),
        ),
        Call::new("PATCH", path::CONFIG_MAP, json!({})).check(|cm| {
            let config = cm["data"]["config.yaml"].as_str().unwrap();
            assert!(
                config.contains("issuer: https://auth.example.com/realms/mcp"),
                "{config}"
            );
            assert!(
                config.contains("caFile: /etc/shadowcat-auth-ca/ca.crt"),
                "{config}"
            );
            assert!(
                config.contains("valueFile: /etc/shadowcat-upstream-credential/value"),
                "{config}"
            );
            for secret in [
                "BEGIN CERTIFICATE",
                "k-5ecret-upstream",
                "corp-ca",
                "mcp-credential",
            ] {
                assert!(!config.contains(secret), "{secret} in the ConfigMap: {config}");
            }
        }),
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
        Call::new("PATCH", path::DEPLOYMENT, deployment(3)).check(|d| {
            let pod = &d["spec"]["template"]["spec"];
            let volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "shadowcat-upstream-credential")
                .unwrap();
            assert_eq!(volume["secret"]["secretName"], "mcp-credential");
            assert_eq!(
                volume["secret"]["items"],
                json!([{"key": "api-key", "path": "value"}])
            );
            let mounts = pod["containers"][0]["volumeMounts"].to_string();
            assert!(mounts.contains("/etc/shadowcat-auth-ca"), "{mounts}");
            assert!(!d.to_string().contains("k-5ecret-upstream"));
        }),
        Call::new("PATCH", path::STATUS, answer_proxy())
            .check(|s| assert_eq!(condition(s, "Injected")["status"], "True")),
    ]);
    reconcile(Proxy::new().auth().arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn introspection_and_token_exchange_check_their_client_secrets_then_mount_them() {
    let (ctx, server) = scenario(vec![
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
            path::EXCHANGE_SECRET,
            secret_holding("exchange-client", "exchange-secret", "exch4nge-5ecret"),
        ),
        Call::new("PATCH", path::CONFIG_MAP, json!({})).check(|cm| {
            let config = cm["data"]["config.yaml"].as_str().unwrap();
            for line in [
                "clientSecretFile: /etc/shadowcat-introspection/client-secret",
                "clientSecretFile: /etc/shadowcat-token-exchange/client-secret",
                "audience: https://tools.internal/mcp",
            ] {
                assert!(config.contains(line), "{line} not in {config}");
            }
            assert!(!config.contains("valueFile"), "{config}");
            for secret in [
                "1ntrospection-5ecret",
                "exch4nge-5ecret",
                "introspection-client",
                "exchange-client",
            ] {
                assert!(!config.contains(secret), "{secret} in the ConfigMap: {config}");
            }
        }),
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
        Call::new("PATCH", path::DEPLOYMENT, deployment(3)).check(|d| {
            let pod = &d["spec"]["template"]["spec"];
            let volumes = pod["volumes"].as_array().unwrap();
            for (name, secret, key) in [
                ("shadowcat-introspection", "introspection-client", "idp-secret"),
                ("shadowcat-token-exchange", "exchange-client", "exchange-secret"),
            ] {
                let volume = volumes.iter().find(|v| v["name"] == name).unwrap();
                assert_eq!(volume["secret"]["secretName"], secret);
                assert_eq!(
                    volume["secret"]["items"],
                    json!([{"key": key, "path": "client-secret"}])
                );
            }
            assert!(
                volumes
                    .iter()
                    .all(|v| v["name"] != "shadowcat-upstream-credential"),
                "{volumes:?}"
            );
            let mounts = pod["containers"][0]["volumeMounts"].to_string();
            for dir in ["/etc/shadowcat-introspection", "/etc/shadowcat-token-exchange"] {
                assert!(mounts.contains(dir), "{mounts}");
            }
            assert!(!d.to_string().contains("5ecret"));
        }),
        Call::new("PATCH", path::STATUS, answer_proxy())
            .check(|s| assert_eq!(condition(s, "Injected")["status"], "True")),
    ]);
    let proxy = Proxy::new().auth().introspection().token_exchange();
    reconcile(proxy.arc(), ctx).await.unwrap();
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
async fn auth_secret_without_its_key_is_a_condition_and_nothing_is_applied() {
    let (ctx, server) = scenario(vec![
        Call::new("GET", path::CA_SECRET, secret_holding("corp-ca", "ca.crt", "x")),
        Call::new("POST", path::EVENTS, json!({})).check(|e| {
            assert_eq!(e["reason"], "SecretMissing");
            assert!(e["note"].as_str().unwrap().contains("root-bundle.pem"), "{e}");
        }),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(condition(s, "ConfigValid")["status"], "True");
            assert_eq!(condition(s, "Injected")["reason"], "SecretMissing");
        }),
    ]);
    let action = reconcile(Proxy::new().auth().arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    verify(server).await;
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

#[tokio::test]
async fn policy_lands_as_written_in_the_config_map_and_is_valid() {
    let proxy = Proxy::new().policy();
    let written = proxy.0.spec.policy.clone().unwrap();
    let (ctx, server) = scenario(vec![
        Call::new("PATCH", path::CONFIG_MAP, json!({})).check(move |cm| {
            let text = cm["data"]["config.yaml"].as_str().unwrap();
            let config = SidecarConfig::from_yaml(text).unwrap();
            assert_eq!(config.policy.as_ref(), Some(&written), "{text}");
            assert!(text.contains("- admin_*"), "{text}");
        }),
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
        Call::new("PATCH", path::DEPLOYMENT, deployment(3)),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            let policy = condition(s, "PolicyValid");
            assert_eq!(
                (policy["status"].as_str(), policy["reason"].as_str()),
                (Some("True"), Some("Valid"))
            );
            assert_eq!(condition(s, "ConfigValid")["status"], "True");
            assert_eq!(condition(s, "Injected")["status"], "True");
        }),
    ]);
    let action = reconcile(proxy.arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    verify(server).await;
}

#[tokio::test]
async fn no_policy_is_valid_too() {
    let (ctx, server) = scenario(vec![
        Call::new("PATCH", path::CONFIG_MAP, json!({})).check(|cm| {
            let config = cm["data"]["config.yaml"].as_str().unwrap();
            assert!(!config.contains("policy"), "{config}");
        }),
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
        Call::new("PATCH", path::DEPLOYMENT, deployment(3)),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            let policy = condition(s, "PolicyValid");
            assert_eq!(
                (policy["status"].as_str(), policy["reason"].as_str()),
                (Some("True"), Some("NoPolicy"))
            );
        }),
    ]);
    reconcile(Proxy::new().arc(), ctx).await.unwrap();
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

/// The sidecar reloads `policy` from the mounted ConfigMap: a new policy
/// goes into the ConfigMap, and the pod template's hash stays, so the pods
/// do not roll.
#[tokio::test]
async fn policy_change_updates_the_config_map_without_rolling_the_pods() {
    let hashes = Arc::new(Mutex::new(Vec::new()));
    let configs = Arc::new(Mutex::new(Vec::new()));
    for proxy in [
        Proxy::new(),
        Proxy::new().policy(),
        Proxy::new().policy().policy_tool("delete_repo"),
    ] {
        let (ctx, server) = scenario(apply_calls_capturing(3, hashes.clone(), configs.clone()));
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
}

#[tokio::test]
async fn deletion_releases_the_sidecar_then_the_finalizer() {
    let (ctx, server) = scenario(vec![
        Call::new("PATCH", path::DEPLOYMENT, deployment(3)).check(|d| {
            assert_eq!(d["metadata"]["name"], "mcp-server");
            assert!(
                d.get("spec").is_none(),
                "an empty apply releases every field Shadowcat owned: {d}"
            );
        }),
        Call::new("PATCH", path::PROXY, answer_proxy()).check(|patch| {
            let ops = patch.as_array().expect("a JSON patch");
            assert!(ops.iter().any(|op| op["op"] == "remove"), "{patch}");
        }),
    ]);
    let action = reconcile(Proxy::new().deleting().arc(), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
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

//! Conflicts, objects that are not ours, and specs refused before anything
//! is applied: a condition with the reason, an Event, nothing written.

use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::json;

use super::*;
use crate::fixtures::{Call, Proxy, deployment, list, not_found, path, scenario, scenario_with, verify};
use crate::render::Defaults;

/// Two McpProxies name one Deployment; its pods' label names `weather`, so
/// the other is a conflict: an Event, a condition, and nothing applied.
#[tokio::test]
async fn two_mcpproxies_on_one_target_the_label_decides_and_the_other_is_a_conflict() {
    let (ctx, server) = scenario(vec![
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "Conflict")),
        Call::new(
            "PATCH",
            "/apis/shadowcat.dev/v1alpha1/namespaces/tools/mcpproxies/second/status",
            answer_proxy(),
        )
        .check(|s| {
            assert_eq!(is(s, "Accepted"), pair("False", "Conflict"));
            let message = condition(s, "Accepted")["message"].as_str().unwrap();
            assert!(message.contains("belong to McpProxy weather"), "{message}");
        }),
    ]);
    let action = reconcile(Proxy::named("second").arc(), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    verify(server).await;
}

#[tokio::test]
async fn an_existing_service_it_did_not_create_is_never_taken_over() {
    let theirs = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "weather", "namespace": "tools"}, "spec": {"ports": [{"port": 80}]}});
    let mut calls = vec![Call::new("GET", path::DEPLOYMENT, deployment(3))];
    calls.extend(config_map_calls(|_| {}));
    calls.extend([
        Call::new("GET", path::SERVICES, list("ServiceList", vec![])),
        Call::new("GET", path::SERVICE, theirs),
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "ServiceNotOwned")),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(is(s, "Accepted"), pair("False", "ServiceNotOwned"));
        }),
    ]);
    let (ctx, server) = scenario(calls);
    reconcile(Proxy::new().service().arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn an_existing_config_map_it_did_not_create_is_never_taken_over() {
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "weather-shadowcat", "namespace": "tools", "ownerReferences": [{"apiVersion": "v1", "kind": "Other", "name": "x", "uid": "not-ours"}]}});
    let (ctx, server) = scenario(vec![
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
        Call::new("GET", path::CONFIG_MAPS, list("ConfigMapList", vec![])),
        Call::new("GET", path::CONFIG_MAP, theirs),
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "ConfigMapNotOwned")),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(is(s, "Accepted"), pair("False", "ConfigMapNotOwned"));
        }),
    ]);
    reconcile(Proxy::new().arc(), ctx).await.unwrap();
    verify(server).await;
}

/// `spec.service` removed: the Service it made goes; one of the same label
/// that someone else made stays.
#[tokio::test]
async fn a_service_no_longer_asked_for_is_deleted_if_it_is_ours() {
    let ours = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "weather", "namespace": "tools", "labels": {"shadowcat.dev/proxy": "weather"}, "ownerReferences": [{"apiVersion": "shadowcat.dev/v1alpha1", "kind": "McpProxy", "name": "weather", "uid": "uid-1"}]}});
    let theirs = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lookalike", "namespace": "tools", "labels": {"shadowcat.dev/proxy": "weather"}}});
    let proxy = Proxy::new();
    let mut calls = vec![Call::new("GET", path::DEPLOYMENT, deployment(3))];
    calls.extend(config_map_calls(|_| {}));
    calls.extend([
        Call::new("GET", path::SERVICES, list("ServiceList", vec![ours, theirs])),
        Call::new(
            "DELETE",
            path::SERVICE,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        Call::new("GET", path::NETWORK_POLICIES, list("NetworkPolicyList", vec![])),
        injected_pods(&hash(&proxy.0)),
        Call::new("PATCH", path::STATUS, answer_proxy()),
    ]);
    let (ctx, server) = scenario(calls);
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn a_service_and_a_network_policy_when_asked_for() {
    let proxy = Proxy::new().redis().service().network_policy();
    let mut calls = vec![
        Call::new("GET", path::REDIS_SECRET, secret("redis", "url")),
        Call::new(
            "GET",
            path::PEER_SECRET,
            secret("weather-shadowcat-peer", "secret"),
        ),
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
    ];
    calls.extend(config_map_calls(|_| {}));
    calls.extend([
        Call::new("GET", path::SERVICES, list("ServiceList", vec![])),
        Call::new("GET", path::SERVICE, not_found()).status(404),
        Call::new("PATCH", path::SERVICE, json!({})).check(|svc| {
            assert_eq!(svc["spec"]["selector"], json!({"shadowcat.dev/proxy": "weather"}));
            assert_eq!(svc["spec"]["ports"][0]["targetPort"], "shadowcat");
        }),
        Call::new("GET", path::NETWORK_POLICIES, list("NetworkPolicyList", vec![])),
        Call::new("GET", path::NETWORK_POLICY, not_found()).status(404),
        Call::new("PATCH", path::NETWORK_POLICY, json!({})).check(|np| {
            assert_eq!(
                np["spec"]["podSelector"]["matchLabels"],
                json!({"shadowcat.dev/proxy": "weather"})
            );
            assert_eq!(np["spec"]["ingress"].as_array().unwrap().len(), 3);
        }),
        injected_pods(&hash(&proxy.0)),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(is(s, "SessionsShared"), pair("True", "Shared"));
            assert_eq!(is(s, "Ready"), pair("True", "Ready"));
        }),
    ]);
    let (ctx, server) = scenario(calls);
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

/// The API refuses the ConfigMap (here: too large): its message reaches
/// the condition and an Event, not only a log line.
#[tokio::test]
async fn an_api_rejection_is_a_condition_with_the_servers_message() {
    let message = "ConfigMap \"weather-shadowcat\" is invalid: []: Too long: must have at most 1048576 bytes";
    let (ctx, server) = scenario(vec![
        Call::new("GET", path::DEPLOYMENT, deployment(3)),
        Call::new("GET", path::CONFIG_MAPS, list("ConfigMapList", vec![])),
        Call::new("GET", path::CONFIG_MAP, not_found()).status(404),
        Call::new("PATCH", path::CONFIG_MAP, status_error(422, "Invalid", message)).status(422),
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "ConfigMapRejected")),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(move |s| {
            assert_eq!(is(s, "Accepted"), pair("False", "ConfigMapRejected"));
            let said = condition(s, "Accepted")["message"].as_str().unwrap();
            assert!(
                said.contains("Too long: must have at most 1048576 bytes"),
                "{said}"
            );
        }),
    ]);
    reconcile(Proxy::new().arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn an_image_off_the_allow_list_is_refused_and_nothing_is_applied() {
    let defaults = Defaults {
        allowed_images: vec!["shadowcat:".into()],
        ..Defaults::default()
    };
    let (ctx, server) = scenario_with(
        vec![
            Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "ImageNotAllowed")),
            Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
                assert_eq!(is(s, "Accepted"), pair("False", "ImageNotAllowed"));
                let message = condition(s, "Accepted")["message"].as_str().unwrap();
                assert!(message.contains("registry.example/shadowcat:1.2.3"), "{message}");
            }),
        ],
        defaults,
    );
    reconcile(Proxy::new().overrides().arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn clashing_ports_are_an_invalid_spec() {
    let mut proxy = Proxy::new();
    proxy.0.spec.sidecar.admin_port = Some(3000);
    let (ctx, server) = scenario(vec![
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "InvalidSpec")),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(is(s, "ConfigValid"), pair("False", "InvalidSpec"));
            let message = condition(s, "ConfigValid")["message"].as_str().unwrap();
            assert_eq!(
                message,
                "sidecar.adminPort and upstream.port are both 3000: they must differ"
            );
        }),
    ]);
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

/// An env name the API server would refuse in every pod, or one the
/// operator sets itself, is an invalid spec, never patched into pods.
#[tokio::test]
async fn a_sidecar_env_name_that_would_break_every_pod_is_an_invalid_spec() {
    let mut proxy = Proxy::new();
    proxy.0.spec.sidecar.env.insert("POD_NAME".into(), "mine".into());
    let (ctx, server) = scenario(vec![
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "InvalidSpec")),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(is(s, "ConfigValid"), pair("False", "InvalidSpec"));
            let message = condition(s, "ConfigValid")["message"].as_str().unwrap();
            assert_eq!(message, "sidecar.env may not set POD_NAME: the operator sets it");
        }),
    ]);
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

#[tokio::test]
async fn a_secret_mount_whose_secret_is_missing_is_a_condition() {
    let mut proxy = Proxy::new();
    proxy.0.spec.sidecar.secret_mounts = vec![shadowcat_crds::SecretMount {
        secret_name: "hook-key".into(),
        mount_path: "/etc/hooks".into(),
    }];
    let (ctx, server) = scenario(vec![
        Call::new("GET", "/api/v1/namespaces/tools/secrets/hook-key", not_found()).status(404),
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "SecretMissing")),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(is(s, "Injected"), pair("False", "SecretMissing"));
            assert!(
                condition(s, "Injected")["message"]
                    .as_str()
                    .unwrap()
                    .contains("hook-key not found")
            );
        }),
    ]);
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

//! `rollout: auto`, the release of what was applied into a workload, and
//! deletion: a target gone, moved, or out of reach.

use kube::runtime::controller::Action;
use serde_json::json;

use super::*;
use crate::fixtures::{
    Call, Proxy, deployment, deployment_managed_by, not_found, path, pod, scenario, verify,
};

/// `targetRef` moved from `old-server` to `mcp-server` under `rollout:
/// auto`: the old target's annotation is released (the empty apply under
/// the McpProxy's own field manager), then the new one gets it; status
/// remembers the new one.
#[tokio::test]
async fn a_target_change_releases_the_old_targets_annotation() {
    let old = "/apis/apps/v1/namespaces/tools/deployments/old-server";
    let proxy = Proxy::new().auto_rollout().status(&[], Some("old-server"));
    let current = hash(&proxy.0);
    let mut calls = vec![Call::new("GET", path::DEPLOYMENT, deployment(3))];
    calls.extend(config_map_calls(|_| {}));
    calls.extend(nothing_else());
    calls.extend([
        Call::new(
            "GET",
            old,
            deployment_managed_by(&["kubectl", "shadowcat.dev/weather"]),
        ),
        Call::new("PATCH", old, deployment(3))
            .query("fieldManager=shadowcat.dev%2Fweather")
            .check(|d| {
                assert_eq!(d["metadata"]["name"], "old-server");
                assert!(
                    d.get("spec").is_none(),
                    "the empty apply releases the annotation: {d}"
                );
            }),
        Call::new("PATCH", path::DEPLOYMENT, deployment(3))
            .query("fieldManager=shadowcat.dev%2Fweather")
            .check(move |d| {
                assert_eq!(
                    d["spec"]["template"]["metadata"]["annotations"]["shadowcat.dev/config-hash"],
                    "x".replace('x', &hash(&Proxy::new().auto_rollout().0))
                );
                assert_eq!(
                    d["spec"].as_object().unwrap().len(),
                    1,
                    "the annotation alone: {d}"
                );
            }),
        injected_pods(&current),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(
                s["status"]["rolloutTarget"],
                json!({"kind": "Deployment", "name": "mcp-server"})
            );
        }),
    ]);
    let (ctx, server) = scenario(calls);
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

/// Another field manager owns the annotation (a second McpProxy with
/// `rollout: auto` on the same workload, or a tool): a 409, never forced.
#[tokio::test]
async fn a_rollout_annotation_owned_by_another_manager_is_a_conflict_not_taken() {
    let mut calls = vec![Call::new("GET", path::DEPLOYMENT, deployment(3))];
    calls.extend(config_map_calls(|_| {}));
    calls.extend(nothing_else());
    calls.extend([
        Call::new(
            "PATCH",
            path::DEPLOYMENT,
            status_error(
                409,
                "Conflict",
                "Apply failed with 1 conflict: conflict with \"argocd-controller\"",
            ),
        )
        .status(409)
        .check(|_| {}),
        Call::new("POST", path::EVENTS, json!({})).check(|e| assert_eq!(e["reason"], "RolloutConflict")),
        Call::new("PATCH", path::STATUS, answer_proxy()).check(|s| {
            assert_eq!(is(s, "Accepted"), pair("False", "RolloutConflict"));
            assert!(
                condition(s, "Accepted")["message"]
                    .as_str()
                    .unwrap()
                    .contains("argocd-controller")
            );
        }),
    ]);
    let (ctx, server) = scenario(calls);
    reconcile(Proxy::new().auto_rollout().arc(), ctx).await.unwrap();
    verify(server).await;
}

/// Deleting an McpProxy never writes a workload that is gone (an apply
/// would create it), so a target deleted first, or never created, cannot
/// hold the finalizer: namespace deletion goes through.
#[tokio::test]
async fn deletion_with_the_target_gone_removes_the_finalizer_at_once() {
    let (ctx, server) = scenario(vec![
        Call::new("GET", path::DEPLOYMENT, not_found()).status(404),
        Call::new("PATCH", path::PROXY, answer_proxy()).check(|patch| {
            let ops = patch.as_array().expect("a JSON patch");
            assert!(ops.iter().any(|op| op["op"] == "remove"), "{patch}");
        }),
    ]);
    let proxy = Proxy::new()
        .auto_rollout()
        .status(&[], Some("mcp-server"))
        .deleting();
    let action = reconcile(proxy.arc(), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    verify(server).await;
}

#[tokio::test]
async fn deletion_releases_the_rollout_annotation_where_the_target_lives() {
    let (ctx, server) = scenario(vec![
        Call::new(
            "GET",
            path::DEPLOYMENT,
            deployment_managed_by(&["shadowcat.dev/weather"]),
        ),
        Call::new("PATCH", path::DEPLOYMENT, deployment(3))
            .query("fieldManager=shadowcat.dev%2Fweather")
            .check(|d| assert!(d.get("spec").is_none(), "{d}")),
        Call::new("PATCH", path::PROXY, answer_proxy()),
    ]);
    let proxy = Proxy::new()
        .auto_rollout()
        .status(&[], Some("mcp-server"))
        .deleting();
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

/// The workload cannot be reached during deletion (its namespace is going
/// and the operator's Role there went first): an Event, and the finalizer
/// goes anyway, so the namespace is not held by it.
#[tokio::test]
async fn a_forbidden_release_does_not_hold_the_finalizer() {
    let (ctx, server) = scenario(vec![
        Call::new(
            "GET",
            path::DEPLOYMENT,
            status_error(403, "Forbidden", "deployments.apps is forbidden"),
        )
        .status(403),
        Call::new("POST", path::EVENTS, json!({})).check(|e| {
            assert_eq!(e["reason"], "ReleaseForbidden");
            assert!(e["note"].as_str().unwrap().contains("forbidden"), "{e}");
        }),
        Call::new("PATCH", path::PROXY, answer_proxy()).check(|patch| {
            let ops = patch.as_array().expect("a JSON patch");
            assert!(ops.iter().any(|op| op["op"] == "remove"), "{patch}");
        }),
    ]);
    let proxy = Proxy::new()
        .auto_rollout()
        .status(&[], Some("mcp-server"))
        .deleting();
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

/// A 403 while applying (through the finalizer's wrapping) is an Event.
#[tokio::test]
async fn a_forbidden_call_is_an_event() {
    let (ctx, server) = scenario(vec![
        Call::new(
            "GET",
            path::DEPLOYMENT,
            status_error(403, "Forbidden", "deployments.apps is forbidden"),
        )
        .status(403),
        Call::new("POST", path::EVENTS, json!({})).check(|e| {
            assert_eq!(e["reason"], "Forbidden");
            assert!(
                e["note"]
                    .as_str()
                    .unwrap()
                    .contains("deployments.apps is forbidden"),
                "{e}"
            );
        }),
    ]);
    let proxy = Proxy::new().auto_rollout();
    assert!(reconcile(proxy.arc(), ctx).await.is_err());
    verify(server).await;
}

#[test]
fn pods_with_the_earlier_versions_sidecar_count_as_injected_not_current() {
    use kube::ResourceExt;
    let mut legacy = pod("legacy", None);
    legacy
        .spec
        .as_mut()
        .unwrap()
        .containers
        .push(k8s_openapi::api::core::v1::Container {
            name: "shadowcat".into(),
            ..Default::default()
        });
    legacy
        .annotations_mut()
        .insert("shadowcat.dev/config-hash".into(), "0ld".into());
    let counts = crate::status::Pods::count(&[legacy, pod("new", Some("h")), pod("bare", None)], "h");
    assert_eq!((counts.injected, counts.current), (2, 1));
    assert_eq!(counts.without, [("bare".to_owned(), None)]);
}

/// The target vanishes between the read and the release: the apply would
/// create it, the API refuses (422), and that counts as released.
#[tokio::test]
async fn a_target_deleted_during_the_release_is_released() {
    let (ctx, server) =
        scenario(vec![
        Call::new("GET", path::DEPLOYMENT, deployment_managed_by(&["shadowcat.dev/weather"])),
        Call::new(
            "PATCH",
            path::DEPLOYMENT,
            status_error(
                422,
                "Invalid",
                "Deployment.apps \"mcp-server\" is invalid: spec.template.spec.containers: Required value",
            ),
        )
        .status(422),
        Call::new("PATCH", path::PROXY, answer_proxy()),
    ]);
    let proxy = Proxy::new()
        .auto_rollout()
        .status(&[], Some("mcp-server"))
        .deleting();
    reconcile(proxy.arc(), ctx).await.unwrap();
    verify(server).await;
}

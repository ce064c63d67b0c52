//! Scenarios on the stateful fake cluster (`fixtures::cluster`): what a
//! sequence of reconciles and deletions leaves behind.

use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use shadowcat_crds::McpProxy;

use super::super::{Context, reconcile};
use crate::fixtures::cluster::Cluster;
use crate::fixtures::{Proxy, deployment, path};
use crate::render::Defaults;

const ANNOTATION: &str = "/spec/template/metadata/annotations/shadowcat.dev~1config-hash";

/// A Deployment with a container, as `kubectl apply` (another field
/// manager) left it.
fn target(cluster: &Cluster, name: &str) {
    let mut d = deployment(3);
    d["metadata"]["name"] = json!(name);
    d["spec"]["template"]["spec"] = json!({"containers": [{"name": "server", "image": "node:22-slim"}]});
    cluster.put(&format!("/apis/apps/v1/namespaces/tools/deployments/{name}"), d);
}

fn proxy_in(cluster: &Cluster) -> Arc<McpProxy> {
    Arc::new(serde_json::from_value(cluster.get(path::PROXY).expect("the McpProxy")).unwrap())
}

async fn reconcile_on(cluster: &Cluster) {
    let ctx = Context::new(cluster.client(), Defaults::default());
    reconcile(proxy_in(cluster), ctx).await.unwrap();
}

fn in_namespace(cluster: &Cluster) -> Vec<String> {
    cluster
        .paths()
        .into_iter()
        .filter(|p| p.contains("/namespaces/tools/"))
        .collect()
}

/// The model itself: an empty apply to a Deployment that is gone
/// creates it, which the API refuses (422), so nothing appears. (The
/// operator's old cleanup did exactly this and held its finalizer.)
#[tokio::test]
async fn the_fake_creates_on_apply_and_refuses_an_empty_deployment() {
    let cluster = Cluster::default();
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(cluster.client(), "tools");
    let empty = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mcp-server"}});
    let error = api
        .patch("mcp-server", &PatchParams::apply("m"), &Patch::Apply(&empty))
        .await
        .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref e) if e.code == 422),
        "{error}"
    );
    assert!(cluster.get(path::DEPLOYMENT).is_none());
}

/// `rollout: auto` on a live target, then the namespace is deleted: the
/// Deployment goes first (it has no finalizer), the McpProxy waits on
/// its finalizer; its cleanup finds the target gone, writes nothing
/// (nothing re-creates the Deployment), and the finalizer goes. The
/// namespace ends empty.
#[tokio::test]
async fn namespace_deletion_is_not_blocked_when_the_target_goes_first() {
    let cluster = Cluster::default();
    target(&cluster, "mcp-server");
    cluster.put(
        path::PROXY,
        serde_json::to_value(Proxy::new().auto_rollout().0).unwrap(),
    );
    reconcile_on(&cluster).await;
    let annotated = cluster.get(path::DEPLOYMENT).unwrap();
    assert!(annotated.pointer(ANNOTATION).is_some(), "{annotated}");
    assert!(cluster.get(path::CONFIG_MAP).is_some());
    assert_eq!(
        cluster.get(path::PROXY).unwrap()["status"]["rolloutTarget"],
        json!({"kind": "Deployment", "name": "mcp-server"})
    );

    cluster.delete_namespace("tools");
    assert_eq!(
        in_namespace(&cluster),
        [path::PROXY],
        "the McpProxy waits on its finalizer"
    );
    reconcile_on(&cluster).await;
    assert_eq!(
        in_namespace(&cluster),
        Vec::<String>::new(),
        "nothing left, nothing re-created"
    );
}

/// Deleting the McpProxy releases its rollout annotation and nothing
/// else: what the workload's own manager set stays; the ConfigMap goes
/// with the McpProxy (owner reference).
#[tokio::test]
async fn deletion_releases_only_the_rollout_annotation() {
    let cluster = Cluster::default();
    target(&cluster, "mcp-server");
    cluster.put(
        path::PROXY,
        serde_json::to_value(Proxy::new().auto_rollout().0).unwrap(),
    );
    reconcile_on(&cluster).await;
    let api: Api<McpProxy> = Api::namespaced(cluster.client(), "tools");
    api.delete("weather", &Default::default()).await.unwrap();
    reconcile_on(&cluster).await;
    assert!(cluster.get(path::PROXY).is_none());
    assert!(
        cluster.get(path::CONFIG_MAP).is_none(),
        "collected with its owner"
    );
    let left = cluster.get(path::DEPLOYMENT).unwrap();
    assert_eq!(left.pointer(ANNOTATION), None, "{left}");
    assert_eq!(left["spec"]["replicas"], 3);
    assert_eq!(
        left["spec"]["template"]["spec"]["containers"][0]["name"],
        "server"
    );
}

/// `targetRef` moves: the old target's annotation is released, the new
/// one gets it, and status says which it is.
#[tokio::test]
async fn a_target_change_moves_the_annotation() {
    let cluster = Cluster::default();
    target(&cluster, "mcp-server");
    target(&cluster, "mcp-server-v2");
    cluster.put(
        path::PROXY,
        serde_json::to_value(Proxy::new().auto_rollout().0).unwrap(),
    );
    reconcile_on(&cluster).await;
    let mut moved: Value = cluster.get(path::PROXY).unwrap();
    moved["spec"]["targetRef"]["name"] = json!("mcp-server-v2");
    cluster.put(path::PROXY, moved);
    // The new target's template names this McpProxy too (deployment()).
    reconcile_on(&cluster).await;
    let old = cluster.get(path::DEPLOYMENT).unwrap();
    let new = cluster
        .get("/apis/apps/v1/namespaces/tools/deployments/mcp-server-v2")
        .unwrap();
    assert_eq!(old.pointer(ANNOTATION), None, "released: {old}");
    assert!(new.pointer(ANNOTATION).is_some(), "{new}");
    assert_eq!(
        cluster.get(path::PROXY).unwrap()["status"]["rolloutTarget"]["name"],
        "mcp-server-v2"
    );
}

/// Another manager (a GitOps tool) owns the annotation with another
/// value: the operator's apply is a 409, not forced, and the workload
/// keeps the tool's value; the McpProxy says why.
#[tokio::test]
async fn a_foreign_annotation_is_not_taken() {
    let cluster = Cluster::default();
    target(&cluster, "mcp-server");
    let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(cluster.client(), "tools");
    let theirs = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mcp-server"},
        "spec": {"template": {"metadata": {"annotations": {"shadowcat.dev/config-hash": "pinned"}}}}});
    api.patch(
        "mcp-server",
        &PatchParams::apply("argocd-controller"),
        &Patch::Apply(&theirs),
    )
    .await
    .unwrap();
    cluster.put(
        path::PROXY,
        serde_json::to_value(Proxy::new().auto_rollout().0).unwrap(),
    );
    reconcile_on(&cluster).await;
    let left = cluster.get(path::DEPLOYMENT).unwrap();
    assert_eq!(left.pointer(ANNOTATION), Some(&json!("pinned")));
    let status = &cluster.get(path::PROXY).unwrap()["status"];
    let accepted = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .unwrap();
    assert_eq!(accepted["reason"], "RolloutConflict");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("argocd-controller")
    );
    assert!(
        cluster
            .events
            .lock()
            .unwrap()
            .contains(&"RolloutConflict".to_owned())
    );
}

//! Upgrading from the operator version that applied the sidecar into the
//! workload itself (field manager `shadowcat-operator`): its fields are
//! handed over to the webhook once the template carries the label, and
//! released if the McpProxy goes first; never before (that would roll pods
//! without any front door).

use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use shadowcat_crds::McpProxy;

use super::super::{Context, MANAGER, reconcile};
use crate::fixtures::cluster::Cluster;
use crate::fixtures::{Proxy, path};
use crate::render::Defaults;

type Deployments = Api<k8s_openapi::api::apps::v1::Deployment>;

/// The user's Deployment (applied by `kubectl`), labelled or not, and
/// what the earlier operator applied into it.
async fn upgraded(cluster: &Cluster, labelled: bool) {
    let api: Deployments = Api::namespaced(cluster.client(), "tools");
    api.patch(
        "mcp-server",
        &PatchParams::apply("kubectl"),
        &Patch::Apply(users(labelled)),
    )
    .await
    .unwrap();
    let earlier = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mcp-server"},
        "spec": {"template": {
            "metadata": {"annotations": {"shadowcat.dev/config-hash": "0ld"}},
            "spec": {"containers": [{"name": "shadowcat", "image": "shadowcat:0.0.9"}],
                     "volumes": [{"name": "shadowcat-config", "configMap": {"name": "weather-shadowcat"}}],
                     "terminationGracePeriodSeconds": 30}}}});
    api.patch(
        "mcp-server",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&earlier),
    )
    .await
    .unwrap();
    // The earlier version held a finalizer on every McpProxy.
    cluster.put(
        path::PROXY,
        serde_json::to_value(Proxy::new().finalized().0).unwrap(),
    );
}

fn users(labelled: bool) -> Value {
    let mut labels = json!({"app": "mcp"});
    if labelled {
        labels["shadowcat.dev/proxy"] = json!("weather");
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mcp-server"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "mcp"}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "server", "image": "node:22-slim"}]}}}})
}

async fn reconcile_on(cluster: &Cluster) {
    let proxy: Arc<McpProxy> = Arc::new(serde_json::from_value(cluster.get(path::PROXY).unwrap()).unwrap());
    reconcile(proxy, Context::new(cluster.client(), Defaults::default()))
        .await
        .unwrap();
}

fn containers(cluster: &Cluster) -> Vec<String> {
    let d = cluster.get(path::DEPLOYMENT).unwrap();
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

fn injected(cluster: &Cluster) -> (String, String) {
    let status = &cluster.get(path::PROXY).unwrap()["status"];
    let c = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Injected")
        .unwrap()
        .clone();
    (
        c["status"].as_str().unwrap().into(),
        c["reason"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn the_earlier_sidecar_stays_until_the_label_then_goes_to_the_webhook() {
    let cluster = Cluster::default();
    upgraded(&cluster, false).await;
    assert_eq!(containers(&cluster), ["server", "shadowcat"]);
    reconcile_on(&cluster).await;
    assert_eq!(
        containers(&cluster),
        ["server", "shadowcat"],
        "not released unlabelled"
    );
    assert_eq!(injected(&cluster), ("False".into(), "LegacySidecar".into()));
    let proxy = cluster.get(path::PROXY).unwrap();
    assert_eq!(
        proxy["metadata"]["finalizers"],
        json!(["shadowcat.dev/cleanup"]),
        "held"
    );
    assert_eq!(proxy["status"]["rolloutTarget"]["name"], "mcp-server");

    // The user labels the template (their own apply).
    let api: Deployments = Api::namespaced(cluster.client(), "tools");
    api.patch(
        "mcp-server",
        &PatchParams::apply("kubectl"),
        &Patch::Apply(users(true)),
    )
    .await
    .unwrap();
    reconcile_on(&cluster).await;
    assert_eq!(containers(&cluster), ["server"], "handed over to the webhook");
    let d = cluster.get(path::DEPLOYMENT).unwrap();
    assert_eq!(d["spec"]["template"]["spec"].get("volumes"), None, "{d}");
    assert_eq!(d["spec"]["template"]["metadata"].get("annotations"), None, "{d}");
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["shadowcat.dev/proxy"],
        "weather"
    );
    assert_eq!(d["spec"]["replicas"], 3, "the user's fields stay");
    // Nothing more to hold: the finalizer goes on the next reconcile.
    reconcile_on(&cluster).await;
    reconcile_on(&cluster).await;
    assert_eq!(
        cluster.get(path::PROXY).unwrap()["metadata"].get("finalizers"),
        Some(&json!([]))
    );
}

#[tokio::test]
async fn deleting_the_mcpproxy_first_releases_the_earlier_sidecar() {
    let cluster = Cluster::default();
    upgraded(&cluster, false).await;
    let api: Api<McpProxy> = Api::namespaced(cluster.client(), "tools");
    api.delete("weather", &Default::default()).await.unwrap();
    reconcile_on(&cluster).await;
    assert!(cluster.get(path::PROXY).is_none(), "gone");
    assert_eq!(
        containers(&cluster),
        ["server"],
        "the template no longer mounts a ConfigMap that is gone"
    );
}

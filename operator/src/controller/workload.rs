//! The McpProxy's target workload: what the operator reads off it, and the
//! one kind of write it ever makes there (the rollout annotation, and the
//! release of what a field manager applied). A Deployment and a
//! StatefulSet have the same fields for all of it, so both are handled as
//! one untyped object.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams};
use serde_json::Value;
use shadowcat_crds::{TargetKind, TargetRef};

use super::MANAGER;
use crate::error::Result;
use crate::render;

/// What the operator reads off the target workload.
pub struct Target {
    /// Its generation, and the generation its controller has seen.
    pub generation: Option<i64>,
    /// The generation its controller has seen.
    pub observed: Option<i64>,
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas.
    pub ready: i32,
    /// Replicas of the current template.
    pub updated: i32,
    /// The `shadowcat.dev/proxy` label of its pod template.
    pub label: Option<String>,
    /// It still carries what an earlier operator version applied into it
    /// under [`MANAGER`] (the sidecar, volumes, hash, grace period).
    pub legacy: bool,
}

/// The API of `target`'s kind in `ns`.
fn api(client: &Client, ns: &str, kind: TargetKind) -> Api<DynamicObject> {
    let resource = match kind {
        TargetKind::Deployment => ApiResource::erase::<Deployment>(&()),
        TargetKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
    };
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// Whether `meta`'s managed fields hold an apply by `manager`.
pub fn applied_by(meta: &ObjectMeta, manager: &str) -> bool {
    meta.managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(manager) && m.operation.as_deref() == Some("Apply"))
}

/// The target, if it exists.
pub async fn read(client: &Client, ns: &str, target: &TargetRef) -> Result<Option<Target>> {
    let Some(found) = api(client, ns, target.kind).get_opt(&target.name).await? else {
        return Ok(None);
    };
    let data = &found.data;
    let int = |path: &str| {
        data.pointer(path)
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
    };
    let label = format!(
        "/spec/template/metadata/labels/{}",
        render::PROXY_LABEL.replace('/', "~1")
    );
    Ok(Some(Target {
        generation: found.metadata.generation,
        observed: data.pointer("/status/observedGeneration").and_then(Value::as_i64),
        replicas: int("/spec/replicas").unwrap_or(1),
        ready: int("/status/readyReplicas").unwrap_or(0),
        updated: int("/status/updatedReplicas").unwrap_or(0),
        label: data.pointer(&label).and_then(Value::as_str).map(str::to_owned),
        legacy: applied_by(&found.metadata, MANAGER),
    }))
}

/// Sets the config hash on `target`'s pod template under `manager`, never
/// forced (a field another manager owns is a 409 for the caller).
pub async fn annotate(
    client: &Client,
    ns: &str,
    target: &TargetRef,
    manager: &str,
    hash: &str,
) -> kube::Result<()> {
    let patch = render::rollout_patch(target, Some(hash));
    api(client, ns, target.kind)
        .patch(&target.name, &PatchParams::apply(manager), &Patch::Apply(&patch))
        .await
        .map(drop)
}

/// Releases what `managers` applied into `target` (the rollout
/// annotation, or an earlier version's sidecar): the empty apply under each
/// that has applied there, when the target still exists (an apply to a
/// missing object would create it).
pub async fn release(client: &Client, ns: &str, target: &TargetRef, managers: &[&str]) -> Result<()> {
    let api = api(client, ns, target.kind);
    let Some(found) = api.get_opt(&target.name).await? else {
        return Ok(());
    };
    let empty = render::rollout_patch(target, None);
    for manager in managers.iter().filter(|m| applied_by(&found.metadata, m)) {
        match api
            .patch(&target.name, &PatchParams::apply(manager), &Patch::Apply(&empty))
            .await
        {
            Ok(_) => tracing::info!(target = %target.name, manager, "released what the manager applied"),
            // Deleted between the read and the apply: the apply tried to
            // create it and was refused; nothing is left to release.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

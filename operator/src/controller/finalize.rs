//! The finalizer, held only while something of Shadowcat's is in the
//! target workload (the rollout annotation, or an earlier version's
//! sidecar), and what it does when the McpProxy goes.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use shadowcat_crds::{McpProxy, Rollout};

use super::{Context, FINALIZER, MANAGER, apply, warn, workload};
use crate::error::{Error, Result};
use crate::render;

/// Whether `proxy` needs the finalizer: only to release the rollout
/// annotation (`rollout: auto`, or one still to release). Without one, an
/// McpProxy goes the moment it is deleted: nothing of Shadowcat's is in the
/// workload, and the rest goes by owner references. (A finalizer held for
/// nothing could outlive the operator's Role in a namespace being deleted,
/// and then never be removed.)
pub fn holds(proxy: &McpProxy) -> bool {
    proxy.spec.rollout == Rollout::Auto || proxy.status.as_ref().is_some_and(|s| s.rollout_target.is_some())
}

/// An McpProxy that needs no finalizer: one left by an earlier operator
/// version is removed (which reconciles it again), a deleted one is let go,
/// and a live one is applied.
pub async fn without(api: &Api<McpProxy>, proxy: &McpProxy, ctx: &Context) -> Result<Action> {
    if let Some(i) = proxy.finalizers().iter().position(|f| f == FINALIZER) {
        // An earlier version's finalizer may guard its sidecar in the
        // target: released on deletion; while the McpProxy lives, `apply`
        // hands it over (and holds the target until then).
        let ns = proxy.namespace().ok_or(Error::NoNamespace)?;
        if proxy.metadata.deletion_timestamp.is_some() {
            workload::release(&ctx.client, &ns, &proxy.spec.target_ref, &[MANAGER]).await?;
        } else if workload::read(&ctx.client, &ns, &proxy.spec.target_ref)
            .await?
            .is_some_and(|t| t.legacy)
        {
            return apply(proxy, ctx).await;
        }
        let path = format!("/metadata/finalizers/{i}");
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": path, "value": FINALIZER},
            {"op": "remove", "path": path},
        ]))
        .map_err(|e| Error::Render(serde::de::Error::custom(e)))?;
        api.patch(
            &proxy.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await?;
        return Ok(Action::await_change());
    }
    if proxy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    apply(proxy, ctx).await
}

/// What goes when an McpProxy goes. The workload was never written, so
/// there is nothing to take out of it, whether or not it still exists; the
/// rollout annotation of `rollout: auto` is released where it is. The
/// ConfigMap, Service, NetworkPolicy and peer Secret go with the McpProxy
/// (owner references). Running pods keep their sidecar until they are
/// replaced; the webhook gives new pods none.
pub async fn cleanup(proxy: &McpProxy, ctx: &Context) -> Result<Action> {
    let ns = proxy.namespace().ok_or(Error::NoNamespace)?;
    if let Some(target) = proxy.status.as_ref().and_then(|s| s.rollout_target.as_ref()) {
        let rollout = render::rollout_manager(proxy);
        match workload::release(&ctx.client, &ns, target, &[rollout.as_str(), MANAGER]).await {
            Ok(()) => {}
            // The workload cannot be reached (its namespace is being
            // deleted and the operator's Role there went first, or RBAC was
            // taken away): holding the finalizer would hold the namespace.
            // What is left is an annotation, harmless without the McpProxy.
            Err(e) if e.api_code() == Some(403) => {
                let note = format!("cannot release what was applied into {}: {e}", target.name);
                warn(ctx, proxy, "ReleaseForbidden", &note).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Action::await_change())
}

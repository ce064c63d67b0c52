//! Objects an McpProxy owns (its ConfigMap, Service, NetworkPolicy):
//! applied when asked for, deleted when no longer, and never taken over
//! when one of the name is someone else's.

use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use shadowcat_crds::McpProxy;

use super::MANAGER;
use crate::error::Result;
use crate::render;

/// Whether `meta` is of an object `proxy` created (its owner reference).
pub fn owned_by(meta: &ObjectMeta, proxy: &McpProxy) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == proxy.metadata.uid.as_ref())
}

/// The API refused a write for a reason the user must fix (a 4xx other
/// than a missing object, a conflict or throttling): a condition with the
/// server's own message, never a silent retry loop.
pub fn rejection(what: &str, error: &kube::Error) -> Option<String> {
    match error {
        kube::Error::Api(e) if (400..500).contains(&e.code) && ![404, 409, 429].contains(&e.code) => {
            Some(format!("{what}: {} ({})", e.message, e.reason))
        }
        _ => None,
    }
}

/// Applies `wanted` (or deletes the McpProxy's own object of that kind
/// when `None`: a removed `spec.service`, a renamed Service). An object of
/// the name that `proxy` does not own is left alone and named in the
/// returned refusal.
pub async fn apply<K>(
    api: &Api<K>,
    wanted: Option<K>,
    proxy: &McpProxy,
    kind: &str,
) -> Result<Option<(&'static str, String)>>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let selector = format!("{}={}", render::PROXY_LABEL, proxy.name_any());
    let wanted_name = wanted.as_ref().map(|w| w.name_any());
    // Ours, under another name (or no longer wanted): gone.
    for stale in api.list(&ListParams::default().labels(&selector)).await?.items {
        if owned_by(stale.meta(), proxy) && Some(stale.name_any()) != wanted_name {
            tracing::info!(kind, name = %stale.name_any(), "deleting what the McpProxy no longer asks for");
            match api.delete(&stale.name_any(), &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let (Some(wanted), Some(name)) = (wanted, wanted_name) else {
        return Ok(None);
    };
    if let Some(existing) = api.get_opt(&name).await?
        && !owned_by(existing.meta(), proxy)
    {
        let reason = match kind {
            "Service" => "ServiceNotOwned",
            "NetworkPolicy" => "NetworkPolicyNotOwned",
            _ => "ConfigMapNotOwned",
        };
        let why = format!("{kind} {name} exists and was not made for this McpProxy; rename one of them");
        return Ok(Some((reason, why)));
    }
    // Forced: the owner reference proves the object is this McpProxy's, so
    // a field someone changed by hand (`kubectl edit`) is taken back rather
    // than a conflict retried forever.
    match api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&wanted),
        )
        .await
    {
        Ok(_) => Ok(None),
        Err(e) => match rejection(&format!("{kind} {name}"), &e) {
            // The sidecar mounts the ConfigMap: its rejection keeps the
            // webhook from injecting (see `webhook::BLOCKING`).
            Some(why) if kind == "ConfigMap" => Ok(Some(("ConfigMapRejected", why))),
            Some(why) => Ok(Some(("ApiRejected", why))),
            None => Err(e.into()),
        },
    }
}

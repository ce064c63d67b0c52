//! What the admission webhook does to a pod that opted in: a pure function
//! from the pod and its McpProxy to the pod with the sidecar, or the reason
//! it is left alone. No I/O, so every rule is tested on its output.

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, HTTPHeader, Lifecycle, LifecycleHandler, LocalObjectReference, Pod,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use shadowcat_crds::McpProxy;

use crate::render::{self, CONFIG_HASH, CONTAINER, DRAIN_HEADER, Defaults};

/// Pod annotation naming the McpProxy whose sidecar the webhook added.
pub const INJECTED: &str = "shadowcat.dev/injected";

/// Pod annotation saying why the webhook left a pod that opted in without
/// the sidecar.
pub const SKIPPED: &str = "shadowcat.dev/skipped";

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// What becomes of a pod.
#[derive(Debug)]
pub enum Injection {
    /// The pod with the sidecar, and what the user should know.
    Injected {
        /// The mutated pod.
        pod: Box<Pod>,
        /// Warnings for the client that created the pod.
        warnings: Vec<String>,
    },
    /// Left as it is: already injected (a retried request).
    Already,
    /// Left without the sidecar, and why.
    Refused(String),
}

/// The pod `pod` with the sidecar of `proxy`, whose rendered config hashes
/// to `hash`.
pub fn inject(pod: &Pod, proxy: &McpProxy, defaults: &Defaults, hash: &str) -> Injection {
    // Injected already (a retried request), or from a template that still
    // carries the sidecar an earlier operator version wrote into it (the
    // operator hands that over once the template has the label; until its
    // rollout lands, such pods run as they are).
    if pod.annotations().contains_key(INJECTED) || has_legacy_sidecar(pod) {
        return Injection::Already;
    }
    if let Some(why) = defaults.image_refusal(proxy) {
        return Injection::Refused(why);
    }
    let mut pod = pod.clone();
    let Some(spec) = pod.spec.as_mut() else {
        return Injection::Refused("the pod has no spec".into());
    };
    let named = |c: &Container| c.name == CONTAINER;
    if spec.containers.iter().any(named) || spec.init_containers.iter().flatten().any(named) {
        return Injection::Refused(format!(
            "the pod already has a container named {CONTAINER:?}; rename it to get the sidecar"
        ));
    }
    let volumes = render::sidecar_volumes(proxy);
    let existing = spec.volumes.iter().flatten();
    if let Some(clash) = existing
        .clone()
        .find(|v| volumes.iter().any(|ours| ours.name == v.name))
    {
        return Injection::Refused(format!(
            "the pod already has a volume named {:?}, which the sidecar needs",
            clash.name
        ));
    }
    let sidecar = render::sidecar_container(proxy, defaults);
    let ours: Vec<i32> = sidecar.ports.iter().flatten().map(|p| p.container_port).collect();
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in all {
        if let Some(port) = container
            .ports
            .iter()
            .flatten()
            .find(|p| ours.contains(&p.container_port))
        {
            return Injection::Refused(format!(
                "container {:?} uses port {}, which the sidecar needs; set spec.listen.port, \
                 spec.sidecar.adminPort or spec.sidecar.peerPort to a free port",
                container.name, port.container_port
            ));
        }
    }

    let mut warnings = Vec::new();
    // The MCP server: the container serving the upstream port, else the
    // first. Its preStop asks the sidecar to drain and waits for it, so the
    // server is still up while the sidecar finishes the answers it carries.
    let upstream = i32::from(proxy.spec.upstream.port);
    let index = spec
        .containers
        .iter()
        .position(|c| c.ports.iter().flatten().any(|p| p.container_port == upstream))
        .unwrap_or(0);
    if let Some(server) = spec.containers.get_mut(index) {
        let lifecycle = server.lifecycle.get_or_insert_with(Lifecycle::default);
        if lifecycle.pre_stop.is_some() {
            warnings.push(format!(
                "container {:?} has a preStop hook of its own, so Shadowcat cannot add the one that \
                 drains the sidecar first: answers in flight at shutdown may be cut",
                server.name
            ));
        } else {
            lifecycle.pre_stop = Some(drain_hook(proxy));
        }
    }
    // Never lowered: the user's grace period stands if it is long enough.
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);
    spec.termination_grace_period_seconds = Some(grace.max(defaults.grace_seconds()));
    spec.init_containers.get_or_insert_with(Vec::new).push(sidecar);
    spec.volumes.get_or_insert_with(Vec::new).extend(volumes);
    if !defaults.image_pull_secrets.is_empty() {
        let secrets = spec.image_pull_secrets.get_or_insert_with(Vec::new);
        for name in &defaults.image_pull_secrets {
            if !secrets.iter().any(|s| &s.name == name) {
                secrets.push(LocalObjectReference { name: name.clone() });
            }
        }
    }
    let annotations = pod.annotations_mut();
    annotations.insert(INJECTED.into(), proxy.name_any());
    annotations.insert(CONFIG_HASH.into(), hash.into());
    Injection::Injected {
        pod: Box::new(pod),
        warnings,
    }
}

/// `GET /drain` on the sidecar's admin port, with the header the sidecar
/// asks of a GET; the kubelet waits for the answer (the sidecar answers once
/// it has drained), within the pod's grace period.
fn drain_hook(proxy: &McpProxy) -> LifecycleHandler {
    LifecycleHandler {
        http_get: Some(HTTPGetAction {
            path: Some("/drain".into()),
            port: IntOrString::Int(i32::from(proxy.spec.admin_port())),
            http_headers: Some(vec![HTTPHeader {
                name: DRAIN_HEADER.0.into(),
                value: DRAIN_HEADER.1.into(),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether `pod` runs the sidecar an earlier operator version applied into
/// its workload's template (a container of ours, and the hash annotation,
/// but not the webhook's mark).
pub fn has_legacy_sidecar(pod: &Pod) -> bool {
    !pod.annotations().contains_key(INJECTED)
        && pod.annotations().contains_key(CONFIG_HASH)
        && pod
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|c| c.name == CONTAINER))
}

/// Whether `pod` runs the sidecar the webhook adds.
pub fn has_sidecar(pod: &Pod) -> bool {
    pod.annotations().contains_key(INJECTED)
        && pod
            .spec
            .as_ref()
            .is_some_and(|s| s.init_containers.iter().flatten().any(|c| c.name == CONTAINER))
}

#[cfg(test)]
mod tests;

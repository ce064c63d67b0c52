//! Reconcile: a thin `reconcile` hands over to the finalizer, which calls
//! [`apply`] while the McpProxy lives and [`cleanup`] when it is deleted.
//! Both are idempotent and use server-side apply under one field manager, so
//! releasing the manager's fields removes exactly what Shadowcat added.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use shadowcat_crds::{
    McpProxy, McpProxyStatus, SidecarConfig, StoreKind, TargetKind, UpstreamCredentialSpec,
};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::render::{self, Defaults};
use crate::status::{self, CONFIG_VALID, INJECTED, READY, Set};

/// The field manager of every apply, and the finalizer's name.
pub const MANAGER: &str = "shadowcat-operator";
/// Finalizer that removes the sidecar when an McpProxy goes.
pub const FINALIZER: &str = "shadowcat.dev/cleanup";

/// How soon to look again after a success (drift, target readiness).
const RESYNC: Duration = Duration::from_secs(300);
/// How soon to look again at a spec the user must fix.
const INVALID_RETRY: Duration = Duration::from_secs(300);
/// How soon to look again when something it needs is missing.
const MISSING_RETRY: Duration = Duration::from_secs(60);

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Operator-wide defaults.
    pub defaults: Defaults,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Reconcile metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Context {
    /// A context reporting events as `shadowcat-operator` (instance: pod name).
    pub fn new(client: Client, defaults: Defaults) -> Arc<Self> {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            defaults,
            metrics: Arc::default(),
        })
    }
}

/// Reconciles one McpProxy.
pub async fn reconcile(proxy: Arc<McpProxy>, ctx: Arc<Context>) -> Result<Action> {
    let ns = proxy.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<McpProxy> = Api::namespaced(ctx.client.clone(), &ns);
    let span = tracing::info_span!("reconcile", proxy = %proxy.name_any(), namespace = %ns);
    ctx.metrics.reconciles.inc();
    let started = std::time::Instant::now();
    let result = finalizer(&api, FINALIZER, proxy, |event| async {
        match event {
            Finalized::Apply(proxy) => apply(&proxy, &ctx).await,
            Finalized::Cleanup(proxy) => cleanup(&proxy, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.duration.observe(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        ctx.metrics
            .failures
            .get_or_create(&crate::metrics::Reason {
                reason: e.metric_label(),
            })
            .inc();
    }
    result
}

/// On a failed reconcile: log, and try again later — never a hot loop.
pub fn error_policy(proxy: Arc<McpProxy>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(proxy = %proxy.name_any(), error = %error, label = error.metric_label(), "reconcile failed");
    Action::requeue(Duration::from_secs(30))
}

/// What the operator reads off the target workload.
struct Target {
    selector: BTreeMap<String, String>,
    replicas: Option<i32>,
    ready: Option<i32>,
    updated: Option<i32>,
}

async fn target(client: &Client, ns: &str, proxy: &McpProxy) -> Result<Option<Target>> {
    let name = &proxy.spec.target_ref.name;
    Ok(match proxy.spec.target_ref.kind {
        TargetKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .map(|d| {
                let spec = d.spec;
                let status = d.status.unwrap_or_default();
                Target {
                    selector: spec.selector.match_labels.unwrap_or_default(),
                    replicas: spec.replicas,
                    ready: status.ready_replicas,
                    updated: status.updated_replicas,
                }
            }),
        TargetKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await?
            .map(|s| {
                let spec = s.spec;
                let status = s.status.unwrap_or_default();
                Target {
                    selector: spec.selector.match_labels.unwrap_or_default(),
                    replicas: spec.replicas,
                    ready: status.ready_replicas,
                    updated: status.updated_replicas,
                }
            }),
    })
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Brings the cluster to what `proxy` asks for.
pub async fn apply(proxy: &McpProxy, ctx: &Context) -> Result<Action> {
    let ns = proxy.namespace().ok_or(Error::NoNamespace)?;
    let client = &ctx.client;
    let config = render::sidecar_config(proxy, &ctx.defaults);

    // 1. Validate the spec's own rule (one source of the upstream
    //    credential), then the config with the sidecar's rules (the Redis URL
    //    comes from a Secret at run time, so a stand-in is layered in its
    //    place). The policy is checked on its own, for a condition of its
    //    own that says where in it the error is. Either error and nothing is
    //    applied: the ConfigMap and pods keep what they run (the sidecar
    //    would refuse an invalid policy on reload, and fail to start on it).
    let env = SidecarConfig {
        store: (proxy.spec.sessions.store == StoreKind::Redis).then(|| "redis://from-secret".into()),
        ..Default::default()
    };
    let credential = proxy
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.upstream_credential.as_ref());
    let without_policy = SidecarConfig {
        policy: None,
        ..config.clone()
    };
    let checked = credential
        .map_or(Ok(()), UpstreamCredentialSpec::validate)
        .and_then(|()| env.or(without_policy).validate().map(drop));
    let policy = status::policy(proxy.spec.policy.as_ref());
    if checked.is_err() || !policy.ok {
        let mut valid = None;
        if let Err(e) = checked {
            let message = e.to_string();
            warn(ctx, proxy, "InvalidSpec", &message).await;
            valid = Some(Set::new(CONFIG_VALID, false, "InvalidSpec", message));
        }
        if !policy.ok {
            warn(ctx, proxy, policy.reason, &policy.message).await;
        }
        let valid =
            valid.unwrap_or_else(|| Set::new(CONFIG_VALID, false, policy.reason, policy.message.clone()));
        write_status(ctx, proxy, &[valid, policy], None, None).await?;
        return Ok(Action::requeue(INVALID_RETRY));
    }
    let (yaml, hash) = render::config_yaml(&config)?;

    // 2. Secrets: every key the spec names must exist (the Redis URL, the
    //    authorization server's CAs, the upstream credential, the client
    //    secrets for introspection and token exchange), or the pods would
    //    not start; the peer secret is made once.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for reference in render::secret_refs(proxy) {
        let found = secrets.get_opt(&reference.name).await?;
        if !found
            .as_ref()
            .is_some_and(|s| s.data.as_ref().is_some_and(|d| d.contains_key(&reference.key)))
        {
            let message = format!("Secret {}/{} has no key {:?}", ns, reference.name, reference.key);
            warn(ctx, proxy, "SecretMissing", &message).await;
            let sets = [
                Set::new(CONFIG_VALID, true, "Valid", "the sidecar config is valid"),
                policy,
                Set::new(INJECTED, false, "SecretMissing", message),
            ];
            write_status(ctx, proxy, &sets, Some(hash), None).await?;
            return Ok(Action::requeue(MISSING_RETRY));
        }
    }
    if render::redis(proxy).is_some() {
        ensure_peer_secret(proxy, &secrets).await?;
    }

    // 3. The config the sidecar mounts.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = render::config_map(proxy, &yaml);
    config_maps
        .patch(
            &render::config_map_name(proxy),
            &apply_params(),
            &Patch::Apply(&cm),
        )
        .await?;

    // 4. The sidecar, into the target's pod template.
    let Some(target) = target(client, &ns, proxy).await? else {
        let message = format!(
            "{:?} {}/{} not found",
            proxy.spec.target_ref.kind, ns, proxy.spec.target_ref.name
        );
        warn(ctx, proxy, "TargetNotFound", &message).await;
        let sets = [
            Set::new(CONFIG_VALID, true, "Valid", "the sidecar config is valid"),
            policy,
            Set::new(INJECTED, false, "TargetNotFound", message),
        ];
        write_status(ctx, proxy, &sets, Some(hash), None).await?;
        return Ok(Action::requeue(MISSING_RETRY));
    };
    let patch = render::workload_patch(proxy, &ctx.defaults, &hash);
    let name = &proxy.spec.target_ref.name;
    match proxy.spec.target_ref.kind {
        TargetKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), &ns)
                .patch(name, &apply_params(), &Patch::Apply(&patch))
                .await?;
        }
        TargetKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), &ns)
                .patch(name, &apply_params(), &Patch::Apply(&patch))
                .await?;
        }
    }

    // 5. The Service, when asked for.
    if let Some(svc) = render::service(proxy, target.selector.clone()) {
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        services
            .patch(&render::service_name(proxy), &apply_params(), &Patch::Apply(&svc))
            .await?;
    }

    // 6. Status.
    let (desired, ready, updated) = (
        target.replicas.unwrap_or(1),
        target.ready.unwrap_or(0),
        target.updated.unwrap_or(0),
    );
    let is_ready = ready >= desired && updated >= desired;
    let sets = [
        Set::new(CONFIG_VALID, true, "Valid", "the sidecar config is valid"),
        policy,
        Set::new(
            INJECTED,
            true,
            "Injected",
            format!("sidecar in {:?} {}", proxy.spec.target_ref.kind, name),
        ),
        Set::new(
            READY,
            is_ready,
            if is_ready { "Ready" } else { "RollingOut" },
            format!("{ready}/{desired} replicas ready, {updated} updated"),
        ),
    ];
    write_status(ctx, proxy, &sets, Some(hash), Some((desired, ready))).await?;
    Ok(Action::requeue(RESYNC))
}

/// Creates the Secret replicas share for peer authentication, if absent.
async fn ensure_peer_secret(proxy: &McpProxy, secrets: &Api<Secret>) -> Result<()> {
    let name = render::peer_secret_name(proxy);
    if secrets.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name),
            owner_references: proxy.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(render::PEER_SECRET_KEY.to_owned(), value)])),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        // Another reconcile made it first: fine.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes what Shadowcat added to the target: applying an empty config under
/// the same field manager releases every field it owned. The ConfigMap,
/// Service and peer Secret go with the McpProxy (owner references).
pub async fn cleanup(proxy: &McpProxy, ctx: &Context) -> Result<Action> {
    let ns = proxy.namespace().ok_or(Error::NoNamespace)?;
    let name = &proxy.spec.target_ref.name;
    let (api_version, kind) = match proxy.spec.target_ref.kind {
        TargetKind::Deployment => ("apps/v1", "Deployment"),
        TargetKind::StatefulSet => ("apps/v1", "StatefulSet"),
    };
    let empty = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
    let result = match proxy.spec.target_ref.kind {
        TargetKind::Deployment => Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .patch(name, &apply_params(), &Patch::Apply(&empty))
            .await
            .map(drop),
        TargetKind::StatefulSet => Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
            .patch(name, &apply_params(), &Patch::Apply(&empty))
            .await
            .map(drop),
    };
    match result {
        Ok(()) => tracing::info!(target = %name, "sidecar removed"),
        // Target gone too: nothing to remove.
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

async fn warn(ctx: &Context, proxy: &McpProxy, reason: &str, note: &str) {
    tracing::warn!(reason, note, "McpProxy cannot be applied");
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &proxy.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

async fn write_status(
    ctx: &Context,
    proxy: &McpProxy,
    sets: &[Set],
    config_hash: Option<String>,
    replicas: Option<(i32, i32)>,
) -> Result<()> {
    let ns = proxy.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<McpProxy> = Api::namespaced(ctx.client.clone(), &ns);
    let generation = proxy.metadata.generation;
    let status = McpProxyStatus {
        observed_generation: generation,
        conditions: status::conditions(proxy.status.as_ref(), generation, sets),
        config_hash,
        replicas: replicas.map(|r| r.0),
        ready_replicas: replicas.map(|r| r.1),
    };
    let patch =
        json!({"apiVersion": McpProxy::api_version(&()), "kind": McpProxy::kind(&()), "status": status});
    api.patch_status(&proxy.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// The McpProxies whose target is `workload` (namespace, kind, name).
fn proxies_targeting(
    store: &kube::runtime::reflector::Store<McpProxy>,
    kind: TargetKind,
    ns: Option<String>,
    name: String,
) -> Vec<ObjectRef<McpProxy>> {
    store
        .state()
        .iter()
        .filter(|p| p.namespace() == ns && p.spec.target_ref.kind == kind && p.spec.target_ref.name == name)
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Runs the controller until the stream ends (shutdown).
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let api = |c: &Client| -> Api<McpProxy> {
        match &namespace {
            Some(ns) => Api::namespaced(c.clone(), ns),
            None => Api::all(c.clone()),
        }
    };
    macro_rules! scoped {
        ($t:ty) => {
            match &namespace {
                Some(ns) => Api::<$t>::namespaced(client.clone(), ns),
                None => Api::<$t>::all(client.clone()),
            }
        };
    }
    let controller = Controller::new(api(&client), watcher::Config::default());
    let store = controller.store();
    let (deployments, statefulsets) = (store.clone(), store);
    controller
        .owns(
            scoped!(ConfigMap),
            watcher::Config::default().labels(render::PROXY_LABEL),
        )
        .owns(
            scoped!(Service),
            watcher::Config::default().labels(render::PROXY_LABEL),
        )
        .watches(scoped!(Deployment), watcher::Config::default(), move |d| {
            proxies_targeting(&deployments, TargetKind::Deployment, d.namespace(), d.name_any())
        })
        .watches(scoped!(StatefulSet), watcher::Config::default(), move |s| {
            proxies_targeting(
                &statefulsets,
                TargetKind::StatefulSet,
                s.namespace(),
                s.name_any(),
            )
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error");
            }
        })
        .await;
}

#[cfg(test)]
mod tests;

//! Reconcile: a thin `reconcile` hands over to the finalizer, which calls
//! [`apply`] while the McpProxy lives and [`cleanup`] when it is deleted.
//! Both are idempotent. The operator writes only objects it creates (the
//! ConfigMap, Service, NetworkPolicy and peer Secret, by server-side apply,
//! never forced) and status; the sidecar reaches pods through the admission
//! webhook ([`crate::webhook`]), so the user's workload is never written,
//! except for one annotation when `rollout: auto` asks for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use shadowcat_crds::{
    McpProxy, McpProxyStatus, Rollout, SidecarConfig, StoreKind, TargetKind, TargetRef,
    UpstreamCredentialSpec,
};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::render::{self, Defaults};
use crate::status::{self, ACCEPTED, CONFIG_VALID, INJECTED, Pods, READY, SESSIONS_SHARED, Set};

/// The field manager of every apply.
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
    let forbidden_of = proxy.clone();
    let result = if finalize::holds(&proxy) {
        finalizer(&api, FINALIZER, proxy, |event| async {
            match event {
                Finalized::Apply(proxy) => apply(&proxy, &ctx).await,
                Finalized::Cleanup(proxy) => finalize::cleanup(&proxy, &ctx).await,
            }
        })
        .instrument(span)
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))
    } else {
        finalize::without(&api, &proxy, &ctx).instrument(span).await
    };
    if let Err(e) = &result
        && e.api_code() == Some(403)
    {
        // Forbidden: RBAC to fix (a Role deleted, a namespace outside the
        // chart's list): an Event where users look, not only a log line.
        warn(&ctx, &forbidden_of, "Forbidden", &e.to_string()).await;
    }
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

/// Server-side apply under the operator's field manager, never forced: a
/// field another manager owns is a conflict to report, not to take.
fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER)
}

/// What one reconcile found and decided, turned into status at the end.
struct Report {
    sets: Vec<Set>,
    hash: Option<String>,
    replicas: Option<(i32, i32)>,
    pods: Option<Pods>,
    rollout_target: Option<TargetRef>,
}

/// Brings the cluster to what `proxy` asks for.
pub async fn apply(proxy: &McpProxy, ctx: &Context) -> Result<Action> {
    let ns = proxy.namespace().ok_or(Error::NoNamespace)?;
    let client = &ctx.client;
    let name = proxy.name_any();
    let config = render::sidecar_config(proxy, &ctx.defaults);
    let mut report = Report {
        sets: Vec::new(),
        // What the ConfigMap holds until this reconcile writes it: the
        // webhook stamps pods with it.
        hash: proxy.status.as_ref().and_then(|s| s.config_hash.clone()),
        replicas: None,
        pods: None,
        rollout_target: proxy.status.as_ref().and_then(|s| s.rollout_target.clone()),
    };

    // 1. Validate the spec's own rules (one source of the upstream
    //    credential, distinct ports), then the config with the sidecar's
    //    rules (the Redis URL comes from a Secret at run time, so a stand-in
    //    is layered in its place). The policy is checked on its own, for a
    //    condition of its own that says where in it the error is. Either
    //    error and nothing is applied: the ConfigMap and pods keep what they
    //    run, and the webhook injects nothing new.
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
    let checked = match proxy.spec.port_clash().or_else(|| proxy.spec.env_problem()) {
        Some(clash) => Err(clash),
        None => credential
            .map_or(Ok(()), UpstreamCredentialSpec::validate)
            .and_then(|()| env.or(without_policy).validate().map(drop))
            .map_err(|e| e.to_string()),
    };
    let policy = status::policy(proxy.spec.policy.as_ref());
    if checked.is_err() || !policy.ok {
        let mut valid = None;
        if let Err(message) = checked {
            warn(ctx, proxy, "InvalidSpec", &message).await;
            valid = Some(Set::new(CONFIG_VALID, false, "InvalidSpec", message));
        }
        if !policy.ok {
            warn(ctx, proxy, policy.reason, &policy.message).await;
        }
        let valid =
            valid.unwrap_or_else(|| Set::new(CONFIG_VALID, false, policy.reason, policy.message.clone()));
        report.sets = vec![valid, policy];
        write_status(ctx, proxy, report).await?;
        return Ok(Action::requeue(INVALID_RETRY));
    }
    let (yaml, hash) = render::config_yaml(&config)?;
    report.sets.extend([
        Set::new(CONFIG_VALID, true, "Valid", "the sidecar config is valid"),
        policy,
    ]);

    // 2. An image the operator does not allow is never applied (the chart's
    //    ValidatingAdmissionPolicy refuses it first, when installed).
    if let Some(why) = ctx.defaults.image_refusal(proxy) {
        return refuse(ctx, proxy, report, "ImageNotAllowed", why).await;
    }

    // 3. Secrets: every one the spec names must exist (the Redis URL, the
    //    authorization server's CAs, the upstream credential, the client
    //    secrets, the sidecar's secret mounts), or the pods would not
    //    start; the peer secret is made once.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let keys = render::secret_refs(proxy)
        .into_iter()
        .map(|r| (r.name.as_str(), Some(r.key.as_str())));
    let mounts = proxy
        .spec
        .sidecar
        .secret_mounts
        .iter()
        .map(|m| (m.secret_name.as_str(), None));
    for (secret, key) in keys.chain(mounts) {
        let found = secrets.get_opt(secret).await?;
        let has = |k: &str| {
            found
                .as_ref()
                .is_some_and(|s| s.data.as_ref().is_some_and(|d| d.contains_key(k)))
        };
        let missing = match key {
            Some(key) if !has(key) => Some(format!("Secret {ns}/{secret} has no key {key:?}")),
            None if found.is_none() => Some(format!("Secret {ns}/{secret} not found")),
            _ => None,
        };
        if let Some(message) = missing {
            warn(ctx, proxy, "SecretMissing", &message).await;
            report
                .sets
                .push(Set::new(INJECTED, false, "SecretMissing", message));
            write_status(ctx, proxy, report).await?;
            return Ok(Action::requeue(MISSING_RETRY));
        }
    }
    if render::redis(proxy).is_some() {
        ensure_peer_secret(proxy, &secrets).await?;
    }

    // 4. The target: the label of its pod template says which McpProxy its
    //    pods opted in to. Another's name there is a conflict this one
    //    reports, leaving everything to the one the pods name.
    let target = workload::read(client, &ns, &proxy.spec.target_ref).await?;
    let kind = format!("{:?}", proxy.spec.target_ref.kind);
    let target_name = &proxy.spec.target_ref.name;
    if let Some(other) = target
        .as_ref()
        .and_then(|t| t.label.as_ref())
        .filter(|l| **l != name)
    {
        let why = format!(
            "the pod template of {kind} {target_name} is labelled {}={other}: its pods belong to McpProxy {other}",
            render::PROXY_LABEL
        );
        return refuse(ctx, proxy, report, "Conflict", why).await;
    }

    // 5. What the McpProxy owns: the config the sidecar mounts, the Service
    //    and the NetworkPolicy. An object of that name it did not create is
    //    never taken over.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = render::config_map(proxy, &yaml);
    let refused = match owned::apply(&config_maps, Some(cm), proxy, "ConfigMap").await? {
        Some(refusal) => Some(refusal),
        None => {
            // Written: pods created from now on mount this config.
            report.hash = Some(hash.clone());
            let services = Api::<Service>::namespaced(client.clone(), &ns);
            match owned::apply(&services, render::service(proxy), proxy, "Service").await? {
                Some(refusal) => Some(refusal),
                None => {
                    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
                    owned::apply(&policies, render::network_policy(proxy), proxy, "NetworkPolicy").await?
                }
            }
        }
    };
    if let Some((reason, why)) = refused {
        return refuse(ctx, proxy, report, reason, why).await;
    }

    // 6. What an earlier operator version applied into the target (the
    //    sidecar in the template itself) is handed over to the webhook: it
    //    is released once the template carries the label, so the pods it
    //    rolls get the sidecar from the webhook; until then it stays (its
    //    release would roll pods without any front door), and the target is
    //    held like a rollout target, so deleting the McpProxy releases it.
    let legacy_unlabelled = match &target {
        Some(t) if t.legacy && t.label.as_deref() == Some(name.as_str()) => {
            workload::release(client, &ns, &proxy.spec.target_ref, &[MANAGER]).await?;
            false
        }
        Some(t) => t.legacy,
        None => false,
    };

    // 7. `rollout: auto`: the config hash on the target's pod template. A
    //    previous target (targetRef changed, or back to manual) is released.
    // Not while an earlier version's fields are in the target: its manager
    // owns the same annotation, and the conflict would hide the real
    // problem (`LegacySidecar`).
    let wanted = (proxy.spec.rollout == Rollout::Auto && target.is_some() && !legacy_unlabelled)
        .then(|| proxy.spec.target_ref.clone());
    let holding = wanted
        .clone()
        .or_else(|| legacy_unlabelled.then(|| proxy.spec.target_ref.clone()));
    if let Some(previous) = report
        .rollout_target
        .clone()
        .filter(|p| Some(p) != holding.as_ref())
    {
        let rollout = render::rollout_manager(proxy);
        workload::release(client, &ns, &previous, &[rollout.as_str(), MANAGER]).await?;
        report.rollout_target = None;
    }
    if legacy_unlabelled {
        report.rollout_target = holding.clone();
    }
    if let Some(wanted) = wanted {
        let manager = render::rollout_manager(proxy);
        let applied = workload::annotate(client, &ns, &wanted, &manager, &hash).await;
        match applied {
            Ok(()) => report.rollout_target = Some(wanted),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let why = format!(
                    "another field manager owns annotation {} of {kind} {target_name}: {}",
                    render::CONFIG_HASH,
                    e.message
                );
                return refuse(ctx, proxy, report, "RolloutConflict", why).await;
            }
            Err(e) => match owned::rejection(&format!("{kind} {target_name}"), &e) {
                Some(why) => return refuse(ctx, proxy, report, "ApiRejected", why).await,
                None => return Err(e.into()),
            },
        }
    }
    report.sets.push(Set::new(ACCEPTED, true, "Accepted", "applied"));

    // 7. The pods: which opted in, which run the sidecar, on which config.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = format!("{}={name}", render::PROXY_LABEL);
    let listed = pods.list(&ListParams::default().labels(&selector)).await?;
    let counts = Pods::count(&listed.items, &hash);
    let Some(target) = target else {
        let message = format!("{kind} {ns}/{target_name} not found");
        warn(ctx, proxy, "TargetNotFound", &message).await;
        report
            .sets
            .push(Set::new(INJECTED, false, "TargetNotFound", message));
        report.pods = Some(counts);
        write_status(ctx, proxy, report).await?;
        return Ok(Action::requeue(MISSING_RETRY));
    };
    let injected = if legacy_unlabelled {
        Set::new(
            INJECTED,
            false,
            "LegacySidecar",
            format!(
                "{kind} {target_name} still has the sidecar an earlier operator version wrote into its pod \
                 template; add the label {}={name} to the template and the operator hands the sidecar \
                 over to the admission webhook (one rollout)",
                render::PROXY_LABEL
            ),
        )
    } else if target.label.is_none() {
        Set::new(
            INJECTED,
            false,
            "NotLabelled",
            format!(
                "the pod template of {kind} {target_name} has no label {}={name}; add it to opt the pods in",
                render::PROXY_LABEL
            ),
        )
    } else if !counts.without.is_empty() {
        let shown: Vec<String> = counts
            .without
            .iter()
            .take(5)
            .map(|(pod, why)| match why {
                Some(why) => format!("{pod} ({why})"),
                None => format!("{pod} (the webhook never saw it: unreachable under failurePolicy Ignore)"),
            })
            .collect();
        let message = format!(
            "{} pod(s) run without the sidecar; fix the cause, then delete them to get it: {}",
            counts.without.len(),
            shown.join("; ")
        );
        Set::new(INJECTED, false, "PodsWithoutSidecar", message)
    } else {
        Set::new(
            INJECTED,
            true,
            "Injected",
            format!(
                "{} pod(s) run the sidecar, {} on the current config",
                counts.injected, counts.current
            ),
        )
    };
    let rolled = target.observed >= target.generation
        && target.updated >= target.replicas
        && target.ready >= target.replicas;
    let outdated = proxy.spec.rollout == Rollout::Auto && counts.current < counts.injected;
    let is_ready = rolled && injected.ok && !outdated;
    let reason = match (rolled, injected.ok, outdated) {
        (true, true, false) => "Ready",
        (false, _, _) | (_, _, true) => "RollingOut",
        (true, false, _) => "PodsWithoutSidecar",
    };
    let ready = Set::new(
        READY,
        is_ready,
        reason,
        format!(
            "{}/{} replicas ready, {} updated, {} with the sidecar ({} on the current config)",
            target.ready, target.replicas, target.updated, counts.injected, counts.current
        ),
    );
    let shared = if proxy.spec.sessions.store == StoreKind::Memory && target.replicas > 1 {
        Set::new(
            SESSIONS_SHARED,
            false,
            "MemoryStoreWithReplicas",
            format!(
                "{} replicas keep sessions in memory: a client whose request reaches another replica \
                 gets 404 and loses its session; set sessions.store to redis",
                target.replicas
            ),
        )
    } else {
        Set::new(SESSIONS_SHARED, true, "Shared", "sessions reach every replica")
    };
    report.sets.extend([injected, ready, shared]);
    report.replicas = Some((target.replicas, target.ready));
    report.pods = Some(counts);
    write_status(ctx, proxy, report).await?;
    Ok(Action::requeue(RESYNC))
}

/// Writes `Accepted=False` with `reason`, an Event, and applies nothing.
async fn refuse(
    ctx: &Context,
    proxy: &McpProxy,
    mut report: Report,
    reason: &'static str,
    why: String,
) -> Result<Action> {
    warn(ctx, proxy, reason, &why).await;
    report.sets.push(Set::new(ACCEPTED, false, reason, why));
    write_status(ctx, proxy, report).await?;
    Ok(Action::requeue(MISSING_RETRY))
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
            labels: Some(render::pod_selector(proxy)),
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

pub(crate) async fn warn(ctx: &Context, proxy: &McpProxy, reason: &str, note: &str) {
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

async fn write_status(ctx: &Context, proxy: &McpProxy, report: Report) -> Result<()> {
    let ns = proxy.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<McpProxy> = Api::namespaced(ctx.client.clone(), &ns);
    let generation = proxy.metadata.generation;
    let status = McpProxyStatus {
        observed_generation: generation,
        conditions: status::conditions(proxy.status.as_ref(), generation, &report.sets),
        config_hash: report.hash,
        replicas: report.replicas.map(|r| r.0),
        ready_replicas: report.replicas.map(|r| r.1),
        injected_pods: report.pods.as_ref().map(|p| p.injected),
        current_pods: report.pods.as_ref().map(|p| p.current),
        pods_without_sidecar: report.pods.as_ref().map(|p| p.without.len() as i32),
        rollout_target: report.rollout_target,
    };
    let patch =
        json!({"apiVersion": McpProxy::api_version(&()), "kind": McpProxy::kind(&()), "status": status});
    // Status is the operator's alone: forced, so a field an older operator
    // version wrote under another manager never blocks it.
    api.patch_status(&proxy.name_any(), &apply_params().force(), &Patch::Apply(&patch))
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

/// Runs the controllers until shutdown: one for all namespaces when
/// `namespaces` is empty, else one per namespace (each watch then needs
/// rights in its namespace only).
pub async fn run(ctx: Arc<Context>, namespaces: Vec<String>) {
    if namespaces.is_empty() {
        run_in(ctx, None).await;
    } else {
        futures::future::join_all(namespaces.into_iter().map(|ns| run_in(ctx.clone(), Some(ns)))).await;
    }
}

async fn run_in(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    macro_rules! scoped {
        ($t:ty) => {
            match &namespace {
                Some(ns) => Api::<$t>::namespaced(client.clone(), ns),
                None => Api::<$t>::all(client.clone()),
            }
        };
    }
    let owned = || watcher::Config::default().labels(render::PROXY_LABEL);
    let controller = Controller::new(scoped!(McpProxy), watcher::Config::default());
    let store = controller.store();
    let (deployments, statefulsets) = (store.clone(), store);
    controller
        .owns(scoped!(ConfigMap), owned())
        .owns(scoped!(Service), owned())
        .owns(scoped!(NetworkPolicy), owned())
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
        // Pods that opted in: a pod created without the sidecar, or one
        // becoming ready, changes the McpProxy's status.
        .watches(scoped!(Pod), owned(), |pod| {
            let ns = pod.namespace();
            pod.labels().get(render::PROXY_LABEL).map(|name| {
                let reference = ObjectRef::new(name);
                match ns {
                    Some(ns) => reference.within(&ns),
                    None => reference,
                }
            })
        })
        // A rollout moves many pods at once: their events fold into one
        // reconcile a second rather than a reconcile (and its reads) each.
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(1)))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error");
            }
        })
        .await;
}

mod finalize;
mod owned;
mod workload;

#[cfg(test)]
mod tests;

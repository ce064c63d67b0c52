//! Pure functions from an McpProxy to the objects the operator applies: the
//! sidecar's config (the very `SidecarConfig` type the sidecar reads), its
//! ConfigMap, the patch that puts the sidecar into the target's pod template,
//! and the Service. No I/O here, so every rule is unit-tested on its output.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, Probe, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shadowcat_crds::{
    AuthConfig, AuthSpec, IntrospectionConfig, LogFormat, McpProxy, RedisSpec, SecretKeyRef, SidecarConfig,
    SseConfig, StoreKind, TargetKind, TargetRef, TokenExchangeConfig, UpstreamAuthConfig,
    UpstreamCredentialSpec,
};

/// Name of the sidecar container.
pub const CONTAINER: &str = "shadowcat";
/// Pod template annotation whose change rolls the pods on a config change.
pub const CONFIG_HASH: &str = "shadowcat.dev/config-hash";
/// Label on everything the operator makes, naming the McpProxy.
pub const PROXY_LABEL: &str = "shadowcat.dev/proxy";
/// Key of the sidecar config in its ConfigMap.
pub const CONFIG_KEY: &str = "config.yaml";
/// Key of the peer secret in its Secret.
pub const PEER_SECRET_KEY: &str = "secret";
/// Names of the sidecar's ports: unique enough that no server container
/// in the pod uses them (a Service's named target port resolves to the
/// first container port of that name).
pub const MCP_PORT_NAME: &str = "shadowcat";
/// The admin port's name (the chart's PodMonitor scrapes it).
pub const ADMIN_PORT_NAME: &str = "shadowcat-admin";
/// The peer port's name.
pub const PEER_PORT_NAME: &str = "shadowcat-peer";
/// The header the MCP server container's `preStop` hook sends with its
/// `GET /drain` (the kubelet's HTTP hooks only send GET; the sidecar drains
/// on a GET only with this header, so a stray GET never drains a pod).
pub const DRAIN_HEADER: (&str, &str) = ("X-Shadowcat-Drain", "preStop");
const CONFIG_DIR: &str = "/etc/shadowcat";
/// How long a terminating sidecar serves on before it drains.
const SHUTDOWN_DELAY: &str = "5s";
const PEER_DIR: &str = "/etc/shadowcat-peer";
/// Where the authorization server's CA bundle (`spec.auth.caSecretRef`) is
/// mounted, and its file name there.
const AUTH_CA_DIR: &str = "/etc/shadowcat-auth-ca";
const AUTH_CA_FILE: &str = "ca.crt";
/// Where the upstream credential (`spec.auth.upstreamCredential`) is
/// mounted, and its file name there.
const UPSTREAM_CREDENTIAL_DIR: &str = "/etc/shadowcat-upstream-credential";
const UPSTREAM_CREDENTIAL_FILE: &str = "value";
/// Where the introspection client's secret (`spec.auth.introspection`) is
/// mounted.
const INTROSPECTION_DIR: &str = "/etc/shadowcat-introspection";
/// Where the token exchange client's secret
/// (`spec.auth.upstreamCredential.tokenExchange`) is mounted.
const TOKEN_EXCHANGE_DIR: &str = "/etc/shadowcat-token-exchange";
/// The file name of a client secret in its directory.
const CLIENT_SECRET_FILE: &str = "client-secret";

/// Names of the objects an McpProxy owns.
pub fn config_map_name(proxy: &McpProxy) -> String {
    format!("{}-shadowcat", proxy.name_any())
}

/// The peer Secret's name.
pub fn peer_secret_name(proxy: &McpProxy) -> String {
    format!("{}-shadowcat-peer", proxy.name_any())
}

/// The Service's name.
pub fn service_name(proxy: &McpProxy) -> String {
    proxy
        .spec
        .service
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| proxy.name_any())
}

/// The Redis settings, when `proxy` keeps sessions in Redis.
pub fn redis(proxy: &McpProxy) -> Option<&RedisSpec> {
    let sessions = &proxy.spec.sessions;
    (sessions.store == StoreKind::Redis)
        .then_some(sessions.redis.as_ref())
        .flatten()
}

/// The sidecar config for `proxy`. No secret is in it: the Redis URL comes
/// from the environment (which overrides the file), the peer secret, the
/// authorization server's CAs, the upstream credential and the client
/// secrets for introspection and token exchange from mounted files the
/// config names.
pub fn sidecar_config(proxy: &McpProxy, defaults: &Defaults) -> SidecarConfig {
    let spec = &proxy.spec;
    let sse = SseConfig {
        max_events_per_stream: spec.replay.max_events_per_stream,
        retention: spec.replay.retention.clone(),
        response_retention: spec.replay.response_retention.clone(),
        ..Default::default()
    };
    let redis = redis(proxy);
    SidecarConfig {
        listen: Some(format!("0.0.0.0:{}", spec.listen.port)),
        admin_listen: Some(format!("0.0.0.0:{}", spec.admin_port())),
        upstream: Some(format!(
            "http://127.0.0.1:{}{}",
            spec.upstream.port, spec.upstream.path
        )),
        path: Some(spec.listen.path.clone()),
        store_prefix: redis.and_then(|r| r.key_prefix.clone()),
        log_format: Some(LogFormat::Json),
        session_idle_timeout: spec.sessions.idle_timeout.clone(),
        drain_timeout: Some(format!("{}s", (defaults.drain_seconds - 5).max(1))),
        // Endpoints take a few seconds to drop a terminating pod: serve on
        // (not ready) that long before draining. Delay plus drain stays
        // within the grace period (drain seconds + 5).
        shutdown_delay: Some(SHUTDOWN_DELAY.into()),
        peer_listen: redis.map(|_| format!("0.0.0.0:{}", spec.peer_port())),
        peer_secret_file: redis.map(|_| format!("{PEER_DIR}/{PEER_SECRET_KEY}")),
        sse: (sse != SseConfig::default()).then_some(sse),
        auth: spec.auth.as_ref().map(auth_config),
        upstream_auth: spec
            .auth
            .as_ref()
            .and_then(|a| a.upstream_credential.as_ref())
            .map(upstream_auth_config),
        // As written: the sidecar checks it with the same `PolicyConfig`
        // rules the operator ran, and reloads it from the mounted file.
        policy: spec.policy.clone(),
        ..Default::default()
    }
}

/// `spec.auth` as the sidecar's `auth`; the CA bundle and the introspection
/// client's secret by their mounted paths.
fn auth_config(auth: &AuthSpec) -> AuthConfig {
    AuthConfig {
        issuer: Some(auth.issuer.clone()),
        jwks_url: auth.jwks_url.clone(),
        resource: Some(auth.resource.clone()),
        audiences: (!auth.audiences.is_empty()).then(|| auth.audiences.clone()),
        algorithms: auth.algorithms.clone(),
        leeway: auth.leeway.clone(),
        ca_file: auth
            .ca_secret_ref
            .as_ref()
            .map(|_| format!("{AUTH_CA_DIR}/{AUTH_CA_FILE}")),
        scopes: auth.scopes.clone(),
        claim_headers: (!auth.claim_headers.is_empty()).then(|| auth.claim_headers.clone()),
        introspection: auth
            .introspection
            .as_ref()
            .map(|introspection| IntrospectionConfig {
                endpoint: introspection.endpoint.clone(),
                client_id: Some(introspection.client_id.clone()),
                client_secret_file: Some(format!("{INTROSPECTION_DIR}/{CLIENT_SECRET_FILE}")),
            }),
        ..Default::default()
    }
}

/// `spec.auth.upstreamCredential` as the sidecar's `upstreamAuth`: the
/// credential's file or the token exchange, its client secret by its
/// mounted path. Rendered as written, so a spec naming both (or neither) is
/// refused by the validation, never quietly narrowed to one.
fn upstream_auth_config(credential: &UpstreamCredentialSpec) -> UpstreamAuthConfig {
    UpstreamAuthConfig {
        header: Some(credential.header.clone()),
        value_file: credential
            .secret_ref
            .as_ref()
            .map(|_| format!("{UPSTREAM_CREDENTIAL_DIR}/{UPSTREAM_CREDENTIAL_FILE}")),
        token_exchange: credential
            .token_exchange
            .as_ref()
            .map(|exchange| TokenExchangeConfig {
                audience: Some(exchange.audience.clone()),
                client_id: Some(exchange.client_id.clone()),
                client_secret_file: Some(format!("{TOKEN_EXCHANGE_DIR}/{CLIENT_SECRET_FILE}")),
                scope: exchange.scope.clone(),
                token_endpoint: exchange.token_endpoint.clone(),
            }),
    }
}

/// Every Secret key `proxy` names, which must exist before the sidecar goes
/// in (a pod whose Secret is missing never starts).
pub fn secret_refs(proxy: &McpProxy) -> Vec<&SecretKeyRef> {
    let redis = redis(proxy).map(|r| &r.url_secret_ref);
    let auth = proxy.spec.auth.as_ref();
    let ca = auth.and_then(|a| a.ca_secret_ref.as_ref());
    let introspection = auth
        .and_then(|a| a.introspection.as_ref())
        .map(|i| &i.client_secret_ref);
    let credential = auth.and_then(|a| a.upstream_credential.as_ref());
    let value = credential.and_then(|c| c.secret_ref.as_ref());
    let exchange = credential
        .and_then(|c| c.token_exchange.as_ref())
        .map(|t| &t.client_secret_ref);
    [redis, ca, introspection, value, exchange]
        .into_iter()
        .flatten()
        .collect()
}

/// A Secret the sidecar reads as files, never through the ConfigMap or the
/// environment: one volume, mounted read-only at `dir`.
struct SecretFiles {
    volume: &'static str,
    dir: String,
    secret: String,
    /// The one key mounted and the file it becomes; every key when `None`.
    item: Option<(String, &'static str)>,
}

fn secret_files(proxy: &McpProxy) -> Vec<SecretFiles> {
    let mut files = Vec::new();
    if redis(proxy).is_some() {
        files.push(SecretFiles {
            volume: "shadowcat-peer",
            dir: PEER_DIR.to_owned(),
            secret: peer_secret_name(proxy),
            item: None,
        });
    }
    let auth = proxy.spec.auth.as_ref();
    let one_key = |volume, dir: &str, file, reference: &SecretKeyRef| SecretFiles {
        volume,
        dir: dir.to_owned(),
        secret: reference.name.clone(),
        item: Some((reference.key.clone(), file)),
    };
    if let Some(ca) = auth.and_then(|a| a.ca_secret_ref.as_ref()) {
        files.push(one_key("shadowcat-auth-ca", AUTH_CA_DIR, AUTH_CA_FILE, ca));
    }
    if let Some(introspection) = auth.and_then(|a| a.introspection.as_ref()) {
        files.push(one_key(
            "shadowcat-introspection",
            INTROSPECTION_DIR,
            CLIENT_SECRET_FILE,
            &introspection.client_secret_ref,
        ));
    }
    let credential = auth.and_then(|a| a.upstream_credential.as_ref());
    if let Some(value) = credential.and_then(|c| c.secret_ref.as_ref()) {
        files.push(one_key(
            "shadowcat-upstream-credential",
            UPSTREAM_CREDENTIAL_DIR,
            UPSTREAM_CREDENTIAL_FILE,
            value,
        ));
    }
    if let Some(exchange) = credential.and_then(|c| c.token_exchange.as_ref()) {
        files.push(one_key(
            "shadowcat-token-exchange",
            TOKEN_EXCHANGE_DIR,
            CLIENT_SECRET_FILE,
            &exchange.client_secret_ref,
        ));
    }
    for (i, mount) in proxy.spec.sidecar.secret_mounts.iter().enumerate() {
        files.push(SecretFiles {
            volume: SECRET_MOUNT_VOLUMES
                .get(i)
                .copied()
                .unwrap_or("shadowcat-secret-x"),
            dir: mount.mount_path.clone(),
            secret: mount.secret_name.clone(),
            item: None,
        });
    }
    files
}

/// Volume names of `spec.sidecar.secretMounts`, by position (a `&'static`
/// name keeps `SecretFiles` simple; the CRD caps the list at their number).
pub const SECRET_MOUNT_VOLUMES: [&str; 8] = [
    "shadowcat-secret-0",
    "shadowcat-secret-1",
    "shadowcat-secret-2",
    "shadowcat-secret-3",
    "shadowcat-secret-4",
    "shadowcat-secret-5",
    "shadowcat-secret-6",
    "shadowcat-secret-7",
];

/// The config as the file the sidecar reads, and the hash whose change
/// rolls the pods (the pod template's [`CONFIG_HASH`] annotation).
///
/// The hash leaves `policy` out. The sidecar watches its mounted config file
/// and reloads `policy` in place (the one section it reloads; anything else
/// needs a restart, so everything else is hashed): a policy change reaches
/// the pods through the ConfigMap alone, once the kubelet updates the
/// mounted file, without a rollout that would drop every client's streams.
/// Without a policy the hash is what it was before policies existed, so an
/// operator upgrade rolls nothing.
pub fn config_yaml(config: &SidecarConfig) -> Result<(String, String), serde_yaml::Error> {
    let yaml = config.to_yaml()?;
    let restart_only = SidecarConfig {
        policy: None,
        ..config.clone()
    }
    .to_yaml()?;
    let digest = Sha256::digest(restart_only.as_bytes());
    let hash = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Ok((yaml, hash))
}

pub(crate) fn owner(proxy: &McpProxy) -> Option<OwnerReference> {
    proxy.controller_owner_ref(&())
}

pub(crate) fn labels(proxy: &McpProxy) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PROXY_LABEL.to_owned(), proxy.name_any()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "shadowcat-operator".to_owned(),
        ),
    ])
}

/// The metadata of an object `proxy` owns: its name, the McpProxy's label
/// and the owner reference that takes it away with the McpProxy.
pub(crate) fn owned_meta(proxy: &McpProxy, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: proxy.namespace(),
        labels: Some(labels(proxy)),
        owner_references: owner(proxy).map(|o| vec![o]),
        ..Default::default()
    }
}

/// The ConfigMap holding the sidecar config, owned by the McpProxy.
pub fn config_map(proxy: &McpProxy, yaml: &str) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(proxy, config_map_name(proxy)),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), yaml.to_owned())])),
        ..Default::default()
    }
}

/// The sidecar container.
pub fn sidecar_container(proxy: &McpProxy, defaults: &Defaults) -> Container {
    let spec = &proxy.spec;
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector {
            field_path: path.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut env = vec![
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(field("metadata.name")),
            ..Default::default()
        },
        EnvVar {
            name: "POD_IP".into(),
            value_from: Some(field("status.podIP")),
            ..Default::default()
        },
        EnvVar {
            name: "SHADOWCAT_CONFIG".into(),
            value: Some(format!("{CONFIG_DIR}/{CONFIG_KEY}")),
            ..Default::default()
        },
    ];
    let redis = redis(proxy);
    if let Some(redis) = redis {
        env.push(EnvVar {
            name: "SHADOWCAT_STORE".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: redis.url_secret_ref.name.clone(),
                    key: redis.url_secret_ref.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(level) = &spec.sidecar.log_level {
        env.push(EnvVar {
            name: "SHADOWCAT_LOG".into(),
            value: Some(level.clone()),
            ..Default::default()
        });
    }
    env.extend(spec.sidecar.env.iter().map(|(k, v)| EnvVar {
        name: k.clone(),
        value: Some(v.clone()),
        ..Default::default()
    }));
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let mut ports = vec![
        port(MCP_PORT_NAME, spec.listen.port),
        port(ADMIN_PORT_NAME, spec.admin_port()),
    ];
    if redis.is_some() {
        ports.push(port(PEER_PORT_NAME, spec.peer_port()));
    }
    let mount = |name: &str, dir: &str| VolumeMount {
        name: name.to_owned(),
        mount_path: dir.to_owned(),
        read_only: Some(true),
        ..Default::default()
    };
    // Whole directories, never `subPath`: the kubelet updates a mounted
    // Secret in place only then, and the sidecar picks a new upstream
    // credential up from the file.
    let mounts = std::iter::once(mount("shadowcat-config", CONFIG_DIR))
        .chain(secret_files(proxy).iter().map(|f| mount(f.volume, &f.dir)))
        .collect();
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(spec.admin_port())),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    };
    // A native sidecar (an init container that keeps running): the kubelet
    // starts the MCP server only once it has started, and stops it only
    // after the server has exited, so it drains what the server answers.
    Container {
        name: CONTAINER.into(),
        image: Some(defaults.image(proxy).to_owned()),
        restart_policy: Some("Always".into()),
        env: Some(env),
        ports: Some(ports),
        volume_mounts: Some(mounts),
        // Started means listening; ready means the server answers too, which
        // it cannot before it starts, so readiness must not gate the start.
        startup_probe: Some(Probe {
            failure_threshold: Some(30),
            ..probe("/healthz", 1)
        }),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: Some(
            spec.sidecar
                .resources
                .clone()
                .unwrap_or_else(|| defaults.resources.clone()),
        ),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The volumes the sidecar needs. Secret files keep the default mode
/// (0644): they are root's, and the sidecar runs as uid 65532 in a pod whose
/// `fsGroup` the operator does not set, so 0400 would lock it out.
pub fn sidecar_volumes(proxy: &McpProxy) -> Vec<Volume> {
    let config = Volume {
        name: "shadowcat-config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(proxy),
            ..Default::default()
        }),
        ..Default::default()
    };
    let secrets = secret_files(proxy).into_iter().map(|f| Volume {
        name: f.volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(f.secret),
            items: f.item.map(|(key, path)| {
                vec![KeyToPath {
                    key,
                    path: path.into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    std::iter::once(config).chain(secrets).collect()
}

/// The `apiVersion` and `kind` of a target.
pub fn target_type(kind: TargetKind) -> (&'static str, &'static str) {
    match kind {
        TargetKind::Deployment => ("apps/v1", "Deployment"),
        TargetKind::StatefulSet => ("apps/v1", "StatefulSet"),
    }
}

/// The field manager of `proxy`'s rollout annotation: one per McpProxy, so
/// two McpProxies naming one workload conflict (409) instead of taking the
/// field from each other, and releasing it touches nothing else.
pub fn rollout_manager(proxy: &McpProxy) -> String {
    format!("shadowcat.dev/{}", proxy.name_any())
}

/// The server-side-apply patch of `rollout: auto`: the config hash on the
/// target's pod template and nothing else, so a GitOps tool owning the
/// workload sees one foreign field. `hash` `None` is the empty apply that
/// releases it.
pub fn rollout_patch(target: &TargetRef, hash: Option<&str>) -> Value {
    let (api_version, kind) = target_type(target.kind);
    let mut patch = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": target.name},
    });
    if let Some(hash) = hash {
        patch["spec"] = json!({"template": {"metadata": {"annotations": {CONFIG_HASH: hash}}}});
    }
    patch
}

/// The selector of the pods that opted in to `proxy`.
pub fn pod_selector(proxy: &McpProxy) -> BTreeMap<String, String> {
    BTreeMap::from([(PROXY_LABEL.to_owned(), proxy.name_any())])
}

mod defaults;
mod objects;

pub use defaults::Defaults;
pub use objects::{network_policy, service};

#[cfg(test)]
mod tests;

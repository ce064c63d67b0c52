//! The `McpProxy` custom resource: which workload gets the Shadowcat sidecar,
//! and how the sidecar is configured.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mcpproxy_auth::AuthSpec;
use crate::policy::PolicyConfig;

/// Puts Shadowcat in front of an MCP server workload.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "shadowcat.dev",
    version = "v1alpha1",
    kind = "McpProxy",
    plural = "mcpproxies",
    shortname = "mcpp",
    namespaced,
    status = "McpProxyStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.sessions.store"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = port_rules()))]
pub struct McpProxySpec {
    /// The Deployment or StatefulSet (in this namespace) whose pods run the
    /// MCP server. Its pod template opts in with the label
    /// `shadowcat.dev/proxy: <this McpProxy's name>`, and the operator's
    /// admission webhook adds the sidecar to each pod as it is created; the
    /// workload itself is never written (but see `rollout`). Status and
    /// readiness are read from it.
    pub target_ref: TargetRef,
    /// How a config change reaches running pods. `manual` (default): the
    /// next pod created gets it (a rollout the user starts, a scale-up, a
    /// rescheduled pod); nothing is written to the workload. `auto`: the
    /// operator sets one annotation, `shadowcat.dev/config-hash`, on the
    /// target's pod template under a field manager of its own
    /// (`shadowcat.dev/<name>`), which rolls the pods; a GitOps tool that
    /// owns the workload sees that one field change. A `policy` change never
    /// needs a rollout (the sidecar reloads it).
    #[serde(default)]
    pub rollout: Rollout,
    /// A NetworkPolicy for the pods of this McpProxy; none when absent. It
    /// lets clients reach the MCP port from `mcpFrom`, the admin port
    /// (metrics) from `adminFrom`, and the peer port only from the other
    /// pods of this McpProxy; nothing else reaches the pod, the MCP server's
    /// own port included (the sidecar is the front door).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
    /// The MCP server inside each pod.
    #[serde(default)]
    pub upstream: UpstreamSpec,
    /// Where the sidecar listens for clients.
    #[serde(default)]
    pub listen: ListenSpec,
    /// A Service in front of the sidecar; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// Where sessions and event logs live.
    #[serde(default)]
    pub sessions: SessionsSpec,
    /// How much of each event stream is kept for resumption.
    #[serde(default)]
    pub replay: ReplaySpec,
    /// Overrides for the sidecar container.
    #[serde(default)]
    pub sidecar: SidecarSpec,
    /// Verifying clients' access tokens, the sidecar as an OAuth 2.1 resource
    /// server; off when absent. Every request then needs a bearer token from
    /// `issuer` issued for `resource`. The protected resource metadata
    /// (RFC 9728) is served at `/.well-known/oauth-protected-resource` and at
    /// that path followed by the endpoint path: route both to the sidecar.
    /// The client's token never reaches the MCP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// The sidecar's policy, rendered as written into its config's `policy`:
    /// rules (CEL expressions over each MCP message, first match decides),
    /// which tools clients see and under what names, rate limits, HTTP hooks
    /// and audit events; none when absent. The sidecar reloads it without a
    /// restart once the kubelet has updated the mounted ConfigMap (within
    /// about a minute); a change to it does not roll the pods. A policy that
    /// does not check is not applied (condition `PolicyValid`), and the one
    /// in force stays. `hooks[].secretFile` is a path inside the sidecar
    /// container: the operator mounts nothing for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyConfig>,
}

/// The workload the sidecar goes into.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// `Deployment` or `StatefulSet`.
    pub kind: TargetKind,
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// How config changes reach running pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Rollout {
    /// New pods get the new config; running pods keep theirs.
    #[default]
    Manual,
    /// The operator rolls the target by one pod-template annotation.
    Auto,
}

/// Who may reach the pods of an McpProxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Who may reach the MCP port; anyone when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_from: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
    /// Who may reach the admin port (`/metrics`); no one when empty (the
    /// kubelet's probes are not subject to NetworkPolicies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_from: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

/// Environment the operator sets on the sidecar, which `sidecar.env` may
/// not.
pub const OPERATOR_ENV: [&str; 5] = [
    "POD_NAME",
    "POD_IP",
    "SHADOWCAT_CONFIG",
    "SHADOWCAT_STORE",
    "SHADOWCAT_LOG",
];

/// The sidecar's default admin port (health, readiness, metrics, drain).
pub const DEFAULT_ADMIN_PORT: u16 = 15201;
/// The sidecar's default replica-to-replica port.
pub const DEFAULT_PEER_PORT: u16 = 15202;

/// CEL rules: the four ports of a pod's sidecar and server differ.
fn port_rules() -> serde_json::Value {
    let admin = format!(
        "(has(self.sidecar) && has(self.sidecar.adminPort) ? self.sidecar.adminPort : {DEFAULT_ADMIN_PORT})"
    );
    let peer = format!(
        "(has(self.sidecar) && has(self.sidecar.peerPort) ? self.sidecar.peerPort : {DEFAULT_PEER_PORT})"
    );
    let (listen, upstream) = ("self.listen.port", "self.upstream.port");
    let rule = |a: &str, b: &str, message: &str| serde_json::json!({"rule": format!("{a} != {b}"), "message": message});
    serde_json::json!([
        rule(listen, upstream, "listen.port and upstream.port must differ"),
        rule(&admin, listen, "sidecar.adminPort must differ from listen.port"),
        rule(
            &admin,
            upstream,
            "sidecar.adminPort must differ from upstream.port"
        ),
        rule(&peer, listen, "sidecar.peerPort must differ from listen.port"),
        rule(&peer, upstream, "sidecar.peerPort must differ from upstream.port"),
        rule(
            &peer,
            &admin,
            "sidecar.peerPort must differ from sidecar.adminPort"
        ),
    ])
}

impl McpProxySpec {
    /// The sidecar's admin port.
    pub fn admin_port(&self) -> u16 {
        self.sidecar.admin_port.unwrap_or(DEFAULT_ADMIN_PORT)
    }

    /// The sidecar's peer port.
    pub fn peer_port(&self) -> u16 {
        self.sidecar.peer_port.unwrap_or(DEFAULT_PEER_PORT)
    }

    /// What is wrong with `sidecar.env`, if anything: a name that is no
    /// environment variable name, or one the operator sets (either would
    /// make the API server refuse every pod the webhook patches).
    pub fn env_problem(&self) -> Option<String> {
        self.sidecar.env.keys().find_map(|name| {
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || "-._".contains(c))
                && chars.all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
            if !valid {
                Some(format!(
                    "sidecar.env name {name:?} is not an environment variable name"
                ))
            } else if OPERATOR_ENV.contains(&name.as_str()) {
                Some(format!("sidecar.env may not set {name}: the operator sets it"))
            } else {
                None
            }
        })
    }

    /// The first pair of ports that clash, as the CRD's CEL rules say it
    /// (the operator checks it too: a CRD applied before the rules existed,
    /// or an API server that skipped them, must not crash-loop a sidecar).
    pub fn port_clash(&self) -> Option<String> {
        let ports = [
            ("listen.port", self.listen.port),
            ("upstream.port", self.upstream.port),
            ("sidecar.adminPort", self.admin_port()),
            ("sidecar.peerPort", self.peer_port()),
        ];
        ports.iter().enumerate().find_map(|(i, (a, port))| {
            ports[..i]
                .iter()
                .find(|(_, other)| other == port)
                .map(|(b, _)| format!("{a} and {b} are both {port}: they must differ"))
        })
    }
}

/// Workload kinds the operator can patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TargetKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
}

/// The MCP server in the pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// Its port on localhost.
    #[serde(default = "default_upstream_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Its Streamable HTTP endpoint path.
    #[serde(default = "default_path")]
    #[schemars(regex(pattern = r"^/[^?#\s]*$"))]
    pub path: String,
}

impl Default for UpstreamSpec {
    fn default() -> Self {
        Self {
            port: default_upstream_port(),
            path: default_path(),
        }
    }
}

/// The sidecar's public listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenSpec {
    /// Container port clients reach the sidecar on.
    #[serde(default = "default_listen_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The public MCP endpoint path.
    #[serde(default = "default_path")]
    #[schemars(regex(pattern = r"^/[^?#\s]*$"))]
    pub path: String,
}

impl Default for ListenSpec {
    fn default() -> Self {
        Self {
            port: default_listen_port(),
            path: default_path(),
        }
    }
}

/// The Service the operator makes in front of the sidecar.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Its name; the McpProxy's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its port; 80 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// `ClusterIP` (default), `NodePort` or `LoadBalancer`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<ServiceType>,
}

/// Service types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// Cluster-internal.
    ClusterIP,
    /// On every node's port.
    NodePort,
    /// Through the cloud's load balancer.
    LoadBalancer,
}

/// Session storage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.store != 'redis' || has(self.redis)", "message": "sessions.redis is required when sessions.store is redis"},
    {"rule": "self.store == 'redis' || !has(self.redis)", "message": "sessions.redis is only used when sessions.store is redis"}
]))]
pub struct SessionsSpec {
    /// `memory` (one replica) or `redis` (several replicas).
    #[serde(default)]
    pub store: StoreKind,
    /// The Redis to use when `store` is `redis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// A session idle this long ends, e.g. `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub idle_timeout: Option<String>,
}

/// Store kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In the sidecar's memory.
    #[default]
    Memory,
    /// In a Redis shared by all replicas.
    Redis,
}

/// Redis settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// The Secret key holding the `redis://` or `rediss://` URL.
    pub url_secret_ref: SecretKeyRef,
    /// Prefix of every key; `shadowcat` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^{}\s]+$"))]
    pub key_prefix: Option<String>,
}

/// A key of a Secret in the McpProxy's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Replay settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplaySpec {
    /// Events kept per stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_events_per_stream: Option<u64>,
    /// How long a standalone stream stays resumable after it ends, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub retention: Option<String>,
    /// How long a response stream (one POST's answer) stays resumable after
    /// it ends, e.g. `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub response_retention: Option<String>,
}

/// Sidecar container overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Image; the operator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resource requests and limits; the operator's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Log filter, e.g. `info` or `debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Extra environment for the sidecar. Names are environment variable
    /// names (`[-._a-zA-Z][-._a-zA-Z0-9]*`), and none the operator sets
    /// itself (`POD_NAME`, `POD_IP`, `SHADOWCAT_CONFIG`, `SHADOWCAT_STORE`,
    /// `SHADOWCAT_LOG`), or the API server would refuse every pod: the
    /// operator refuses such a spec (`ConfigValid=False`). (Not a CEL rule:
    /// a regular expression over the keys of a map whose keys have no
    /// length bound could exceed the API server's cost budget, and the CRD
    /// itself would be refused.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The admin port (health, readiness, `/metrics`, `/drain`); 15201 when
    /// absent. Must differ from the MCP server's ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin_port: Option<u16>,
    /// The replica-to-replica port (Redis store only); 15202 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub peer_port: Option<u16>,
    /// Secrets mounted read-only into the sidecar, whole, each at its
    /// `mountPath`: e.g. the file a policy hook's `secretFile` names. The
    /// operator checks each exists before it injects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub secret_mounts: Vec<SecretMount>,
}

/// A Secret mounted into the sidecar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretMount {
    /// The Secret, in the McpProxy's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// An absolute directory in the sidecar container.
    #[schemars(regex(pattern = r"^/[^\s]*$"))]
    pub mount_path: String,
}

/// What the operator last saw and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpProxyStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ConfigValid`, `PolicyValid`, `Injected`, `Ready` and
    /// `SessionsShared`, one of each type.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Hash of the rendered sidecar config without its `policy` (which the
    /// sidecar reloads in place); changes roll the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Ready replicas of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Desired replicas of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods labelled for this McpProxy that run the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_pods: Option<i32>,
    /// Of those, the pods whose sidecar runs the current config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_pods: Option<i32>,
    /// Pods labelled for this McpProxy that were created without the
    /// sidecar (the webhook was unreachable and its failure policy is
    /// `Ignore`, or it refused to inject: see the `Injected` condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_without_sidecar: Option<i32>,
    /// The workload whose pod template carries something of this
    /// McpProxy's: the rollout annotation (`rollout: auto`), or the sidecar
    /// an earlier operator version applied into the template until it is
    /// handed over to the webhook. A change of `targetRef`, or the
    /// McpProxy's deletion, releases it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_target: Option<TargetRef>,
}

fn default_upstream_port() -> u16 {
    3000
}

fn default_listen_port() -> u16 {
    8080
}

fn default_path() -> String {
    "/mcp".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRD's port rules, run by a CEL interpreter on specs as the API
    /// server sees them (serde's defaults filled in), agree with
    /// `port_clash` on every combination of a few ports, set or not.
    #[test]
    fn port_rules_in_cel_agree_with_port_clash() {
        let rules: Vec<(cel::Program, String)> = port_rules()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let rule = r["rule"].as_str().unwrap();
                (
                    cel::Program::compile(rule).unwrap(),
                    r["message"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let choices = [None, Some(3000), Some(8080), Some(15201), Some(15202), Some(9000)];
        let mut clashes = 0;
        for listen in [3000, 8080] {
            for upstream in [3000, 8080, 15201] {
                for admin in choices {
                    for peer in choices {
                        let mut spec: McpProxySpec =
                            serde_yaml::from_str("targetRef: {kind: Deployment, name: e}").unwrap();
                        spec.listen.port = listen;
                        spec.upstream.port = upstream;
                        spec.sidecar.admin_port = admin;
                        spec.sidecar.peer_port = peer;
                        let mut context = cel::Context::default();
                        context.add_variable_from_value("self", cel::to_value(&spec).unwrap());
                        let failed: Vec<&str> = rules
                            .iter()
                            .filter(|(program, _)| {
                                program.execute(&context).unwrap() != cel::Value::Bool(true)
                            })
                            .map(|(_, message)| message.as_str())
                            .collect();
                        let clash = spec.port_clash();
                        assert_eq!(
                            !failed.is_empty(),
                            clash.is_some(),
                            "{spec:?}: CEL {failed:?}, Rust {clash:?}"
                        );
                        clashes += usize::from(clash.is_some());
                    }
                }
            }
        }
        assert!(clashes > 50, "the grid has clashes to find: {clashes}");
    }

    /// `env_problem` names what the API server would refuse in a pod.
    #[test]
    fn env_names_the_api_server_would_refuse_are_found() {
        for (name, ok) in [
            ("HTTP_PROXY", true),
            ("my.var-1", true),
            ("_x", true),
            ("1ABC", false),
            ("A B", false),
            ("", false),
            ("A=B", false),
            ("POD_NAME", false),
            ("SHADOWCAT_STORE", false),
        ] {
            let mut spec: McpProxySpec =
                serde_yaml::from_str("targetRef: {kind: Deployment, name: e}").unwrap();
            spec.sidecar.env.insert(name.into(), "v".into());
            assert_eq!(
                spec.env_problem().is_none(),
                ok,
                "{name:?}: {:?}",
                spec.env_problem()
            );
        }
    }

    #[test]
    fn policy_reads_as_users_write_it() {
        let spec: McpProxySpec = serde_yaml::from_str(
            "
targetRef: {kind: Deployment, name: everything}
policy:
  rules:
    - id: readers-read-only
      when: \"'mcp-readers' in principal.claims.groups && method == 'tools/call'\"
      action: deny
  tools: {exclude: ['admin_*']}
  rateLimits:
    - {id: per-user, key: [principal], requests: 60, per: 1m}
  hooks:
    - {id: scan, url: 'https://hooks.internal/scan', secretFile: /etc/hooks/secret}
  audit: {to: stdout}
",
        )
        .unwrap();
        let policy = spec.policy.unwrap();
        assert_eq!(policy.rules[0].action, crate::policy::Decision::Deny);
        assert_eq!(policy.tools.unwrap().exclude, ["admin_*"]);
        assert_eq!(policy.rate_limits[0].key, [crate::policy::LimitKey::Principal]);
        assert_eq!(policy.hooks[0].secret_file.as_deref(), Some("/etc/hooks/secret"));
        assert_eq!(policy.audit.unwrap().to, "stdout");
        let none: McpProxySpec = serde_yaml::from_str("targetRef: {kind: Deployment, name: e}").unwrap();
        assert_eq!(none.policy, None);
        assert!(
            serde_yaml::from_str::<McpProxySpec>(
                "{targetRef: {kind: Deployment, name: e}, policy: {rulez: []}}"
            )
            .is_err(),
            "a misspelt key is refused, not ignored"
        );
    }
}

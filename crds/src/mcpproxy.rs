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
pub struct McpProxySpec {
    /// The Deployment or StatefulSet (in this namespace) whose pods get the sidecar.
    pub target_ref: TargetRef,
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
    /// Extra environment for the sidecar.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// What the operator last saw and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpProxyStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `ConfigValid`, `PolicyValid`, `Injected`, `Ready`.
    #[serde(default)]
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

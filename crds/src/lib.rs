//! The API shared by Shadowcat's operator and its sidecar.
//!
//! [`SidecarConfig`] is the sidecar's configuration as a user (or the operator)
//! writes it: every field optional, so a YAML file, environment variables and
//! flags can be layered. [`SidecarConfig::validate`] turns a layered config into
//! [`Settings`], which cannot hold an invalid value.
#![forbid(unsafe_code)]

mod auth;
mod config;
mod mcpproxy;
mod mcpproxy_auth;
mod policy;
mod settings;
mod store;
mod upstream_auth;

pub use auth::{
    AuthConfig, AuthSettings, DEFAULT_ALGORITHMS, IntrospectionConfig, IntrospectionSettings, ScopesConfig,
    canonical_uri,
};
pub use config::{LogFormat, RedisConfig, SidecarConfig, SseConfig};
pub use mcpproxy::{
    DEFAULT_ADMIN_PORT, DEFAULT_PEER_PORT, ListenSpec, McpProxy, McpProxySpec, McpProxyStatus,
    NetworkPolicySpec, OPERATOR_ENV, RedisSpec, ReplaySpec, Rollout, SecretKeyRef, SecretMount, ServiceSpec,
    ServiceType, SessionsSpec, SidecarSpec, StoreKind, TargetKind, TargetRef, UpstreamSpec,
};
pub use mcpproxy_auth::{AuthSpec, IntrospectionSpec, TokenExchangeSpec, UpstreamCredentialSpec};
pub use policy::{
    AuditConfig, CEL_VARIABLES, Decision, FailurePolicy, HookConfig, LimitKey, PolicyConfig, PolicyError,
    RateLimitConfig, Refill, RenameConfig, RuleConfig, ToolsConfig, compile_cel,
};
pub use settings::{Allow, ConfigError, Settings, SseSettings};
pub use store::{RedisSettings, RedisTopology, RedisUrl, StoreSettings};
pub use upstream_auth::{
    TokenExchangeConfig, TokenExchangeSettings, UpstreamAuthConfig, UpstreamAuthSettings,
};

//! The raw sidecar configuration: what a YAML file, the environment and flags say.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::AuthConfig;
use crate::policy::PolicyConfig;
use crate::upstream_auth::UpstreamAuthConfig;

/// The sidecar's configuration as written. Every field is optional so layers
/// (flags over environment over file over defaults) can be merged with
/// [`SidecarConfig::or`]; [`SidecarConfig::validate`] checks the result.
///
/// Durations are strings such as `30s`, `5m` or `1h30m`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarConfig {
    /// Address of the public MCP listener. Default `127.0.0.1:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`).
    /// Default `127.0.0.1:9090`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// URL of the pod-local MCP server's Streamable HTTP endpoint, e.g.
    /// `http://127.0.0.1:3000/mcp`. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Path of the public MCP endpoint. Default `/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Where sessions and event logs live: `memory` (default) or a
    /// Redis URL: `redis://` or `rediss://` (TLS) for one server,
    /// `redis+cluster://host:port,host:port` (or `rediss+cluster://`) for a
    /// Redis Cluster, given any of its nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Prefix of every key Shadowcat writes to Redis. Default `shadowcat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_prefix: Option<String>,
    /// Address of the peer listener, where replicas forward requests for the
    /// sessions they do not own. Default `0.0.0.0:8081`. Serves only when
    /// `peerSecretFile` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<String>,
    /// File holding the secret replicas share to authenticate peer requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_secret_file: Option<String>,
    /// The `host:port` other replicas reach this one's peer listener at.
    /// Default `$POD_IP:<peer port>`, else the peer listener's own address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
    /// Log output: `json` (default) or `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// A session unused for this long ends. Default `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_idle_timeout: Option<String>,
    /// Largest accepted request body in bytes. Default 4 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// How long to wait for the upstream's response headers. Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout: Option<String>,
    /// How long a shutdown may take before remaining work is abandoned.
    /// Default `25s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<String>,
    /// Allowed values of the `Origin` request header (a request carrying
    /// another one gets 403). Unset: on a loopback listener only localhost
    /// origins, on any other listener every origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    /// Allowed values of the `Host` request header, as `host` (any port) or
    /// `host:port` (a request naming another host gets 403). Unset: on a
    /// loopback listener only `localhost`, `127.0.0.1` and `[::1]`, on any
    /// other listener every host. This keeps the DNS-rebinding protection a
    /// local server would have on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
    /// Sessions this replica holds at most; beyond, new ones get 503 with
    /// `Retry-After`. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u64>,
    /// New sessions per second this replica accepts (a token bucket as deep
    /// as one second); beyond, 503 with `Retry-After`. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_rate: Option<u64>,
    /// Open connections per listener (public, peer); a connection beyond it
    /// is closed at once and counted. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Bytes of request bodies held at once, all requests together; a body
    /// that finds no room within a few seconds gets 503. At least
    /// `maxBodyBytes`. Default 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes_in_flight: Option<u64>,
    /// Time a client has to send a request's headers (and, after them, its
    /// body); it is also how long an idle keep-alive connection stays open.
    /// Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_read_timeout: Option<String>,
    /// After SIGTERM, how long to keep serving (while `/readyz` already says
    /// 503) before draining, so load balancers stop sending first. Default `0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_delay: Option<String>,
    /// Bytes of events the memory store keeps in all; past it the oldest
    /// finished logs go first, then the oldest events of the growing log.
    /// Default 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_max_bytes: Option<u64>,
    /// Redis connection details beyond the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    /// Server-sent event streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<SseConfig>,
    /// Verifying clients' access tokens (off unless `auth.issuer` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// Credentials for the upstream, sent in place of the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<UpstreamAuthConfig>,
    /// Rules, tool filtering, rate limits, hooks and audit applied to every
    /// MCP message (none by default). Reloaded when the config file changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyConfig>,
}

/// Redis settings beyond the `store` URL.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisConfig {
    /// PEM file of the CA that signed the Redis server's certificate
    /// (`rediss://`); default: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM client certificate for mutual TLS (with `clientKeyFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    /// PEM private key of `clientCertFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
    /// Replicas that must acknowledge each event (Redis `WAIT`) before any
    /// client sees it, so a failover loses no event a client saw. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_replicas: Option<u64>,
    /// How long an append waits for those acknowledgements before it counts
    /// as failed (and is retried). Default `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout: Option<String>,
}

/// SSE stream settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SseConfig {
    /// A comment line goes out on a stream idle this long. Default `15s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_interval: Option<String>,
    /// Close a client connection after this long, sending `retry:` first, so
    /// the client reconnects with `Last-Event-ID` (SSE polling). Default: no
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_time: Option<String>,
    /// The reconnection delay sent in `retry:` when Shadowcat closes a
    /// connection. Default `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Events kept per stream for replay; older ones are dropped. Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events_per_stream: Option<u64>,
    /// Event logs kept in all by the memory store; past it the oldest
    /// finished log is dropped. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u64>,
    /// How long a standalone (GET) stream's events are kept for replay after
    /// the stream ends. Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// How long a response stream (the answer to one POST) stays replayable
    /// after it ends: long enough for a client that lost the connection to
    /// come back, short enough that a busy session's finished calls do not
    /// pile up. Default `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_retention: Option<String>,
    /// How long a response stream keeps reading the upstream after its client
    /// went away, waiting for the final response. Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_limit: Option<String>,
    /// Largest event (and line) Shadowcat accepts from the upstream; a larger
    /// one ends the stream, and its pending requests get a JSON-RPC error.
    /// Default 4 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_bytes: Option<u64>,
    /// Bytes of events kept per stream (memory store); older events are
    /// dropped first, the newest is always kept. Default 8 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_bytes: Option<u64>,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

impl SidecarConfig {
    /// Parses a YAML document. Unknown keys are refused, naming the key.
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text)
    }

    /// Renders the config as YAML.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(self)
    }

    /// Layers `self` over `lower`: a field set here wins, an unset one falls
    /// through.
    pub fn or(self, lower: Self) -> Self {
        Self {
            listen: self.listen.or(lower.listen),
            admin_listen: self.admin_listen.or(lower.admin_listen),
            upstream: self.upstream.or(lower.upstream),
            path: self.path.or(lower.path),
            store: self.store.or(lower.store),
            store_prefix: self.store_prefix.or(lower.store_prefix),
            peer_listen: self.peer_listen.or(lower.peer_listen),
            peer_secret_file: self.peer_secret_file.or(lower.peer_secret_file),
            advertise_addr: self.advertise_addr.or(lower.advertise_addr),
            log_format: self.log_format.or(lower.log_format),
            session_idle_timeout: self.session_idle_timeout.or(lower.session_idle_timeout),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            upstream_timeout: self.upstream_timeout.or(lower.upstream_timeout),
            drain_timeout: self.drain_timeout.or(lower.drain_timeout),
            allowed_origins: self.allowed_origins.or(lower.allowed_origins),
            allowed_hosts: self.allowed_hosts.or(lower.allowed_hosts),
            max_sessions: self.max_sessions.or(lower.max_sessions),
            session_rate: self.session_rate.or(lower.session_rate),
            max_connections: self.max_connections.or(lower.max_connections),
            max_body_bytes_in_flight: self.max_body_bytes_in_flight.or(lower.max_body_bytes_in_flight),
            header_read_timeout: self.header_read_timeout.or(lower.header_read_timeout),
            shutdown_delay: self.shutdown_delay.or(lower.shutdown_delay),
            store_max_bytes: self.store_max_bytes.or(lower.store_max_bytes),
            redis: match (self.redis, lower.redis) {
                (Some(upper), Some(lower)) => Some(upper.or(lower)),
                (upper, lower) => upper.or(lower),
            },
            sse: match (self.sse, lower.sse) {
                (Some(upper), Some(lower)) => Some(upper.or(lower)),
                (upper, lower) => upper.or(lower),
            },
            auth: match (self.auth, lower.auth) {
                (Some(upper), Some(lower)) => Some(upper.or(lower)),
                (upper, lower) => upper.or(lower),
            },
            upstream_auth: match (self.upstream_auth, lower.upstream_auth) {
                (Some(upper), Some(lower)) => Some(upper.or(lower)),
                (upper, lower) => upper.or(lower),
            },
            // A policy is one piece: a layer that has one replaces the lower's.
            policy: self.policy.or(lower.policy),
        }
    }
}

impl RedisConfig {
    /// Layers `self` over `lower`, field by field.
    pub fn or(self, lower: Self) -> Self {
        Self {
            ca_file: self.ca_file.or(lower.ca_file),
            client_cert_file: self.client_cert_file.or(lower.client_cert_file),
            client_key_file: self.client_key_file.or(lower.client_key_file),
            wait_replicas: self.wait_replicas.or(lower.wait_replicas),
            wait_timeout: self.wait_timeout.or(lower.wait_timeout),
        }
    }
}

impl SseConfig {
    /// Layers `self` over `lower`, field by field.
    pub fn or(self, lower: Self) -> Self {
        Self {
            keep_alive_interval: self.keep_alive_interval.or(lower.keep_alive_interval),
            max_connection_time: self.max_connection_time.or(lower.max_connection_time),
            retry: self.retry.or(lower.retry),
            max_events_per_stream: self.max_events_per_stream.or(lower.max_events_per_stream),
            max_streams: self.max_streams.or(lower.max_streams),
            retention: self.retention.or(lower.retention),
            response_retention: self.response_retention.or(lower.response_retention),
            drain_limit: self.drain_limit.or(lower.drain_limit),
            max_event_bytes: self.max_event_bytes.or(lower.max_event_bytes),
            max_log_bytes: self.max_log_bytes.or(lower.max_log_bytes),
        }
    }
}

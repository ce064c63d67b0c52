//! Command-line flags, each with a `SHADOWCAT_*` environment twin, layered
//! over the YAML config file: flag > environment > file > default.

use std::path::PathBuf;

use clap::Parser;
use shadowcat_crds::{
    AuthConfig, IntrospectionConfig, LogFormat, RedisConfig, ScopesConfig, SidecarConfig, SseConfig,
    TokenExchangeConfig, UpstreamAuthConfig,
};

/// Shadowcat: an MCP Streamable HTTP sidecar with durable sessions and
/// resumable event streams.
///
/// Run it in front of an MCP server (`--upstream http://127.0.0.1:3000/mcp`),
/// or let it start the server: `shadowcat --upstream URL -- CMD ARGS...`.
#[derive(Debug, Parser)]
#[command(name = "shadowcat", version)]
pub struct Cli {
    /// YAML config file (SidecarConfig); flags and environment override it.
    #[arg(long, env = "SHADOWCAT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the public MCP listener [default: 127.0.0.1:8080].
    #[arg(long, env = "SHADOWCAT_LISTEN")]
    pub listen: Option<String>,
    /// Address of the admin listener (/healthz, /readyz, /metrics) [default: 127.0.0.1:9090].
    #[arg(long, env = "SHADOWCAT_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// The pod-local MCP server's endpoint, e.g. http://127.0.0.1:3000/mcp.
    #[arg(long, env = "SHADOWCAT_UPSTREAM")]
    pub upstream: Option<String>,
    /// Path of the public MCP endpoint [default: /mcp].
    #[arg(long, env = "SHADOWCAT_PATH")]
    pub path: Option<String>,
    /// Session and event store: `memory`, a redis:// or rediss:// URL, or redis+cluster://host:port,host:port [default: memory].
    #[arg(long, env = "SHADOWCAT_STORE")]
    pub store: Option<String>,
    /// Bytes of events the memory store keeps in all [default: 67108864].
    #[arg(long, env = "SHADOWCAT_STORE_MAX_BYTES")]
    pub store_max_bytes: Option<u64>,
    /// PEM CA certificate for rediss:// [default: the system's roots].
    #[arg(long, env = "SHADOWCAT_REDIS_CA_FILE")]
    pub redis_ca_file: Option<String>,
    /// PEM client certificate for Redis mutual TLS.
    #[arg(long, env = "SHADOWCAT_REDIS_CLIENT_CERT_FILE")]
    pub redis_client_cert_file: Option<String>,
    /// PEM private key of --redis-client-cert-file.
    #[arg(long, env = "SHADOWCAT_REDIS_CLIENT_KEY_FILE")]
    pub redis_client_key_file: Option<String>,
    /// Redis replicas that must acknowledge an event (WAIT) before a client sees it [default: 0].
    #[arg(long, env = "SHADOWCAT_REDIS_WAIT_REPLICAS")]
    pub redis_wait_replicas: Option<u64>,
    /// How long an append waits for those acknowledgements [default: 1s].
    #[arg(long, env = "SHADOWCAT_REDIS_WAIT_TIMEOUT")]
    pub redis_wait_timeout: Option<String>,
    /// Prefix of every Redis key [default: shadowcat].
    #[arg(long, env = "SHADOWCAT_STORE_PREFIX")]
    pub store_prefix: Option<String>,
    /// Peer listener for replica-to-replica forwarding [default: 0.0.0.0:8081; only with --peer-secret-file].
    #[arg(long, env = "SHADOWCAT_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    /// File holding the secret shared by all replicas (HMAC of peer requests).
    #[arg(long, env = "SHADOWCAT_PEER_SECRET_FILE")]
    pub peer_secret_file: Option<String>,
    /// host:port other replicas reach this one at [default: $POD_IP:<peer port>, else the peer listener's address].
    #[arg(long, env = "SHADOWCAT_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Log format: json or text [default: json].
    #[arg(long, env = "SHADOWCAT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// End sessions idle this long [default: 30m].
    #[arg(long, env = "SHADOWCAT_SESSION_IDLE_TIMEOUT")]
    pub session_idle_timeout: Option<String>,
    /// Largest request body in bytes [default: 4194304].
    #[arg(long, env = "SHADOWCAT_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Time allowed for the upstream's response headers [default: 5m].
    #[arg(long, env = "SHADOWCAT_UPSTREAM_TIMEOUT")]
    pub upstream_timeout: Option<String>,
    /// Time allowed for a graceful shutdown [default: 25s].
    #[arg(long, env = "SHADOWCAT_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// Allowed Origin values, comma-separated [default: localhost origins on a loopback listener, else any].
    #[arg(long, env = "SHADOWCAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Allowed Host values (host or host:port), comma-separated [default: loopback names on a loopback listener, else any].
    #[arg(long, env = "SHADOWCAT_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Sessions this replica holds at most; beyond, 503 [default: 10000].
    #[arg(long, env = "SHADOWCAT_MAX_SESSIONS")]
    pub max_sessions: Option<u64>,
    /// New sessions per second this replica accepts; beyond, 503 [default: 100].
    #[arg(long, env = "SHADOWCAT_SESSION_RATE")]
    pub session_rate: Option<u64>,
    /// Bytes of request bodies held at once; beyond, requests wait briefly, then 503 [default: 67108864].
    #[arg(long, env = "SHADOWCAT_MAX_BODY_BYTES_IN_FLIGHT")]
    pub max_body_bytes_in_flight: Option<u64>,
    /// Open connections per listener; beyond, closed at once [default: 10000].
    #[arg(long, env = "SHADOWCAT_MAX_CONNECTIONS")]
    pub max_connections: Option<u64>,
    /// Time to send request headers (and then the body); also the idle keep-alive timeout [default: 30s].
    #[arg(long, env = "SHADOWCAT_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<String>,
    /// After SIGTERM, keep serving (not ready) this long before draining [default: 0s].
    #[arg(long, env = "SHADOWCAT_SHUTDOWN_DELAY")]
    pub shutdown_delay: Option<String>,
    /// Send a keep-alive comment on a stream idle this long [default: 15s].
    #[arg(long, env = "SHADOWCAT_SSE_KEEP_ALIVE_INTERVAL")]
    pub sse_keep_alive_interval: Option<String>,
    /// Close client SSE connections after this long, with `retry:` [default: no limit].
    #[arg(long, env = "SHADOWCAT_SSE_MAX_CONNECTION_TIME")]
    pub sse_max_connection_time: Option<String>,
    /// Reconnection delay advertised with `retry:` [default: 1s].
    #[arg(long, env = "SHADOWCAT_SSE_RETRY")]
    pub sse_retry: Option<String>,
    /// Events kept per stream for replay [default: 1024].
    #[arg(long, env = "SHADOWCAT_SSE_MAX_EVENTS_PER_STREAM")]
    pub sse_max_events_per_stream: Option<u64>,
    /// Event logs kept in all; the oldest finished one goes first [default: 10000].
    #[arg(long, env = "SHADOWCAT_SSE_MAX_STREAMS")]
    pub sse_max_streams: Option<u64>,
    /// How long a finished standalone (GET) stream stays replayable [default: 10m].
    #[arg(long, env = "SHADOWCAT_SSE_RETENTION")]
    pub sse_retention: Option<String>,
    /// How long a finished response stream (one POST's answer) stays replayable [default: 1m].
    #[arg(long, env = "SHADOWCAT_SSE_RESPONSE_RETENTION")]
    pub sse_response_retention: Option<String>,
    /// How long a response stream keeps draining after its client left [default: 5m].
    #[arg(long, env = "SHADOWCAT_SSE_DRAIN_LIMIT")]
    pub sse_drain_limit: Option<String>,
    /// Largest upstream event (and line) in bytes [default: 4194304].
    #[arg(long, env = "SHADOWCAT_SSE_MAX_EVENT_BYTES")]
    pub sse_max_event_bytes: Option<u64>,
    /// Bytes of events kept per stream (memory store) [default: 8388608].
    #[arg(long, env = "SHADOWCAT_SSE_MAX_LOG_BYTES")]
    pub sse_max_log_bytes: Option<u64>,
    /// Verify access tokens issued by this authorization server (issuer URL); off when unset.
    #[arg(long, env = "SHADOWCAT_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// This endpoint's URL as clients reach it: the metadata's `resource` and the tokens' audience (required with --auth-issuer).
    #[arg(long, env = "SHADOWCAT_AUTH_RESOURCE")]
    pub auth_resource: Option<String>,
    /// The issuer's JWKS URL [default: found through the issuer's metadata].
    #[arg(long, env = "SHADOWCAT_AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,
    /// Further accepted token audiences, comma-separated [default: the resource only].
    #[arg(long, env = "SHADOWCAT_AUTH_AUDIENCES", value_delimiter = ',')]
    pub auth_audiences: Option<Vec<String>>,
    /// Accepted signature algorithms, comma-separated [default: RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,EdDSA].
    #[arg(long, env = "SHADOWCAT_AUTH_ALGORITHMS", value_delimiter = ',')]
    pub auth_algorithms: Option<Vec<String>>,
    /// Scopes every request needs, comma-separated [default: none].
    #[arg(long, env = "SHADOWCAT_AUTH_SCOPES", value_delimiter = ',')]
    pub auth_scopes: Option<Vec<String>>,
    /// Clock skew allowed on a token's exp and nbf [default: 30s].
    #[arg(long, env = "SHADOWCAT_AUTH_LEEWAY")]
    pub auth_leeway: Option<String>,
    /// How often the issuer's keys are fetched again [default: 10m].
    #[arg(long, env = "SHADOWCAT_AUTH_JWKS_REFRESH_INTERVAL")]
    pub auth_jwks_refresh_interval: Option<String>,
    /// Fewest time between two key fetches caused by an unknown key id [default: 10s].
    #[arg(long, env = "SHADOWCAT_AUTH_JWKS_MIN_REFRESH_INTERVAL")]
    pub auth_jwks_min_refresh_interval: Option<String>,
    /// PEM CAs to trust for the authorization server, beyond the system's roots.
    #[arg(long, env = "SHADOWCAT_AUTH_CA_FILE")]
    pub auth_ca_file: Option<String>,
    /// Client id for introspecting opaque tokens (RFC 7662); without it only JWTs are accepted.
    #[arg(long, env = "SHADOWCAT_AUTH_INTROSPECTION_CLIENT_ID")]
    pub auth_introspection_client_id: Option<String>,
    /// File with that client's secret.
    #[arg(long, env = "SHADOWCAT_AUTH_INTROSPECTION_CLIENT_SECRET_FILE")]
    pub auth_introspection_client_secret_file: Option<String>,
    /// The introspection endpoint [default: the issuer metadata's].
    #[arg(long, env = "SHADOWCAT_AUTH_INTROSPECTION_ENDPOINT")]
    pub auth_introspection_endpoint: Option<String>,
    /// Header carrying the upstream credential [default: Authorization].
    #[arg(long, env = "SHADOWCAT_UPSTREAM_AUTH_HEADER")]
    pub upstream_auth_header: Option<String>,
    /// File with the upstream credential header's value (a mounted Secret), sent on every upstream request.
    #[arg(long, env = "SHADOWCAT_UPSTREAM_AUTH_FILE")]
    pub upstream_auth_file: Option<String>,
    /// Exchange each client's token (RFC 8693) for one meant for this upstream audience, sent to the upstream instead.
    #[arg(long, env = "SHADOWCAT_UPSTREAM_TOKEN_EXCHANGE_AUDIENCE")]
    pub upstream_token_exchange_audience: Option<String>,
    /// Shadowcat's client id for the token exchange.
    #[arg(long, env = "SHADOWCAT_UPSTREAM_TOKEN_EXCHANGE_CLIENT_ID")]
    pub upstream_token_exchange_client_id: Option<String>,
    /// File with that client's secret.
    #[arg(long, env = "SHADOWCAT_UPSTREAM_TOKEN_EXCHANGE_CLIENT_SECRET_FILE")]
    pub upstream_token_exchange_client_secret_file: Option<String>,
    /// Scopes to ask for in the exchange [default: those of the client's token].
    #[arg(long, env = "SHADOWCAT_UPSTREAM_TOKEN_EXCHANGE_SCOPE")]
    pub upstream_token_exchange_scope: Option<String>,
    /// Token endpoint for the exchange [default: the issuer metadata's].
    #[arg(long, env = "SHADOWCAT_UPSTREAM_TOKEN_EXCHANGE_ENDPOINT")]
    pub upstream_token_exchange_endpoint: Option<String>,
    /// This replica's id [default: $POD_NAME, else $HOSTNAME, else "shadowcat"].
    #[arg(long, env = "SHADOWCAT_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// A command that runs the upstream MCP server as a child process.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `--log-format` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormatArg {
    /// JSON lines.
    Json,
    /// Human-readable text.
    Text,
}

impl Cli {
    /// The config layer the flags and environment make.
    pub fn layer(&self) -> SidecarConfig {
        let sse = SseConfig {
            keep_alive_interval: self.sse_keep_alive_interval.clone(),
            max_connection_time: self.sse_max_connection_time.clone(),
            retry: self.sse_retry.clone(),
            max_events_per_stream: self.sse_max_events_per_stream,
            max_streams: self.sse_max_streams,
            retention: self.sse_retention.clone(),
            response_retention: self.sse_response_retention.clone(),
            drain_limit: self.sse_drain_limit.clone(),
            max_event_bytes: self.sse_max_event_bytes,
            max_log_bytes: self.sse_max_log_bytes,
        };
        let redis = RedisConfig {
            ca_file: self.redis_ca_file.clone(),
            client_cert_file: self.redis_client_cert_file.clone(),
            client_key_file: self.redis_client_key_file.clone(),
            wait_replicas: self.redis_wait_replicas,
            wait_timeout: self.redis_wait_timeout.clone(),
        };
        let introspection = IntrospectionConfig {
            endpoint: self.auth_introspection_endpoint.clone(),
            client_id: self.auth_introspection_client_id.clone(),
            client_secret_file: self.auth_introspection_client_secret_file.clone(),
        };
        let auth = AuthConfig {
            issuer: self.auth_issuer.clone(),
            jwks_url: self.auth_jwks_url.clone(),
            resource: self.auth_resource.clone(),
            audiences: self.auth_audiences.clone(),
            algorithms: self.auth_algorithms.clone(),
            leeway: self.auth_leeway.clone(),
            jwks_refresh_interval: self.auth_jwks_refresh_interval.clone(),
            jwks_min_refresh_interval: self.auth_jwks_min_refresh_interval.clone(),
            ca_file: self.auth_ca_file.clone(),
            scopes: self.auth_scopes.clone().map(|default| ScopesConfig {
                default: Some(default),
                ..Default::default()
            }),
            introspection: (introspection != IntrospectionConfig::default()).then_some(introspection),
            ..Default::default()
        };
        let exchange = TokenExchangeConfig {
            audience: self.upstream_token_exchange_audience.clone(),
            client_id: self.upstream_token_exchange_client_id.clone(),
            client_secret_file: self.upstream_token_exchange_client_secret_file.clone(),
            scope: self.upstream_token_exchange_scope.clone(),
            token_endpoint: self.upstream_token_exchange_endpoint.clone(),
        };
        let upstream_auth = UpstreamAuthConfig {
            header: self.upstream_auth_header.clone(),
            value_file: self.upstream_auth_file.clone(),
            token_exchange: (exchange != TokenExchangeConfig::default()).then_some(exchange),
        };
        SidecarConfig {
            listen: self.listen.clone(),
            admin_listen: self.admin_listen.clone(),
            upstream: self.upstream.clone(),
            path: self.path.clone(),
            store: self.store.clone(),
            store_prefix: self.store_prefix.clone(),
            peer_listen: self.peer_listen.clone(),
            peer_secret_file: self.peer_secret_file.clone(),
            advertise_addr: self.advertise_addr.clone(),
            log_format: self.log_format.map(|f| match f {
                LogFormatArg::Json => LogFormat::Json,
                LogFormatArg::Text => LogFormat::Text,
            }),
            session_idle_timeout: self.session_idle_timeout.clone(),
            max_body_bytes: self.max_body_bytes,
            upstream_timeout: self.upstream_timeout.clone(),
            drain_timeout: self.drain_timeout.clone(),
            allowed_origins: self.allowed_origins.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            max_sessions: self.max_sessions,
            session_rate: self.session_rate,
            max_connections: self.max_connections,
            max_body_bytes_in_flight: self.max_body_bytes_in_flight,
            header_read_timeout: self.header_read_timeout.clone(),
            shutdown_delay: self.shutdown_delay.clone(),
            store_max_bytes: self.store_max_bytes,
            redis: (redis != RedisConfig::default()).then_some(redis),
            sse: (sse != SseConfig::default()).then_some(sse),
            auth: (auth != AuthConfig::default()).then_some(auth),
            upstream_auth: (upstream_auth != UpstreamAuthConfig::default()).then_some(upstream_auth),
            // Policy comes from the config file only (and reloads from it).
            policy: None,
        }
    }

    /// The replica id: the flag, else the pod name, else the host name.
    pub fn replica_id(&self) -> String {
        self.replica_id
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "shadowcat".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::try_parse_from([
            "shadowcat",
            "--path",
            "/flag",
            "--sse-retry",
            "2s",
            "--",
            "node",
            "s.js",
        ])
        .unwrap();
        let file = SidecarConfig::from_yaml("upstream: http://h:1/mcp\npath: /file\nsse:\n  retention: 1m\n")
            .unwrap();
        let settings = cli.layer().or(file).validate().unwrap();
        assert_eq!(settings.path, "/flag");
        assert_eq!(settings.sse.retry, std::time::Duration::from_secs(2));
        assert_eq!(settings.sse.retention, std::time::Duration::from_secs(60));
        assert_eq!(cli.command, vec!["node", "s.js"]);
    }
}

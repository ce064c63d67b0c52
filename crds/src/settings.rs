//! Validated sidecar settings: what [`SidecarConfig`] becomes once every value
//! has been checked.

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;

use crate::auth::AuthSettings;
use crate::config::{LogFormat, SidecarConfig, SseConfig};
use crate::policy::PolicyConfig;
use crate::store::StoreSettings;
use crate::upstream_auth::{TokenExchangeSettings, UpstreamAuthSettings};

/// A configuration value that cannot be used. The message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid config `{key}`: {reason}")]
pub struct ConfigError {
    /// The config key, as written in YAML (`sse.keepAliveInterval`).
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

/// Which values of a request header (`Host`, `Origin`) are accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allow {
    /// Any value.
    Any,
    /// Loopback names only (`localhost`, `127.0.0.1`, `[::1]`), any port:
    /// the default on a loopback listener.
    Loopback,
    /// These values (a host without a port matches any port).
    List(Vec<String>),
}

/// Validated SSE settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseSettings {
    /// Idle time after which a keep-alive comment is sent.
    pub keep_alive_interval: Duration,
    /// Longest a client connection is held before it is closed with `retry:`.
    pub max_connection_time: Option<Duration>,
    /// Reconnection delay advertised with `retry:`.
    pub retry: Duration,
    /// Events kept per stream.
    pub max_events_per_stream: usize,
    /// Event logs kept in all (memory store).
    pub max_streams: usize,
    /// How long a finished standalone stream's events stay replayable.
    pub retention: Duration,
    /// How long a finished response stream's events stay replayable.
    pub response_retention: Duration,
    /// How long a pump keeps draining after its client went away.
    pub drain_limit: Duration,
    /// Largest event (and line) accepted from the upstream.
    pub max_event_bytes: usize,
    /// Bytes of events kept per stream (memory store).
    pub max_log_bytes: usize,
}

/// Validated sidecar settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Public MCP listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Peer listener (replica-to-replica forwarding).
    pub peer_listen: SocketAddr,
    /// File with the shared peer secret; no peer listener without it.
    pub peer_secret_file: Option<String>,
    /// Address other replicas reach this one at, if set explicitly.
    pub advertise_addr: Option<String>,
    /// The upstream MCP endpoint (`http://`).
    pub upstream: Uri,
    /// Public MCP endpoint path.
    pub path: String,
    /// Session and event store.
    pub store: StoreSettings,
    /// Log format.
    pub log_format: LogFormat,
    /// Idle time after which a session ends.
    pub session_idle_timeout: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Bytes of request bodies held at once.
    pub max_body_bytes_in_flight: usize,
    /// Time allowed for the upstream's response headers.
    pub upstream_timeout: Duration,
    /// Time allowed for a graceful shutdown.
    pub drain_timeout: Duration,
    /// Accepted `Origin` values.
    pub allowed_origins: Allow,
    /// Accepted `Host` values.
    pub allowed_hosts: Allow,
    /// Sessions this replica holds at most.
    pub max_sessions: usize,
    /// New sessions per second.
    pub session_rate: u32,
    /// Open connections per listener.
    pub max_connections: usize,
    /// Time to send request headers; idle keep-alive connections close after it.
    pub header_read_timeout: Duration,
    /// Serving goes on this long after SIGTERM before the drain starts.
    pub shutdown_delay: Duration,
    /// Bytes of events the memory store keeps in all.
    pub store_max_bytes: usize,
    /// SSE settings.
    pub sse: SseSettings,
    /// Token verification; `None` when off.
    pub auth: Option<AuthSettings>,
    /// Credentials for the upstream from a file; `None` for none.
    pub upstream_auth: Option<UpstreamAuthSettings>,
    /// Credentials for the upstream by token exchange; `None` for none.
    pub token_exchange: Option<TokenExchangeSettings>,
    /// The policy, checked; `None` when there is none.
    pub policy: Option<PolicyConfig>,
}

const MIB: u64 = 1024 * 1024;

impl SidecarConfig {
    /// Checks every value and fills in defaults.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let sse = self.sse.clone().unwrap_or_default();
        let listen = addr("listen", self.listen.as_deref(), "127.0.0.1:8080")?;
        let local = listen.ip().is_loopback();
        let max_body_bytes = positive("maxBodyBytes", self.max_body_bytes, 4 * MIB)?;
        Ok(Settings {
            listen,
            admin_listen: addr("adminListen", self.admin_listen.as_deref(), "127.0.0.1:9090")?,
            peer_listen: addr("peerListen", self.peer_listen.as_deref(), "0.0.0.0:8081")?,
            peer_secret_file: self.peer_secret_file.clone(),
            advertise_addr: match &self.advertise_addr {
                Some(a) if !a.contains(':') => {
                    return Err(ConfigError::new(
                        "advertiseAddr",
                        format!("`{a}` must be host:port"),
                    ));
                }
                other => other.clone(),
            },
            upstream: upstream(self.upstream.as_deref())?,
            path: path(self.path.as_deref())?,
            store: crate::store::store(self)?,
            log_format: self.log_format.unwrap_or(LogFormat::Json),
            session_idle_timeout: duration("sessionIdleTimeout", &self.session_idle_timeout, "30m")?,
            max_body_bytes,
            max_body_bytes_in_flight: {
                let bytes = positive("maxBodyBytesInFlight", self.max_body_bytes_in_flight, 64 * MIB)?;
                if bytes < max_body_bytes {
                    return Err(ConfigError::new(
                        "maxBodyBytesInFlight",
                        "must be at least maxBodyBytes, so the largest body fits",
                    ));
                }
                size("maxBodyBytesInFlight", bytes)?
            },
            upstream_timeout: duration("upstreamTimeout", &self.upstream_timeout, "5m")?,
            drain_timeout: duration("drainTimeout", &self.drain_timeout, "25s")?,
            allowed_origins: allow(&self.allowed_origins, local),
            allowed_hosts: allow(&self.allowed_hosts, local),
            max_sessions: count("maxSessions", self.max_sessions, 10_000)?,
            session_rate: u32::try_from(positive("sessionRate", self.session_rate, 100)?)
                .map_err(|_| ConfigError::new("sessionRate", "too large"))?,
            max_connections: count("maxConnections", self.max_connections, 10_000)?,
            header_read_timeout: duration("headerReadTimeout", &self.header_read_timeout, "30s")?,
            shutdown_delay: match &self.shutdown_delay {
                None => Duration::ZERO,
                Some(text) => parse_duration_or_zero("shutdownDelay", text)?,
            },
            store_max_bytes: count("storeMaxBytes", self.store_max_bytes, 64 * MIB)?,
            sse: sse_settings(&sse)?,
            auth: self.auth.clone().unwrap_or_default().validate()?,
            upstream_auth: self.upstream_auth.clone().unwrap_or_default().validate()?,
            token_exchange: self
                .upstream_auth
                .clone()
                .unwrap_or_default()
                .validate_exchange(self.auth.as_ref().is_some_and(|a| a.issuer.is_some()))?,
            policy: match &self.policy {
                Some(policy) => {
                    policy
                        .check()
                        .map_err(|e| ConfigError::new("policy", e.to_string()))?;
                    Some(policy.clone())
                }
                None => None,
            },
        })
        .and_then(|settings| {
            if let (Some(auth), Some(upstream)) = (&settings.auth, &settings.upstream_auth)
                && auth.claim_headers.values().any(|h| *h == upstream.header)
            {
                return Err(ConfigError::new(
                    "auth.claimHeaders",
                    format!(
                        "`{}` carries the upstream credential: a claim cannot go in it too",
                        upstream.header
                    ),
                ));
            }
            Ok(settings)
        })
    }
}

fn sse_settings(sse: &SseConfig) -> Result<SseSettings, ConfigError> {
    let max_event_bytes = count("sse.maxEventBytes", sse.max_event_bytes, 4 * MIB)?;
    let max_log_bytes = count("sse.maxLogBytes", sse.max_log_bytes, 8 * MIB)?;
    if max_log_bytes < max_event_bytes {
        return Err(ConfigError::new(
            "sse.maxLogBytes",
            "must be at least sse.maxEventBytes, so the largest event fits in a log",
        ));
    }
    Ok(SseSettings {
        keep_alive_interval: duration("sse.keepAliveInterval", &sse.keep_alive_interval, "15s")?,
        max_connection_time: match &sse.max_connection_time {
            None => None,
            Some(text) => Some(parse_duration("sse.maxConnectionTime", text)?),
        },
        retry: duration("sse.retry", &sse.retry, "1s")?,
        max_events_per_stream: count("sse.maxEventsPerStream", sse.max_events_per_stream, 1024)?,
        max_streams: count("sse.maxStreams", sse.max_streams, 10_000)?,
        retention: duration("sse.retention", &sse.retention, "10m")?,
        response_retention: duration("sse.responseRetention", &sse.response_retention, "1m")?,
        drain_limit: duration("sse.drainLimit", &sse.drain_limit, "5m")?,
        max_event_bytes,
        max_log_bytes,
    })
}

fn positive(key: &'static str, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::new(key, "must be above 0")),
        Some(n) => Ok(n),
    }
}

/// A positive count or size that fits this platform's `usize`.
fn count(key: &'static str, value: Option<u64>, default: u64) -> Result<usize, ConfigError> {
    size(key, positive(key, value, default)?)
}

fn size(key: &'static str, n: u64) -> Result<usize, ConfigError> {
    usize::try_from(n).map_err(|_| ConfigError::new(key, "too large"))
}

fn allow(values: &Option<Vec<String>>, local: bool) -> Allow {
    match values {
        Some(list) if !list.is_empty() => Allow::List(list.clone()),
        _ if local => Allow::Loopback,
        _ => Allow::Any,
    }
}

fn addr(key: &'static str, value: Option<&str>, default: &str) -> Result<SocketAddr, ConfigError> {
    let text = value.unwrap_or(default);
    text.parse().map_err(|e| {
        ConfigError::new(
            key,
            format!("`{text}` is not an address like 127.0.0.1:8080 ({e})"),
        )
    })
}

fn upstream(value: Option<&str>) -> Result<Uri, ConfigError> {
    let text = value.ok_or_else(|| {
        ConfigError::new(
            "upstream",
            "required: the pod-local MCP endpoint, e.g. http://127.0.0.1:3000/mcp",
        )
    })?;
    let uri: Uri = text
        .parse()
        .map_err(|e| ConfigError::new("upstream", format!("`{text}` is not a URL ({e})")))?;
    if uri.scheme_str() != Some("http") {
        return Err(ConfigError::new(
            "upstream",
            format!("`{text}` must be an http:// URL"),
        ));
    }
    if uri.authority().is_none() {
        return Err(ConfigError::new("upstream", format!("`{text}` has no host")));
    }
    Ok(uri)
}

fn path(value: Option<&str>) -> Result<String, ConfigError> {
    let text = value.unwrap_or("/mcp");
    if !text.starts_with('/') || text.contains(['?', '#', ' ']) {
        return Err(ConfigError::new(
            "path",
            format!("`{text}` must be a plain path starting with /"),
        ));
    }
    Ok(text.to_owned())
}

pub(crate) fn duration(
    key: &'static str,
    value: &Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    parse_duration(key, value.as_deref().unwrap_or(default))
}

pub(crate) fn parse_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let parsed = parse_duration_or_zero(key, text)?;
    if parsed.is_zero() {
        return Err(ConfigError::new(key, "must be above zero"));
    }
    Ok(parsed)
}

pub(crate) fn parse_duration_or_zero(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text)
        .map_err(|e| ConfigError::new(key, format!("`{text}` is not a duration like 30s or 5m ({e})")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The smallest valid config: an upstream.
    pub(crate) fn minimal() -> SidecarConfig {
        SidecarConfig {
            upstream: Some("http://127.0.0.1:3000/mcp".into()),
            ..Default::default()
        }
    }

    /// Every default the README's flag table gives.
    #[test]
    fn defaults_fill_a_minimal_config() {
        let s = minimal().validate().unwrap();
        let secs = Duration::from_secs;
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.admin_listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(s.peer_listen, "0.0.0.0:8081".parse().unwrap());
        assert_eq!((s.peer_secret_file, s.advertise_addr), (None, None));
        assert_eq!(s.path, "/mcp");
        assert_eq!(s.store, StoreSettings::Memory);
        assert_eq!(s.upstream_timeout, secs(5 * 60));
        assert_eq!(
            (s.allowed_origins, s.allowed_hosts),
            (Allow::Loopback, Allow::Loopback)
        );
        assert_eq!(s.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(s.max_body_bytes_in_flight, 64 * 1024 * 1024);
        assert_eq!(s.header_read_timeout, secs(30));
        assert_eq!(s.max_connections, 10_000);
        assert_eq!(s.session_idle_timeout, secs(30 * 60));
        assert_eq!(s.max_sessions, 10_000);
        assert_eq!(s.session_rate, 100);
        assert_eq!(s.store_max_bytes, 64 * 1024 * 1024);
        assert_eq!(s.drain_timeout, secs(25));
        assert_eq!(s.shutdown_delay, Duration::ZERO);
        let sse = &s.sse;
        assert_eq!(sse.keep_alive_interval, secs(15));
        assert_eq!(sse.max_connection_time, None);
        assert_eq!(sse.retry, secs(1));
        assert_eq!(sse.max_events_per_stream, 1024);
        assert_eq!(sse.max_event_bytes, 4 * 1024 * 1024);
        assert_eq!(sse.max_log_bytes, 8 * 1024 * 1024);
        assert_eq!(sse.max_streams, 10_000);
        assert_eq!(sse.retention, secs(10 * 60));
        assert_eq!(sse.response_retention, secs(60));
        assert_eq!(sse.drain_limit, secs(5 * 60));
    }

    #[test]
    fn errors_name_the_key() {
        let cases: Vec<(SidecarConfig, &str)> = vec![
            (SidecarConfig::default(), "upstream"),
            (
                SidecarConfig {
                    upstream: Some("https://x/mcp".into()),
                    ..minimal()
                },
                "upstream",
            ),
            (
                SidecarConfig {
                    listen: Some("nowhere".into()),
                    ..minimal()
                },
                "listen",
            ),
            (
                SidecarConfig {
                    path: Some("mcp".into()),
                    ..minimal()
                },
                "path",
            ),
            (
                SidecarConfig {
                    store: Some("postgres://x".into()),
                    ..minimal()
                },
                "store",
            ),
            (
                SidecarConfig {
                    max_body_bytes: Some(0),
                    ..minimal()
                },
                "maxBodyBytes",
            ),
            (
                SidecarConfig {
                    drain_timeout: Some("soon".into()),
                    ..minimal()
                },
                "drainTimeout",
            ),
            (
                SidecarConfig {
                    sse: Some(SseConfig {
                        retry: Some("0s".into()),
                        ..Default::default()
                    }),
                    ..minimal()
                },
                "sse.retry",
            ),
            (
                SidecarConfig {
                    sse: Some(SseConfig {
                        max_event_bytes: Some(10),
                        max_log_bytes: Some(5),
                        ..Default::default()
                    }),
                    ..minimal()
                },
                "sse.maxLogBytes",
            ),
            (
                SidecarConfig {
                    redis: Some(crate::config::RedisConfig {
                        client_cert_file: Some("c.pem".into()),
                        ..Default::default()
                    }),
                    store: Some("rediss://r:6380".into()),
                    ..minimal()
                },
                "redis.clientCertFile",
            ),
            (
                SidecarConfig {
                    max_sessions: Some(0),
                    ..minimal()
                },
                "maxSessions",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(err.to_string().contains(key));
        }
    }

    #[test]
    fn host_and_origin_checks_default_to_loopback_names_on_a_loopback_listener() {
        let local = minimal().validate().unwrap();
        assert_eq!(local.allowed_hosts, Allow::Loopback);
        assert_eq!(local.allowed_origins, Allow::Loopback);
        let pod = SidecarConfig {
            listen: Some("0.0.0.0:8080".into()),
            ..minimal()
        }
        .validate()
        .unwrap();
        assert_eq!(pod.allowed_hosts, Allow::Any);
        let listed = SidecarConfig {
            allowed_hosts: Some(vec!["mcp.example".into()]),
            ..minimal()
        }
        .validate()
        .unwrap();
        assert_eq!(listed.allowed_hosts, Allow::List(vec!["mcp.example".into()]));
    }

    #[test]
    fn yaml_refuses_unknown_keys_by_name() {
        let err = SidecarConfig::from_yaml("upstream: http://a/mcp\nlisten_addr: x\n").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn layers_prefer_the_upper_value_field_by_field() {
        let file = SidecarConfig::from_yaml(
            "upstream: http://a:1/mcp\npath: /file\nsse:\n  retry: 3s\n  retention: 1m\n",
        )
        .unwrap();
        let flags = SidecarConfig {
            path: Some("/flag".into()),
            sse: Some(SseConfig {
                retry: Some("2s".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = flags.or(file).validate().unwrap();
        assert_eq!(s.path, "/flag");
        assert_eq!(s.upstream, "http://a:1/mcp".parse::<Uri>().unwrap());
        assert_eq!(s.sse.retry, Duration::from_secs(2));
        assert_eq!(s.sse.retention, Duration::from_secs(60));
    }

    #[test]
    fn yaml_round_trips() {
        let config = SidecarConfig {
            store: Some("redis://r:6379".into()),
            allowed_origins: Some(vec!["https://a.example".into()]),
            ..minimal()
        };
        let text = config.to_yaml().unwrap();
        assert_eq!(SidecarConfig::from_yaml(&text).unwrap(), config);
    }
}

//! Validated sidecar settings: what [`SidecarConfig`] becomes once every value
//! has been checked.

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;

use crate::config::{LogFormat, SidecarConfig, SseConfig};

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
    fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

/// Where sessions and event logs are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSettings {
    /// In this process; lost when it exits. Enough for one replica.
    Memory,
    /// A Redis server, shared by every replica.
    Redis {
        /// The `redis://` or `rediss://` URL.
        url: String,
        /// Prefix of every key.
        prefix: String,
    },
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
    /// How long a stream's events stay replayable after its last event.
    pub retention: Duration,
    /// How long a pump keeps draining after its client went away.
    pub drain_limit: Duration,
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
    /// Time allowed for the upstream's response headers.
    pub upstream_timeout: Duration,
    /// Time allowed for a graceful shutdown.
    pub drain_timeout: Duration,
    /// Accepted `Origin` values; empty accepts any.
    pub allowed_origins: Vec<String>,
    /// SSE settings.
    pub sse: SseSettings,
}

impl SidecarConfig {
    /// Checks every value and fills in defaults.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let sse = self.sse.clone().unwrap_or_default();
        Ok(Settings {
            listen: addr("listen", self.listen.as_deref(), "127.0.0.1:8080")?,
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
            store: store(self.store.as_deref(), self.store_prefix.as_deref())?,
            log_format: self.log_format.unwrap_or(LogFormat::Json),
            session_idle_timeout: duration("sessionIdleTimeout", &self.session_idle_timeout, "30m")?,
            max_body_bytes: match self.max_body_bytes {
                Some(0) => return Err(ConfigError::new("maxBodyBytes", "must be above 0")),
                Some(n) => n,
                None => 4 * 1024 * 1024,
            },
            upstream_timeout: duration("upstreamTimeout", &self.upstream_timeout, "30s")?,
            drain_timeout: duration("drainTimeout", &self.drain_timeout, "25s")?,
            allowed_origins: self.allowed_origins.clone().unwrap_or_default(),
            sse: sse_settings(&sse)?,
        })
    }
}

fn sse_settings(sse: &SseConfig) -> Result<SseSettings, ConfigError> {
    let max_events = positive("sse.maxEventsPerStream", sse.max_events_per_stream, 1024)?;
    let max_streams = positive("sse.maxStreams", sse.max_streams, 10_000)?;
    Ok(SseSettings {
        keep_alive_interval: duration("sse.keepAliveInterval", &sse.keep_alive_interval, "15s")?,
        max_connection_time: match &sse.max_connection_time {
            None => None,
            Some(text) => Some(parse_duration("sse.maxConnectionTime", text)?),
        },
        retry: duration("sse.retry", &sse.retry, "1s")?,
        max_events_per_stream: max_events,
        max_streams,
        retention: duration("sse.retention", &sse.retention, "10m")?,
        drain_limit: duration("sse.drainLimit", &sse.drain_limit, "5m")?,
    })
}

fn positive(key: &'static str, value: Option<u64>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::new(key, "must be above 0")),
        Some(n) => usize::try_from(n).map_err(|_| ConfigError::new(key, "too large")),
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

fn store(value: Option<&str>, prefix: Option<&str>) -> Result<StoreSettings, ConfigError> {
    match value.unwrap_or("memory") {
        "memory" => Ok(StoreSettings::Memory),
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            let prefix = prefix.unwrap_or("shadowcat");
            if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
                return Err(ConfigError::new(
                    "storePrefix",
                    format!("`{prefix}` must be non-empty, without braces or spaces"),
                ));
            }
            Ok(StoreSettings::Redis {
                url: url.to_owned(),
                prefix: prefix.to_owned(),
            })
        }
        other => Err(ConfigError::new(
            "store",
            format!("`{other}` is neither `memory` nor a redis:// or rediss:// URL"),
        )),
    }
}

fn duration(key: &'static str, value: &Option<String>, default: &str) -> Result<Duration, ConfigError> {
    parse_duration(key, value.as_deref().unwrap_or(default))
}

fn parse_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let parsed = humantime::parse_duration(text)
        .map_err(|e| ConfigError::new(key, format!("`{text}` is not a duration like 30s or 5m ({e})")))?;
    if parsed.is_zero() {
        return Err(ConfigError::new(key, "must be above zero"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> SidecarConfig {
        SidecarConfig {
            upstream: Some("http://127.0.0.1:3000/mcp".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_a_minimal_config() {
        let s = minimal().validate().unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.admin_listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(s.path, "/mcp");
        assert_eq!(s.store, StoreSettings::Memory);
        assert_eq!(s.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(s.sse.keep_alive_interval, Duration::from_secs(15));
        assert_eq!(s.sse.max_connection_time, None);
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
        ];
        for (config, key) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(err.to_string().contains(key));
        }
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

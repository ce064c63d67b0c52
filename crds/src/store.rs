//! Where sessions and event logs are kept: the memory store, or a Redis
//! deployment (one server or a Cluster, plain or TLS).

use std::time::Duration;

use crate::config::SidecarConfig;
use crate::settings::{ConfigError, duration};

/// A Redis URL. Its password never shows in `Debug` or `Display` output,
/// so settings and errors can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL with its credentials, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return "***".into();
        };
        match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or("", |(u, _)| u);
                format!("{scheme}://{user}:***@{host}")
            }
            None => self.0.clone(),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// How the Redis deployment is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (or a primary behind a stable address).
    Standalone(RedisUrl),
    /// A Redis Cluster, found from any of these nodes.
    Cluster(Vec<RedisUrl>),
}

/// Validated Redis settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// Where Redis is.
    pub topology: RedisTopology,
    /// Prefix of every key.
    pub prefix: String,
    /// CA certificate file for `rediss://`.
    pub ca_file: Option<String>,
    /// Client certificate and key files for mutual TLS.
    pub client_cert: Option<(String, String)>,
    /// Replicas that must acknowledge an append before it counts.
    pub wait_replicas: u32,
    /// How long an append waits for them.
    pub wait_timeout: Duration,
}

/// Where sessions and event logs are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSettings {
    /// In this process; lost when it exits. Enough for one replica.
    Memory,
    /// A Redis deployment, shared by every replica.
    Redis(RedisSettings),
}

pub(crate) fn store(config: &SidecarConfig) -> Result<StoreSettings, ConfigError> {
    let text = config.store.as_deref().unwrap_or("memory");
    if text == "memory" {
        return Ok(StoreSettings::Memory);
    }
    let topology = redis_topology(text)?;
    let prefix = config.store_prefix.as_deref().unwrap_or("shadowcat");
    if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
        return Err(ConfigError::new(
            "storePrefix",
            format!("`{prefix}` must be non-empty, without braces or spaces"),
        ));
    }
    let redis = config.redis.clone().unwrap_or_default();
    let client_cert = match (&redis.client_cert_file, &redis.client_key_file) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        _ => {
            return Err(ConfigError::new(
                "redis.clientCertFile",
                "clientCertFile and clientKeyFile go together",
            ));
        }
    };
    Ok(StoreSettings::Redis(RedisSettings {
        topology,
        prefix: prefix.to_owned(),
        ca_file: redis.ca_file,
        client_cert,
        wait_replicas: u32::try_from(redis.wait_replicas.unwrap_or(0))
            .map_err(|_| ConfigError::new("redis.waitReplicas", "too large"))?,
        wait_timeout: duration("redis.waitTimeout", &redis.wait_timeout, "1s")?,
    }))
}

/// `redis://…` and `rediss://…` name one server; `redis+cluster://h:p,h:p`
/// (or `rediss+cluster://`) names cluster nodes, sharing the credentials.
fn redis_topology(text: &str) -> Result<RedisTopology, ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            "store",
            format!("`{}` {why}", RedisUrl(text.to_owned()).redacted()),
        )
    };
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| bad("is neither `memory` nor a redis://, rediss:// or redis+cluster:// URL"))?;
    match scheme {
        "redis" | "rediss" => Ok(RedisTopology::Standalone(RedisUrl(text.to_owned()))),
        "redis+cluster" | "rediss+cluster" => {
            let plain = scheme.trim_end_matches("+cluster");
            let (userinfo, hosts) = match rest.rsplit_once('@') {
                Some((u, h)) => (format!("{u}@"), h),
                None => (String::new(), rest),
            };
            let hosts = hosts.trim_end_matches('/');
            let nodes: Vec<RedisUrl> = hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| RedisUrl(format!("{plain}://{userinfo}{h}")))
                .collect();
            if nodes.is_empty() || hosts.contains('/') {
                return Err(bad("must list host:port nodes, comma-separated"));
            }
            Ok(RedisTopology::Cluster(nodes))
        }
        _ => Err(bad(
            "is neither `memory` nor a redis://, rediss:// or redis+cluster:// URL",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::tests::minimal;

    #[test]
    fn redis_urls_name_one_server_or_cluster_nodes_and_hide_passwords() {
        let with = |store: &str| SidecarConfig {
            store: Some(store.into()),
            ..minimal()
        };
        let StoreSettings::Redis(one) = with("rediss://:hunter2@r:6380/0").validate().unwrap().store else {
            panic!("not redis")
        };
        assert_eq!(
            one.topology,
            RedisTopology::Standalone(RedisUrl("rediss://:hunter2@r:6380/0".into()))
        );
        let shown = format!("{one:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("rediss://:***@r:6380/0"), "{shown}");
        let StoreSettings::Redis(cluster) = with("redis+cluster://u:pw@a:7000,b:7001/")
            .validate()
            .unwrap()
            .store
        else {
            panic!("not redis")
        };
        let RedisTopology::Cluster(nodes) = &cluster.topology else {
            panic!("not a cluster")
        };
        let nodes: Vec<&str> = nodes.iter().map(RedisUrl::expose).collect();
        assert_eq!(nodes, ["redis://u:pw@a:7000", "redis://u:pw@b:7001"]);
        let StoreSettings::Redis(tls) = with("rediss+cluster://a:7000,b:7001").validate().unwrap().store
        else {
            panic!("not redis")
        };
        let RedisTopology::Cluster(nodes) = &tls.topology else {
            panic!("not a cluster")
        };
        let nodes: Vec<&str> = nodes.iter().map(RedisUrl::expose).collect();
        assert_eq!(nodes, ["rediss://a:7000", "rediss://b:7001"], "TLS to every node");
        let err = with("redis+cluster://:pw@/").validate().unwrap_err();
        assert_eq!(err.key, "store");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
}

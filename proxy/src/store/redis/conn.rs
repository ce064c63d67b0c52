//! Connections to Redis: one server or a Cluster, plain or TLS.
//!
//! Everyday commands share one multiplexed connection that reconnects by
//! itself. Commands that hold a connection (a blocking `XREAD`, `WAIT` after
//! an append) get a dedicated one, so they never stall everyone else.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, Pipeline, RedisFuture, TlsCertificates, Value,
};
use shadowcat_crds::{RedisSettings, RedisTopology};
use tokio::sync::OnceCell;

use super::super::{Result, StoreError};

/// Time allowed for one Redis command (blocking ones get their wait on top).
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Dedicated connections kept for reuse.
const POOL: usize = 64;

/// A connection of either kind; cheap to clone (they multiplex).
#[derive(Clone)]
pub(super) enum Conn {
    /// The shared connection to one server, reconnecting by itself.
    Managed(ConnectionManager),
    /// A dedicated connection to one server.
    Single(MultiplexedConnection),
    /// A Cluster connection (it follows the slot map and reconnects).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// `WAIT replicas timeout` for the writes this connection made to `key`:
    /// on a Cluster, sent to the primary that holds `key`. Returns how many
    /// replicas acknowledged.
    pub(super) async fn wait(&mut self, key: &str, replicas: u32, timeout: Duration) -> Result<u32> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let acked: Value = match self {
            Conn::Cluster(c) => {
                let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                c.route_command(cmd, routing).await
            }
            other => cmd.query_async(other).await,
        }
        .map_err(unavailable)?;
        match acked {
            Value::Int(n) => Ok(u32::try_from(n).unwrap_or(0)),
            other => Err(StoreError::Corrupt(format!("WAIT answered {other:?}"))),
        }
    }
}

/// Where connections come from.
pub(super) struct Connector {
    kind: Kind,
    dedicated: Mutex<Vec<Conn>>,
}

enum Kind {
    Single {
        client: Client,
        shared: ConnectionManager,
    },
    Cluster {
        client: Box<ClusterClient>,
        shared: OnceCell<ClusterConnection>,
    },
}

/// A failed Redis call.
pub(super) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn read_file(key: &str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| StoreError::Unavailable(format!("cannot read {key} {path}: {e}")))
}

fn certificates(settings: &RedisSettings) -> Result<Option<TlsCertificates>> {
    let root_cert = match &settings.ca_file {
        Some(path) => Some(read_file("redis.caFile", path)?),
        None => None,
    };
    let client_tls = match &settings.client_cert {
        Some((cert, key)) => Some(ClientTlsConfig {
            client_cert: read_file("redis.clientCertFile", cert)?,
            client_key: read_file("redis.clientKeyFile", key)?,
        }),
        None => None,
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

impl Connector {
    /// Connectors for `settings`. Nothing connects yet: a Redis that is down
    /// at start (or goes away later) is an error per call, not a crash.
    pub(super) fn new(settings: &RedisSettings) -> Result<Self> {
        let bad = |e: redis::RedisError| StoreError::Unavailable(format!("bad Redis settings: {e}"));
        let certs = certificates(settings)?;
        let kind = match &settings.topology {
            RedisTopology::Standalone(url) => {
                if certs.is_some() && !url.expose().starts_with("rediss://") {
                    return Err(StoreError::Unavailable(
                        "redis.caFile and client certificates need a rediss:// URL".into(),
                    ));
                }
                let client = match certs {
                    Some(certs) => Client::build_with_tls(url.expose(), certs),
                    None => Client::open(url.expose()),
                }
                .map_err(bad)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let shared = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(bad)?;
                Kind::Single { client, shared }
            }
            RedisTopology::Cluster(nodes) => {
                let mut builder = ClusterClientBuilder::new(nodes.iter().map(|n| n.expose().to_owned()))
                    .connection_timeout(COMMAND_TIMEOUT)
                    .response_timeout(COMMAND_TIMEOUT)
                    .retries(2);
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                Kind::Cluster {
                    client: Box::new(builder.build().map_err(bad)?),
                    shared: OnceCell::new(),
                }
            }
        };
        Ok(Self {
            kind,
            dedicated: Mutex::default(),
        })
    }

    /// The shared connection.
    pub(super) async fn shared(&self) -> Result<Conn> {
        match &self.kind {
            Kind::Single { shared, .. } => Ok(Conn::Managed(shared.clone())),
            Kind::Cluster { client, shared } => shared
                .get_or_try_init(|| client.get_async_connection())
                .await
                .cloned()
                .map(Conn::Cluster)
                .map_err(unavailable),
        }
    }

    /// A connection of the caller's own whose commands may block up to
    /// `hold` longer than usual.
    async fn dedicated(&self, hold: Duration) -> Result<Conn> {
        let pooled = self.dedicated.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(conn) = pooled {
            return Ok(conn);
        }
        // Pooled connections are reused for any hold: size their timeout for
        // the longest a caller asks (blocking reads wait a keep-alive interval).
        let response = COMMAND_TIMEOUT + hold.max(Duration::from_secs(60));
        match &self.kind {
            Kind::Single { client, .. } => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(response));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Single)
                    .map_err(unavailable)
            }
            Kind::Cluster { client, .. } => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(COMMAND_TIMEOUT)
                    .set_response_timeout(response);
                client
                    .get_async_connection_with_config(config)
                    .await
                    .map(Conn::Cluster)
                    .map_err(unavailable)
            }
        }
    }

    /// Dedicated connections waiting in the pool.
    #[cfg(test)]
    pub(super) fn pooled(&self) -> usize {
        self.dedicated.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Runs `work` on a dedicated connection and pools the connection again
    /// if it is still sound. When the connection fails, the whole pool goes:
    /// a Redis that restarted or went away broke every pooled connection, and
    /// trying them one by one would cost a failed round each.
    pub(super) async fn with_dedicated<T>(
        &self,
        hold: Duration,
        work: impl AsyncFnOnce(&mut Conn) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.dedicated(hold).await?;
        let result = work(&mut conn).await;
        let mut pool = self.dedicated.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(StoreError::Unavailable(_)) => pool.clear(),
            _ if pool.len() < POOL => pool.push(conn),
            _ => {}
        }
        result
    }
}

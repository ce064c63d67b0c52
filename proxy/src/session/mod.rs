//! Sessions: Shadowcat's ids, the upstream ids behind them, and what this
//! process keeps about the sessions it serves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::mcp::ProtocolVersion;
use crate::metrics::Metrics;
use crate::store::{SessionRecord, Store, StreamKey};

/// A live session as a request sees it.
#[derive(Clone, Debug)]
pub struct Session {
    /// What the store keeps.
    pub record: SessionRecord,
    /// The negotiated version, parsed.
    pub version: ProtocolVersion,
    /// What this process keeps.
    pub local: Arc<LocalSession>,
}

impl Session {
    /// The key of the session's standalone stream log.
    pub fn standalone_key(&self) -> StreamKey {
        StreamKey {
            session: self.record.id.clone(),
            id: self.record.standalone_stream.clone(),
        }
    }
}

/// Per-process state of a session: tasks and readers tied to it.
#[derive(Debug, Default)]
pub struct LocalSession {
    /// Cancelled when the session ends: stops its standalone pump.
    pub ended: CancellationToken,
    /// Whether the upstream offers a standalone stream; set once, when the
    /// standalone pump is first started.
    pub standalone: tokio::sync::OnceCell<bool>,
    /// The client connection now reading the standalone stream. A new GET
    /// supersedes it, so one server message never goes out on two streams.
    reader: Mutex<Option<CancellationToken>>,
    /// Held while this process adopts or re-initializes the session, so
    /// concurrent requests do it once.
    pub reinit: tokio::sync::Mutex<()>,
    /// The record as last read, for sessions this replica owns: requests
    /// skip the store round trip while it is fresh, and keep flowing from it
    /// while the store is unreachable.
    cached: Mutex<Option<(SessionRecord, Instant)>>,
}

impl LocalSession {
    /// Registers a new standalone reader and stops the previous one.
    pub fn take_over_standalone(&self) -> CancellationToken {
        let token = self.ended.child_token();
        let previous = self
            .reader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(token.clone());
        if let Some(previous) = previous {
            previous.cancel();
        }
        token
    }
}

/// Creates, finds and ends sessions.
#[derive(Debug)]
pub struct SessionManager {
    store: Arc<dyn Store>,
    replica: String,
    idle: Duration,
    metrics: Arc<Metrics>,
    local: Mutex<HashMap<String, Arc<LocalSession>>>,
}

/// A fresh random id: 128 bits as 32 hex digits (visible ASCII).
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn session(record: SessionRecord, local: Arc<LocalSession>) -> Session {
    let version = ProtocolVersion::parse(&record.protocol_version).unwrap_or(ProtocolVersion::ASSUMED);
    Session {
        record,
        version,
        local,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SessionManager {
    /// A manager over `store` for the replica `replica`.
    pub fn new(store: Arc<dyn Store>, replica: String, idle: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            replica,
            idle,
            metrics,
            local: Mutex::default(),
        }
    }

    /// Records a new session whose upstream session is `upstream_id`.
    pub async fn create(
        &self,
        id: String,
        upstream_id: Option<String>,
        version: ProtocolVersion,
        initialize: String,
    ) -> Result<Session> {
        let record = SessionRecord {
            standalone_stream: new_id(),
            id,
            upstream_id,
            protocol_version: version.as_str().to_owned(),
            owner: self.replica.clone(),
            initialize,
            created_ms: now_ms(),
            replay: Vec::new(),
        };
        if !self.store.create_session(&record, self.idle).await? {
            // 128 random bits do not collide; a taken id means a bug.
            return Err(Error::UpstreamProtocol("session id already taken".into()));
        }
        let local = self.local_for(&record.id);
        self.cache(&local, &record);
        Ok(Session {
            record,
            version,
            local,
        })
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Finds a live session and restarts its idle clock. For a session this
    /// replica owns, a fresh cached record answers without the store, and a
    /// cached one of any age answers while the store is unreachable.
    pub async fn lookup(&self, id: &str) -> Result<Session> {
        let local = self.local_for(id);
        let cached = local.cached.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((record, touched)) = &cached
            && touched.elapsed() < self.cache_for()
        {
            return Ok(session(record.clone(), local));
        }
        let fetched = async {
            let record = self.store.get_session(id).await?;
            let alive = match &record {
                Some(_) => self.store.touch_session(id, self.idle).await?,
                None => false,
            };
            Ok::<_, crate::store::StoreError>(record.filter(|_| alive))
        };
        match fetched.await {
            Ok(Some(record)) => {
                self.cache(&local, &record);
                Ok(session(record, local))
            }
            Ok(None) => {
                self.forget(id);
                Err(Error::UnknownSession)
            }
            Err(e) => match cached {
                Some((record, _)) => {
                    tracing::debug!(session = %id, error = %e, "store unreachable; serving an owned session from cache");
                    Ok(session(record, local))
                }
                None => Err(e.into()),
            },
        }
    }

    /// Writes a changed record of a live session (and the cache).
    pub async fn save(&self, record: &SessionRecord) -> Result<()> {
        if !self.store.update_session(record, self.idle).await? {
            self.forget(&record.id);
            return Err(Error::UnknownSession);
        }
        self.cache(&self.local_for(&record.id), record);
        Ok(())
    }

    /// Replaces a session's local state: its tasks and readers stop, and the
    /// next request starts them afresh (after an adoption or re-initialize).
    pub fn reset_local(&self, id: &str) {
        self.forget(id);
    }

    /// Hands every session this replica owns back (owner "") so the next
    /// request adopts it at once elsewhere, instead of waiting for this
    /// replica's heartbeat to expire. Returns how many were released.
    pub async fn release_all(&self) -> usize {
        let ids = self.local_ids();
        let mut released = 0;
        for id in ids {
            match self.store.claim_session(&id, &self.replica, "").await {
                Ok(true) => released += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(session = %id, error = %e, "cannot release session"),
            }
        }
        released
    }

    /// How long a cached record answers without the store.
    fn cache_for(&self) -> Duration {
        (self.idle / 4).min(Duration::from_secs(1))
    }

    fn cache(&self, local: &LocalSession, record: &SessionRecord) {
        let entry = (record.owner == self.replica).then(|| (record.clone(), Instant::now()));
        *local.cached.lock().unwrap_or_else(|p| p.into_inner()) = entry;
    }

    /// Records the version negotiated by an initialize answered over SSE.
    pub async fn set_version(&self, id: &str, version: ProtocolVersion) -> Result<()> {
        if let Some(mut record) = self.store.get_session(id).await? {
            record.protocol_version = version.as_str().to_owned();
            self.save(&record).await?;
        }
        Ok(())
    }

    /// Ends a session here: its local tasks stop and the store forgets it.
    pub async fn end(&self, id: &str) -> Result<()> {
        self.forget(id);
        self.store.delete_session(id).await?;
        Ok(())
    }

    /// Drops local state of sessions the store no longer has (expired).
    pub async fn sweep(&self) {
        let ids = self.local_ids();
        for id in ids {
            if let Ok(None) = self.store.get_session(&id).await {
                tracing::debug!(session = %id, "session expired");
                self.forget(&id);
            }
        }
    }

    fn local_ids(&self) -> Vec<String> {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn local_for(&self, id: &str) -> Arc<LocalSession> {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let entry = local.entry(id.to_owned()).or_default().clone();
        self.metrics
            .sessions_active
            .set(i64::try_from(local.len()).unwrap_or(i64::MAX));
        entry
    }

    fn forget(&self, id: &str) {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(session) = local.remove(id) {
            session.ended.cancel();
        }
        self.metrics
            .sessions_active
            .set(i64::try_from(local.len()).unwrap_or(i64::MAX));
    }
}

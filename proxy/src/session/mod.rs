//! Sessions: Shadowcat's ids, the upstream ids behind them, and what this
//! process keeps about the sessions it owns.
//!
//! Only sessions this process owns have local state (a cached record, the
//! standalone pump, the reader of the standalone stream). Ownership is
//! checked against the store at every store interaction: a process that finds
//! the session claimed by another (it was fenced while partitioned or slow)
//! drops its local state at once and ends its upstream session, so the old
//! and the new owner never both serve it.

mod admission;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::admission::{Admission, Refusal};
use crate::error::{Error, Result};
use crate::mcp::ProtocolVersion;
use crate::metrics::Metrics;
use crate::store::{Instance, Owner, SessionChange, SessionRecord, Store, StreamKey, Update};

/// A live session as a request sees it.
#[derive(Clone, Debug)]
pub struct Session {
    /// What the store keeps (shared: every request of a session reads it).
    pub record: Arc<SessionRecord>,
    /// The negotiated version, parsed.
    pub version: ProtocolVersion,
    /// What this process keeps (detached, for a session owned elsewhere).
    pub local: Arc<LocalSession>,
}

impl Session {
    fn new(record: Arc<SessionRecord>, local: Arc<LocalSession>) -> Self {
        let version = ProtocolVersion::parse(&record.protocol_version).unwrap_or(ProtocolVersion::ASSUMED);
        Self {
            record,
            version,
            local,
        }
    }

    /// The key of the session's standalone stream log.
    pub fn standalone_key(&self) -> StreamKey {
        StreamKey {
            session: self.record.id.clone(),
            id: self.record.standalone_stream.clone(),
        }
    }
}

/// Where the session's standalone (GET) stream stands in this process.
#[derive(Debug, Default)]
pub enum Standalone {
    /// Not being pumped: never opened, or the pump ended (the upstream went
    /// away for good, the store refused it). The next GET opens it again.
    #[default]
    Closed,
    /// A pump is running (while its task is not finished).
    Pumping(JoinHandle<()>),
    /// The upstream answered the GET with 405: it has no standalone stream.
    Unsupported,
}

/// Per-process state of a session this process owns.
#[derive(Debug, Default)]
pub struct LocalSession {
    /// Cancelled when the session ends here: stops its standalone pump and
    /// its readers.
    pub ended: CancellationToken,
    /// The standalone stream's pump; locked while it is being opened, so
    /// concurrent requests open it once.
    pub standalone: tokio::sync::Mutex<Standalone>,
    /// The client connection now reading the standalone stream. A new GET
    /// supersedes it, so one server message never goes out on two streams.
    reader: Mutex<Option<CancellationToken>>,
    /// Held while this process adopts or re-initializes the session, so
    /// concurrent requests do it once.
    pub reinit: tokio::sync::Mutex<()>,
    /// The record as last read: requests skip the store round trip while it
    /// is fresh, and keep flowing from it while the store is unreachable.
    cached: Mutex<Option<(Arc<SessionRecord>, Instant)>>,
}

impl LocalSession {
    /// Registers a new standalone reader and stops the previous one.
    pub fn take_over_standalone(&self) -> CancellationToken {
        let token = self.ended.child_token();
        let previous = lock(&self.reader).replace(token.clone());
        if let Some(previous) = previous {
            previous.cancel();
        }
        token
    }

    fn cached(&self) -> Option<(Arc<SessionRecord>, Instant)> {
        lock(&self.cached).clone()
    }

    fn cache(&self, record: &Arc<SessionRecord>) {
        *lock(&self.cached) = Some((record.clone(), Instant::now()));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh random id: 128 bits as 32 hex digits (visible ASCII).
pub fn new_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut id = String::with_capacity(32);
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Upstream session ids this process gave up and should end upstream.
const ABANDONED_QUEUE: usize = 1024;

/// Creates, finds and ends sessions.
#[derive(Debug)]
pub struct SessionManager {
    store: Arc<dyn Store>,
    me: Instance,
    addr: OnceLock<String>,
    idle: Duration,
    metrics: Arc<Metrics>,
    admission: Admission,
    local: Mutex<HashMap<String, Arc<LocalSession>>>,
    abandoned: mpsc::Sender<String>,
}

impl SessionManager {
    /// A manager over `store` for this process `me`. The receiver yields the
    /// upstream session ids this process abandons (expired, or lost to
    /// another owner), for the caller to end upstream.
    pub fn new(
        store: Arc<dyn Store>,
        me: Instance,
        idle: Duration,
        admission: Admission,
        metrics: Arc<Metrics>,
    ) -> (Self, mpsc::Receiver<String>) {
        let (abandoned, rx) = mpsc::channel(ABANDONED_QUEUE);
        let manager = Self {
            store,
            me,
            addr: OnceLock::new(),
            idle,
            metrics,
            admission,
            local: Mutex::default(),
            abandoned,
        };
        (manager, rx)
    }

    /// This process.
    pub fn me(&self) -> &Instance {
        &self.me
    }

    /// Records where other replicas reach this one.
    pub fn set_addr(&self, addr: String) {
        let _ = self.addr.set(addr);
    }

    /// Where other replicas reach this one, once the peer listener is up.
    pub fn addr(&self) -> Option<&str> {
        self.addr.get().map(String::as_str)
    }

    /// Sessions this process owns.
    pub fn held(&self) -> usize {
        lock(&self.local).len()
    }

    /// Whether one more session may be created here now.
    pub fn admit(&self) -> Result<()> {
        self.refused(self.admission.admit(self.held()))
    }

    /// Whether one more session may be adopted here now: the cap applies,
    /// the rate does not (a replica lost takes its sessions with it at once).
    pub fn admit_adoption(&self) -> Result<()> {
        self.refused(self.admission.has_room(self.held()))
    }

    fn refused(&self, admitted: std::result::Result<(), Refusal>) -> Result<()> {
        admitted.map_err(|refusal| {
            self.metrics.sessions_refused.inc();
            match refusal {
                Refusal::Full(max) => Error::TooManySessions(max),
                Refusal::TooFast(rate) => Error::SessionRateExceeded(rate),
            }
        })
    }

    /// Records a new session, owned here, whose upstream session is `upstream_id`.
    pub async fn create(
        &self,
        id: String,
        upstream_id: Option<String>,
        version: ProtocolVersion,
        initialize: String,
        principal: Option<String>,
    ) -> Result<Session> {
        let record = SessionRecord {
            standalone_stream: new_id(),
            id,
            upstream_id,
            protocol_version: version.as_str().to_owned(),
            owner: Owner::Held(self.me.clone()),
            epoch: 1,
            owner_addr: self.addr().map(str::to_owned),
            initialize,
            created_ms: now_ms(),
            log_level: None,
            subscriptions: Default::default(),
            principal,
        };
        if !self.store.create_session(&record).await? {
            // 128 random bits do not collide; a taken id means a bug.
            return Err(Error::UpstreamProtocol("session id already taken".into()));
        }
        Ok(self.install(record))
    }

    /// Installs local state for a session this process now owns (created or
    /// just claimed) and returns it.
    pub fn install(&self, record: SessionRecord) -> Session {
        let local = {
            let mut map = lock(&self.local);
            let local = map.entry(record.id.clone()).or_default().clone();
            self.metrics.sessions_active.set(gauge(map.len()));
            local
        };
        let record = Arc::new(record);
        local.cache(&record);
        Session::new(record, local)
    }

    fn owned(&self, id: &str) -> Option<Arc<LocalSession>> {
        lock(&self.local).get(id).cloned()
    }

    /// Finds a live session and restarts its idle clock. For a session this
    /// process owns, a fresh cached record answers without the store, and a
    /// cached one of any age answers while the store is unreachable.
    pub async fn lookup(&self, id: &str) -> Result<Session> {
        let local = self.owned(id);
        let cached = local.as_ref().and_then(|l| l.cached());
        if let (Some(local), Some((record, at))) = (&local, &cached)
            && at.elapsed() < self.cache_for()
        {
            return Ok(Session::new(record.clone(), local.clone()));
        }
        let fetched = async {
            let Some(record) = self.store.get_session(id).await? else {
                return Ok(None);
            };
            let alive = self.store.touch_session(id).await?;
            Ok::<_, crate::store::StoreError>(alive.then_some(record))
        };
        match fetched.await {
            Ok(Some(record)) if record.owner.is(&self.me) => Ok(self.install(record)),
            Ok(Some(record)) => {
                if let Some((mine, _)) = cached {
                    self.lose(id, &mine, "another replica claimed it");
                }
                Ok(Session::new(Arc::new(record), Arc::default()))
            }
            Ok(None) => {
                if let Some((mine, _)) = cached {
                    self.lose(id, &mine, "it expired");
                }
                Err(Error::UnknownSession)
            }
            Err(e) => match (local, cached) {
                (Some(local), Some((record, _))) => {
                    tracing::debug!(session = %id, error = %e, "store unreachable; serving an owned session from cache");
                    Ok(Session::new(record, local))
                }
                _ => Err(e.into()),
            },
        }
    }

    /// Restarts a session's idle clock (a client holding a stream open is
    /// using it, however quiet the stream).
    pub async fn touch(&self, id: &str) {
        if let Err(e) = self.store.touch_session(id).await {
            tracing::debug!(session = %id, error = %e, "cannot keep the session alive");
        }
    }

    /// Changes one field of a session on behalf of its owner, this process.
    pub async fn update(&self, session: &Session, change: SessionChange) -> Result<()> {
        let id = &session.record.id;
        match self
            .store
            .update_session(id, session.record.epoch, &change)
            .await?
        {
            Update::Applied => {
                if let Some(local) = self.owned(id)
                    && let Some((record, _)) = local.cached()
                {
                    let mut record = Arc::unwrap_or_clone(record);
                    change.apply(&mut record);
                    local.cache(&Arc::new(record));
                }
                Ok(())
            }
            Update::Gone => {
                self.forget(id);
                Err(Error::UnknownSession)
            }
            Update::Fenced => {
                self.lose(id, &session.record, "another replica claimed it");
                Err(Error::OwnershipMoved)
            }
        }
    }

    /// Gives up a session this process held: its local tasks stop, and its
    /// upstream session is ended (the new owner, if any, has its own).
    fn lose(&self, id: &str, record: &SessionRecord, why: &str) {
        if !self.forget(id) {
            return;
        }
        tracing::info!(session = %id, why, "session no longer served here");
        self.metrics.sessions_lost.inc();
        if let Some(upstream) = &record.upstream_id
            && self.abandoned.try_send(upstream.clone()).is_err()
        {
            tracing::warn!(session = %id, "too many upstream sessions waiting to be ended; leaving this one to expire");
        }
    }

    /// Hands every session this process owns back (owner released) so the
    /// next request adopts it at once elsewhere, instead of waiting for this
    /// replica's heartbeat to expire. Returns how many were released.
    pub async fn release_all(&self) -> usize {
        let mut released = 0;
        for (id, local) in self.snapshot() {
            let Some((record, _)) = local.cached() else {
                continue;
            };
            match self
                .store
                .claim_session(&id, record.epoch, &Owner::Released, None)
                .await
            {
                Ok(Some(_)) => released += 1,
                Ok(None) => {}
                Err(e) => tracing::warn!(session = %id, error = %e, "cannot release session"),
            }
        }
        released
    }

    /// How long a cached record answers without the store.
    fn cache_for(&self) -> Duration {
        (self.idle / 4).min(Duration::from_secs(1))
    }

    /// Ends a session the client asked to end: local tasks stop and the
    /// store forgets it.
    pub async fn end(&self, id: &str) -> Result<()> {
        self.forget(id);
        self.store.delete_session(id).await?;
        Ok(())
    }

    /// Checks the sessions this process owns against the store: expired ones
    /// and ones another replica claimed are given up (and ended upstream).
    pub async fn sweep(&self) {
        for (id, local) in self.snapshot() {
            let Some((mine, _)) = local.cached() else { continue };
            match self.store.get_session(&id).await {
                Ok(None) => self.lose(&id, &mine, "it expired"),
                Ok(Some(record)) if !record.owner.is(&self.me) => {
                    self.lose(&id, &mine, "another replica claimed it")
                }
                Ok(Some(_)) | Err(_) => {}
            }
        }
    }

    /// The sessions this process owns, copied out of the lock (going through
    /// them awaits the store).
    fn snapshot(&self) -> Vec<(String, Arc<LocalSession>)> {
        lock(&self.local)
            .iter()
            .map(|(id, local)| (id.clone(), local.clone()))
            .collect()
    }

    /// Drops local state; `true` if there was some.
    fn forget(&self, id: &str) -> bool {
        let mut local = lock(&self.local);
        let removed = local.remove(id);
        self.metrics.sessions_active.set(gauge(local.len()));
        drop(local);
        match removed {
            Some(session) => {
                session.ended.cancel();
                true
            }
            None => false,
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::MemoryStore;

    fn manager(store: &Arc<MemoryStore>, name: &str) -> (SessionManager, mpsc::Receiver<String>) {
        SessionManager::new(
            store.clone(),
            Instance::new(name),
            Duration::from_secs(60),
            Admission::new(10, 10),
            Arc::new(Metrics::new()),
        )
    }

    async fn created(a: &SessionManager) -> Session {
        a.create(
            "s1".into(),
            Some("up-1".into()),
            ProtocolVersion::V2025_06_18,
            "{}".into(),
            None,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_fenced_owner_stops_serving_and_ends_its_upstream_session() {
        let store = MemoryStore::new(crate::store::suite::limits());
        let (a, mut abandoned) = manager(&store, "a");
        let (b, _) = manager(&store, "b");
        let session = created(&a).await;
        // Another replica claims the session (this one was thought gone).
        assert_eq!(
            store
                .claim_session("s1", 1, &Owner::Held(b.me().clone()), None)
                .await
                .unwrap(),
            Some(2)
        );
        let late = a.update(&session, SessionChange::LogLevel("debug".into())).await;
        assert!(matches!(late, Err(Error::OwnershipMoved)), "{late:?}");
        assert_eq!(abandoned.try_recv().unwrap(), "up-1");
        assert_eq!(a.held(), 0);
        assert!(session.local.ended.is_cancelled(), "its tasks and readers stop");
        let kept = store.get_session("s1").await.unwrap().unwrap();
        assert_eq!((kept.owner, kept.log_level), (Owner::Held(b.me().clone()), None));
    }

    #[tokio::test]
    async fn the_next_lookup_past_the_cache_finds_the_session_moved() {
        let store = MemoryStore::new(crate::store::suite::limits());
        let (a, mut abandoned) = manager(&store, "a");
        let (b, _) = manager(&store, "b");
        created(&a).await;
        store
            .claim_session("s1", 1, &Owner::Held(b.me().clone()), None)
            .await
            .unwrap();
        // Time passing is the point: the cached record answers for a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let found = a.lookup("s1").await.unwrap();
        assert_eq!(found.record.owner, Owner::Held(b.me().clone()));
        assert_eq!(a.held(), 0);
        assert_eq!(abandoned.try_recv().unwrap(), "up-1");
    }
}

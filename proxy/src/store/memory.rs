//! The in-process store: enough for one replica, gone when the process exits.
//!
//! Sessions and logs sit in maps behind short-held mutexes; nothing awaits
//! while a lock is held. Memory is bounded three ways: events per log, logs
//! in all (the oldest finished log goes first), and time (retention, idle
//! sessions); a session's logs go with it. Each log has a `watch` channel that wakes readers
//! after an append, so following a live stream costs no polling.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{
    LogLimits, LogRead, READ_BATCH, Result, SessionRecord, Store, StoreError, StoredEvent, StreamKey,
    StreamKind, StreamMeta,
};

/// The in-memory [`Store`].
#[derive(Debug)]
pub struct MemoryStore {
    limits: LogLimits,
    sessions: Mutex<HashMap<String, Entry>>,
    logs: Mutex<Logs>,
    replicas: Mutex<HashMap<String, (String, Instant)>>,
}

#[derive(Debug, Default)]
struct Logs {
    map: HashMap<String, Arc<Log>>,
    /// Log ids, oldest first, for eviction; may hold ids already gone.
    order: VecDeque<String>,
    by_session: HashMap<String, Vec<String>>,
}

/// How many logs one eviction looks at before giving up: live logs are
/// skipped, so a store full of live streams may briefly exceed its cap
/// rather than cut one.
const EVICTION_SCAN: usize = 64;

impl Logs {
    fn remove(&mut self, id: &str) {
        if let Some(log) = self.map.remove(id)
            && let Some(ids) = self.by_session.get_mut(&log.meta.session_id)
        {
            ids.retain(|s| s != id);
            if ids.is_empty() {
                self.by_session.remove(&log.meta.session_id);
            }
        }
    }

    fn remove_session(&mut self, session: &str) {
        for id in self.by_session.remove(session).unwrap_or_default() {
            self.map.remove(&id);
        }
    }

    /// Drops the oldest finished log, if one is found quickly.
    fn evict_one(&mut self) {
        for _ in 0..EVICTION_SCAN {
            let Some(id) = self.order.pop_front() else { return };
            match self.map.get(&id) {
                None => continue,
                Some(log) if lock(&log.state).ended => {
                    self.remove(&id);
                    return;
                }
                Some(_) => self.order.push_back(id),
            }
        }
    }
}

#[derive(Debug)]
struct Entry {
    record: SessionRecord,
    expires: Instant,
}

#[derive(Debug)]
struct Log {
    meta: StreamMeta,
    state: Mutex<LogState>,
    appended: watch::Sender<()>,
}

#[derive(Debug)]
struct LogState {
    events: VecDeque<StoredEvent>,
    ended: bool,
    delivered: u64,
    expires: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the maps half
    // written (every critical section is a single insert/remove/push), so a
    // poisoned lock is still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryStore {
    /// An empty store whose logs keep what `limits` allow.
    pub fn new(limits: LogLimits) -> Arc<Self> {
        let store = Arc::new(Self {
            limits,
            sessions: Mutex::default(),
            logs: Mutex::default(),
            replicas: Mutex::default(),
        });
        let weak = Arc::downgrade(&store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(store) => store.sweep(),
                    None => return,
                }
            }
        });
        store
    }

    /// Drops expired sessions and logs.
    fn sweep(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        lock(&self.sessions).retain(|id, e| {
            let live = e.expires > now;
            if !live {
                expired.push(id.clone());
            }
            live
        });
        let mut logs = lock(&self.logs);
        for session in expired {
            logs.remove_session(&session);
        }
        let dead: Vec<String> = logs
            .map
            .iter()
            .filter(|(_, log)| lock(&log.state).expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            logs.remove(&id);
        }
        let Logs { map, order, .. } = &mut *logs;
        order.retain(|id| map.contains_key(id));
    }

    fn log(&self, key: &StreamKey) -> Option<Arc<Log>> {
        let log = lock(&self.logs).map.get(&key.id).cloned()?;
        if log.meta.session_id != key.session {
            return None;
        }
        let live = lock(&log.state).expires > Instant::now();
        live.then_some(log)
    }

    /// Number of live sessions (for tests and metrics).
    pub fn session_count(&self) -> usize {
        let now = Instant::now();
        lock(&self.sessions).values().filter(|e| e.expires > now).count()
    }
}

fn missing_stream(id: &StreamKey) -> StoreError {
    StoreError::Corrupt(format!("stream {id} does not exist"))
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_session(&self, record: &SessionRecord, idle: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        if sessions.get(&record.id).is_some_and(|e| e.expires > now) {
            return Ok(false);
        }
        sessions.insert(
            record.id.clone(),
            Entry {
                record: record.clone(),
                expires: now + idle,
            },
        );
        Ok(true)
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>> {
        let now = Instant::now();
        let sessions = lock(&self.sessions);
        Ok(sessions
            .get(id)
            .filter(|e| e.expires > now)
            .map(|e| e.record.clone()))
    }

    async fn update_session(&self, record: &SessionRecord, idle: Duration) -> Result<bool> {
        let now = Instant::now();
        match lock(&self.sessions).get_mut(&record.id) {
            Some(e) if e.expires > now => {
                e.record = record.clone();
                e.expires = now + idle;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn touch_session(&self, id: &str, idle: Duration) -> Result<bool> {
        let now = Instant::now();
        match lock(&self.sessions).get_mut(id) {
            Some(e) if e.expires > now => {
                e.expires = now + idle;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete_session(&self, id: &str) -> Result<bool> {
        let now = Instant::now();
        let existed = lock(&self.sessions).remove(id).is_some_and(|e| e.expires > now);
        lock(&self.logs).remove_session(id);
        Ok(existed)
    }

    async fn create_stream(&self, meta: &StreamMeta) -> Result<()> {
        let log = Arc::new(Log {
            meta: meta.clone(),
            state: Mutex::new(LogState {
                events: VecDeque::new(),
                ended: false,
                delivered: 0,
                expires: Instant::now() + self.limits.retention,
            }),
            appended: watch::Sender::new(()),
        });
        let mut logs = lock(&self.logs);
        if logs.map.insert(meta.id.clone(), log).is_none() {
            logs.order.push_back(meta.id.clone());
            logs.by_session
                .entry(meta.session_id.clone())
                .or_default()
                .push(meta.id.clone());
        }
        while logs.map.len() > self.limits.max_streams {
            let before = logs.map.len();
            logs.evict_one();
            if logs.map.len() == before {
                break;
            }
        }
        Ok(())
    }

    async fn stream_meta(&self, key: &StreamKey) -> Result<Option<StreamMeta>> {
        Ok(self.log(key).map(|log| log.meta.clone()))
    }

    async fn append(&self, stream: &StreamKey, events: &[StoredEvent]) -> Result<()> {
        let log = self.log(stream).ok_or_else(|| missing_stream(stream))?;
        {
            let mut state = lock(&log.state);
            for event in events {
                if state.events.len() == self.limits.max_events {
                    state.events.pop_front();
                }
                state.events.push_back(event.clone());
            }
            state.expires = Instant::now() + self.limits.retention;
        }
        log.appended.send_replace(());
        Ok(())
    }

    async fn end_stream(&self, stream: &StreamKey) -> Result<()> {
        let log = self.log(stream).ok_or_else(|| missing_stream(stream))?;
        lock(&log.state).ended = true;
        log.appended.send_replace(());
        Ok(())
    }

    async fn read(&self, stream: &StreamKey, after: u64, wait: Duration) -> Result<LogRead> {
        let Some(log) = self.log(stream) else {
            return Ok(LogRead {
                missing: true,
                ..Default::default()
            });
        };
        let mut woken = log.appended.subscribe();
        if let Some(read) = collect(&log, after) {
            return Ok(read);
        }
        // Subscribed before collecting, so an append in between still wakes us.
        let _ = tokio::time::timeout(wait, woken.changed()).await;
        Ok(collect(&log, after).unwrap_or_default())
    }

    async fn set_delivered(&self, stream: &StreamKey, seq: u64) -> Result<()> {
        if let Some(log) = self.log(stream) {
            let mut state = lock(&log.state);
            state.delivered = state.delivered.max(seq);
        }
        Ok(())
    }

    async fn delivered(&self, stream: &StreamKey) -> Result<u64> {
        Ok(self.log(stream).map_or(0, |log| lock(&log.state).delivered))
    }

    async fn open_streams(&self, session: &str) -> Result<Vec<StreamMeta>> {
        let logs = lock(&self.logs);
        let ids = logs.by_session.get(session).cloned().unwrap_or_default();
        Ok(ids
            .iter()
            .filter_map(|id| logs.map.get(id))
            .filter(|log| log.meta.kind == StreamKind::Request && !lock(&log.state).ended)
            .map(|log| log.meta.clone())
            .collect())
    }

    async fn last_seq(&self, key: &StreamKey) -> Result<u64> {
        Ok(self
            .log(key)
            .and_then(|log| lock(&log.state).events.back().map(|e| e.seq))
            .unwrap_or(0))
    }

    async fn claim_session(&self, id: &str, from: &str, to: &str) -> Result<bool> {
        let now = Instant::now();
        match lock(&self.sessions).get_mut(id) {
            Some(e) if e.expires > now && e.record.owner == from => {
                e.record.owner = to.to_owned();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn heartbeat(&self, replica: &str, addr: &str, ttl: Duration) -> Result<()> {
        lock(&self.replicas).insert(replica.to_owned(), (addr.to_owned(), Instant::now() + ttl));
        Ok(())
    }

    async fn replica_addr(&self, replica: &str) -> Result<Option<String>> {
        let now = Instant::now();
        Ok(lock(&self.replicas)
            .get(replica)
            .filter(|(_, until)| *until > now)
            .map(|(addr, _)| addr.clone()))
    }

    async fn deregister(&self, replica: &str) -> Result<()> {
        lock(&self.replicas).remove(replica);
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

/// The events after `after`, or `None` when there are none yet and more may come.
fn collect(log: &Log, after: u64) -> Option<LogRead> {
    let state = lock(&log.state);
    // Seqs increase, so skip to the first one past `after` by binary search.
    let start = state.events.partition_point(|e| e.seq <= after);
    let events: Vec<_> = state
        .events
        .iter()
        .skip(start)
        .take(READ_BATCH)
        .cloned()
        .collect();
    let ended = state.ended && start + events.len() == state.events.len();
    (!events.is_empty() || ended).then_some(LogRead {
        events,
        ended,
        missing: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Arc<MemoryStore> {
        MemoryStore::new(LogLimits {
            max_events: 8,
            max_streams: 16,
            retention: Duration::from_secs(60),
        })
    }

    #[tokio::test]
    async fn memory_store_passes_the_store_suite() {
        super::super::suite::run_all(|| async { store() as Arc<dyn Store> }).await;
    }

    #[tokio::test]
    async fn the_oldest_finished_logs_go_first_past_the_cap() {
        let s = store();
        let meta = |i: usize| StreamMeta {
            id: format!("l{i}"),
            session_id: "s".into(),
            kind: StreamKind::Request,
            pending: Vec::new(),
            replica: "replica-a".into(),
        };
        // l0 stays live; every other log ends as soon as it is made.
        for i in 0..24 {
            s.create_stream(&meta(i)).await.unwrap();
            if i > 0 {
                s.end_stream(&meta(i).key()).await.unwrap();
            }
        }
        let kept: Vec<usize> = (0..24).filter(|i| s.log(&meta(*i).key()).is_some()).collect();
        assert_eq!(kept.len(), 16);
        assert_eq!(kept[0], 0, "a live log is never evicted");
        assert_eq!(
            &kept[1..],
            &(9..24).collect::<Vec<_>>()[..],
            "the oldest finished logs went first"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_when_idle() {
        let s = store();
        let record = super::super::suite::record("idle");
        assert!(s.create_session(&record, Duration::from_secs(10)).await.unwrap());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(s.touch_session("idle", Duration::from_secs(10)).await.unwrap());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(s.get_session("idle").await.unwrap().is_some());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(s.get_session("idle").await.unwrap().is_none());
        assert!(!s.touch_session("idle", Duration::from_secs(10)).await.unwrap());
        assert_eq!(s.session_count(), 0);
    }
}

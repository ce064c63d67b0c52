//! The in-process store: enough for one replica, gone when the process exits.
//!
//! Sessions and logs sit in maps behind short-held mutexes; nothing awaits
//! while a lock is held. Each log has a `watch` channel that wakes readers
//! after an append, so following a live stream costs no polling.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{
    LogLimits, LogRead, READ_BATCH, Result, SessionRecord, Store, StoreError, StoredEvent, StreamMeta,
};

/// The in-memory [`Store`].
#[derive(Debug)]
pub struct MemoryStore {
    limits: LogLimits,
    sessions: Mutex<HashMap<String, Entry>>,
    logs: Mutex<HashMap<String, Arc<Log>>>,
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
        lock(&self.sessions).retain(|_, e| e.expires > now);
        lock(&self.logs).retain(|_, log| lock(&log.state).expires > now);
    }

    fn log(&self, id: &str) -> Option<Arc<Log>> {
        let log = lock(&self.logs).get(id).cloned()?;
        let live = lock(&log.state).expires > Instant::now();
        live.then_some(log)
    }

    /// Number of live sessions (for tests and metrics).
    pub fn session_count(&self) -> usize {
        let now = Instant::now();
        lock(&self.sessions).values().filter(|e| e.expires > now).count()
    }
}

fn missing_stream(id: &str) -> StoreError {
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
        Ok(lock(&self.sessions).remove(id).is_some_and(|e| e.expires > now))
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
        lock(&self.logs).insert(meta.id.clone(), log);
        Ok(())
    }

    async fn stream_meta(&self, id: &str) -> Result<Option<StreamMeta>> {
        Ok(self.log(id).map(|log| log.meta.clone()))
    }

    async fn append(&self, stream: &str, events: &[StoredEvent]) -> Result<()> {
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

    async fn end_stream(&self, stream: &str) -> Result<()> {
        let log = self.log(stream).ok_or_else(|| missing_stream(stream))?;
        lock(&log.state).ended = true;
        log.appended.send_replace(());
        Ok(())
    }

    async fn read(&self, stream: &str, after: u64, wait: Duration) -> Result<LogRead> {
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

    async fn set_delivered(&self, stream: &str, seq: u64) -> Result<()> {
        if let Some(log) = self.log(stream) {
            let mut state = lock(&log.state);
            state.delivered = state.delivered.max(seq);
        }
        Ok(())
    }

    async fn delivered(&self, stream: &str) -> Result<u64> {
        Ok(self.log(stream).map_or(0, |log| lock(&log.state).delivered))
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
            retention: Duration::from_secs(60),
        })
    }

    #[tokio::test]
    async fn memory_store_passes_the_store_suite() {
        super::super::suite::run_all(|| async { store() as Arc<dyn Store> }).await;
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

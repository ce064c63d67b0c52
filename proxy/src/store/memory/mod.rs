//! The in-process store: enough for one replica, gone when the process exits.
//!
//! Sessions and logs sit in maps behind short-held mutexes; nothing awaits
//! while a lock is held. A log lives as long as its stream is open (that is,
//! as long as its session), and for the retention after it ends. Memory is
//! bounded by events and bytes per log, by logs in all and by bytes in all:
//! past a bound the oldest *finished* logs go first, then the oldest events
//! of the log that grows. Each log has a `watch` channel that wakes readers
//! after an append, so following a live stream costs no polling.
//!
//! Lock order: `sessions` before `logs` before a log's `state`, never the
//! other way round.

mod buckets;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use self::buckets::Buckets;
use super::{
    Instance, LogRead, OpenStream, Owner, READ_BATCH, Registration, Result, SessionChange, SessionRecord,
    Store, StoreError, StoreLimits, StoredEvent, StreamKey, StreamKind, StreamMeta, Update, lock,
};

/// The in-memory [`Store`].
#[derive(Debug)]
pub struct MemoryStore {
    limits: StoreLimits,
    sessions: Mutex<HashMap<String, Entry>>,
    logs: Mutex<Logs>,
    /// Bytes of events held in all logs.
    held: AtomicUsize,
    replicas: Mutex<HashMap<String, (Registration, Instant)>>,
    /// Rate-limit buckets.
    buckets: Buckets,
}

#[derive(Debug, Default)]
struct Logs {
    map: HashMap<String, Arc<Log>>,
    /// Finished logs in the order they ended, for eviction; may hold ids
    /// already gone.
    finished: VecDeque<String>,
    by_session: HashMap<String, HashSet<String>>,
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
    bytes: usize,
    /// The highest seq ever appended (events may have been trimmed since).
    last_seq: u64,
    /// Who appends; `None` once the stream ended.
    writer: Option<String>,
    delivered: u64,
    /// Set when the stream ends: it lives on for the retention.
    expires: Option<Instant>,
}

impl LogState {
    fn ended(&self) -> bool {
        self.writer.is_none()
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }

    /// Drops the oldest event; the caller keeps `held` in step.
    fn pop_oldest(&mut self) -> usize {
        let freed = self.events.pop_front().map_or(0, |e| e.bytes());
        self.bytes -= freed;
        freed
    }
}

impl Logs {
    /// Removes a log; returns the bytes it held.
    fn remove(&mut self, id: &str) -> usize {
        let Some(log) = self.map.remove(id) else { return 0 };
        if let Some(ids) = self.by_session.get_mut(&log.meta.session_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_session.remove(&log.meta.session_id);
            }
        }
        // Wake its readers, so they see it gone now rather than at their wait.
        log.appended.send_replace(());
        lock(&log.state).bytes
    }

    fn remove_session(&mut self, session: &str) -> usize {
        let ids = self.by_session.get(session).cloned().unwrap_or_default();
        ids.iter().map(|id| self.remove(id)).sum()
    }

    /// Drops the oldest finished log; returns the bytes freed, or `None`
    /// when no finished log is left.
    fn evict_oldest_finished(&mut self) -> Option<usize> {
        while let Some(id) = self.finished.pop_front() {
            // A finished standalone log re-opened by a new owner is live again.
            if self.map.get(&id).is_some_and(|log| lock(&log.state).ended()) {
                return Some(self.remove(&id));
            }
        }
        None
    }
}

impl MemoryStore {
    /// An empty store keeping what `limits` allow.
    pub fn new(limits: StoreLimits) -> Arc<Self> {
        let store = Arc::new(Self {
            limits,
            sessions: Mutex::default(),
            logs: Mutex::default(),
            held: AtomicUsize::new(0),
            replicas: Mutex::default(),
            buckets: Buckets::default(),
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

    /// Drops expired sessions (with their logs) and finished logs past
    /// their retention.
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
        let mut freed: usize = expired.iter().map(|s| logs.remove_session(s)).sum();
        let dead: Vec<String> = logs
            .map
            .iter()
            .filter(|(_, log)| lock(&log.state).expired(now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            freed += logs.remove(&id);
        }
        let Logs { map, finished, .. } = &mut *logs;
        finished.retain(|id| map.contains_key(id));
        drop(logs);
        self.held.fetch_sub(freed, Ordering::Relaxed);
    }

    fn log(&self, key: &StreamKey) -> Option<Arc<Log>> {
        let log = lock(&self.logs).map.get(&key.id).cloned()?;
        if log.meta.session_id != key.session || lock(&log.state).expired(Instant::now()) {
            return None;
        }
        Some(log)
    }

    fn writable(&self, key: &StreamKey) -> Result<Arc<Log>> {
        self.log(key)
            .ok_or_else(|| StoreError::Fenced(format!("{key} (the stream no longer exists)")))
    }

    /// Brings the bytes held back under the budget: the oldest finished logs
    /// go first, then the oldest events of `growing` (the log just appended
    /// to). `Full` when even that cannot make room.
    fn reclaim(&self, growing: &Log) -> Result<()> {
        let over = |held: &AtomicUsize| held.load(Ordering::Relaxed) > self.limits.max_bytes;
        if !over(&self.held) {
            return Ok(());
        }
        let mut logs = lock(&self.logs);
        while over(&self.held) {
            match logs.evict_oldest_finished() {
                Some(freed) => {
                    self.held.fetch_sub(freed, Ordering::Relaxed);
                }
                None => break,
            }
        }
        drop(logs);
        let mut state = lock(&growing.state);
        while over(&self.held) && state.events.len() > 1 {
            let freed = state.pop_oldest();
            self.held.fetch_sub(freed, Ordering::Relaxed);
        }
        if over(&self.held) {
            return Err(StoreError::Full(format!(
                "{} bytes of events held, budget {}",
                self.held.load(Ordering::Relaxed),
                self.limits.max_bytes
            )));
        }
        Ok(())
    }

    /// Number of live sessions (for tests and metrics).
    pub fn session_count(&self) -> usize {
        let now = Instant::now();
        lock(&self.sessions).values().filter(|e| e.expires > now).count()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_session(&self, record: &SessionRecord) -> Result<bool> {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        if sessions.get(&record.id).is_some_and(|e| e.expires > now) {
            return Ok(false);
        }
        sessions.insert(
            record.id.clone(),
            Entry {
                record: record.clone(),
                expires: now + self.limits.idle,
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

    async fn update_session(&self, id: &str, epoch: u64, change: &SessionChange) -> Result<Update> {
        let now = Instant::now();
        match lock(&self.sessions).get_mut(id) {
            Some(e) if e.expires > now => {
                if e.record.epoch != epoch {
                    return Ok(Update::Fenced);
                }
                change.apply(&mut e.record);
                e.expires = now + self.limits.idle;
                Ok(Update::Applied)
            }
            _ => Ok(Update::Gone),
        }
    }

    async fn touch_session(&self, id: &str) -> Result<bool> {
        let now = Instant::now();
        match lock(&self.sessions).get_mut(id) {
            Some(e) if e.expires > now => {
                e.expires = now + self.limits.idle;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete_session(&self, id: &str) -> Result<bool> {
        let now = Instant::now();
        let existed = lock(&self.sessions).remove(id).is_some_and(|e| e.expires > now);
        let freed = lock(&self.logs).remove_session(id);
        self.held.fetch_sub(freed, Ordering::Relaxed);
        Ok(existed)
    }

    async fn claim_session(
        &self,
        id: &str,
        epoch: u64,
        to: &Owner,
        addr: Option<&str>,
    ) -> Result<Option<u64>> {
        let now = Instant::now();
        match lock(&self.sessions).get_mut(id) {
            Some(e) if e.expires > now && e.record.epoch == epoch => {
                e.record.epoch += 1;
                e.record.owner = to.clone();
                e.record.owner_addr = addr.map(str::to_owned);
                Ok(Some(e.record.epoch))
            }
            _ => Ok(None),
        }
    }

    async fn create_stream(&self, meta: &StreamMeta, writer: &Instance) -> Result<()> {
        // Held until the log is in, so a delete either comes first (and the
        // stream is refused) or finds the log and drops it.
        let sessions = lock(&self.sessions);
        if sessions
            .get(&meta.session_id)
            .is_none_or(|e| e.expires <= Instant::now())
        {
            return Err(StoreError::Fenced(format!("session {} is gone", meta.session_id)));
        }
        let mut logs = lock(&self.logs);
        if let Some(log) = logs.map.get(&meta.id)
            && log.meta.session_id == meta.session_id
        {
            let mut state = lock(&log.state);
            state.writer = Some(writer.to_string());
            state.expires = None;
            return Ok(());
        }
        let log = Arc::new(Log {
            meta: meta.clone(),
            state: Mutex::new(LogState {
                events: VecDeque::new(),
                bytes: 0,
                last_seq: 0,
                writer: Some(writer.to_string()),
                delivered: 0,
                expires: None,
            }),
            appended: watch::Sender::new(()),
        });
        logs.map.insert(meta.id.clone(), log);
        logs.by_session
            .entry(meta.session_id.clone())
            .or_default()
            .insert(meta.id.clone());
        let mut freed = 0;
        while logs.map.len() > self.limits.max_streams {
            match logs.evict_oldest_finished() {
                Some(bytes) => freed += bytes,
                // Only open logs left: they are bounded by the sessions
                // that hold them, so the cap waits for one to finish.
                None => break,
            }
        }
        drop(logs);
        drop(sessions);
        self.held.fetch_sub(freed, Ordering::Relaxed);
        Ok(())
    }

    async fn stream_meta(&self, key: &StreamKey) -> Result<Option<StreamMeta>> {
        Ok(self.log(key).map(|log| log.meta.clone()))
    }

    async fn append(&self, key: &StreamKey, writer: &Instance, events: &[StoredEvent]) -> Result<()> {
        let log = self.writable(key)?;
        {
            let mut state = lock(&log.state);
            if !state.writer.as_deref().is_some_and(|w| writer.matches(w)) {
                return Err(StoreError::Fenced(key.to_string()));
            }
            let mut added = 0;
            for event in events {
                if event.seq <= state.last_seq {
                    continue;
                }
                added += event.bytes();
                state.last_seq = event.seq;
                state.events.push_back(event.clone());
            }
            state.bytes += added;
            let mut freed = 0;
            while state.events.len() > 1
                && (state.events.len() > self.limits.max_events || state.bytes > self.limits.max_log_bytes)
            {
                freed += state.pop_oldest();
            }
            self.held.fetch_add(added, Ordering::Relaxed);
            self.held.fetch_sub(freed, Ordering::Relaxed);
        }
        let reclaimed = self.reclaim(&log);
        log.appended.send_replace(());
        reclaimed
    }

    async fn end_stream(&self, key: &StreamKey, writer: &Instance) -> Result<()> {
        let log = self.writable(key)?;
        {
            let mut state = lock(&log.state);
            match state.writer.as_deref() {
                None => return Ok(()),
                Some(w) if writer.matches(w) => {}
                Some(_) => return Err(StoreError::Fenced(key.to_string())),
            }
            state.writer = None;
            state.expires = Some(Instant::now() + self.limits.retention_of(log.meta.kind));
        }
        lock(&self.logs).finished.push_back(key.id.clone());
        log.appended.send_replace(());
        Ok(())
    }

    async fn take_stream(&self, key: &StreamKey, from: &str, to: &Instance) -> Result<bool> {
        let Some(log) = self.log(key) else {
            return Ok(false);
        };
        let mut state = lock(&log.state);
        if state.writer.as_deref() != Some(from) {
            return Ok(false);
        }
        state.writer = Some(to.to_string());
        Ok(true)
    }

    async fn read(&self, key: &StreamKey, after: u64, wait: Duration) -> Result<LogRead> {
        let Some(log) = self.log(key) else {
            return Ok(LogRead::Missing);
        };
        let mut woken = log.appended.subscribe();
        if let Some(read) = collect(&log, after) {
            return Ok(read);
        }
        // Subscribed before collecting, so an append in between still wakes us.
        let _ = tokio::time::timeout(wait, woken.changed()).await;
        if self.log(key).is_none() {
            return Ok(LogRead::Missing);
        }
        Ok(collect(&log, after).unwrap_or(LogRead::Events {
            events: Vec::new(),
            ended: false,
        }))
    }

    async fn set_delivered(&self, key: &StreamKey, seq: u64) -> Result<()> {
        if let Some(log) = self.log(key) {
            let mut state = lock(&log.state);
            state.delivered = state.delivered.max(seq);
        }
        Ok(())
    }

    async fn delivered(&self, key: &StreamKey) -> Result<u64> {
        Ok(self.log(key).map_or(0, |log| lock(&log.state).delivered))
    }

    async fn open_streams(&self, session: &str) -> Result<Vec<OpenStream>> {
        let logs = lock(&self.logs);
        let Some(ids) = logs.by_session.get(session) else {
            return Ok(Vec::new());
        };
        Ok(ids
            .iter()
            .filter_map(|id| logs.map.get(id))
            .filter(|log| log.meta.kind == StreamKind::Request)
            .filter_map(|log| {
                let writer = lock(&log.state).writer.clone()?;
                Some(OpenStream {
                    meta: log.meta.clone(),
                    writer,
                })
            })
            .collect())
    }

    async fn last_seq(&self, key: &StreamKey) -> Result<u64> {
        Ok(self.log(key).map_or(0, |log| lock(&log.state).last_seq))
    }

    async fn heartbeat(&self, me: &Instance, addr: &str, draining: bool, ttl: Duration) -> Result<()> {
        let registration = Registration {
            incarnation: me.incarnation.clone(),
            addr: addr.to_owned(),
            draining,
        };
        lock(&self.replicas).insert(me.replica.clone(), (registration, Instant::now() + ttl));
        Ok(())
    }

    async fn registration(&self, replica: &str) -> Result<Option<Registration>> {
        let now = Instant::now();
        Ok(lock(&self.replicas)
            .get(replica)
            .filter(|(_, until)| *until > now)
            .map(|(r, _)| r.clone()))
    }

    async fn deregister(&self, me: &Instance) -> Result<()> {
        let mut replicas = lock(&self.replicas);
        if replicas
            .get(&me.replica)
            .is_some_and(|(r, _)| r.incarnation == me.incarnation)
        {
            replicas.remove(&me.replica);
        }
        Ok(())
    }

    async fn take_token(&self, key: &str, burst: u32, per_second: f64) -> Result<Option<Duration>> {
        Ok(self.buckets.take(key, burst, per_second))
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn held_bytes(&self) -> Option<u64> {
        u64::try_from(self.held.load(Ordering::Relaxed)).ok()
    }
}

/// The events after `after`, or `None` when there are none yet and more may come.
fn collect(log: &Log, after: u64) -> Option<LogRead> {
    let state = lock(&log.state);
    // Seqs increase, so skip to the first one past `after` by binary search.
    let start = state.events.partition_point(|e| e.seq <= after);
    if let Some(first) = state.events.get(start)
        && first.seq > after + 1
    {
        return Some(LogRead::Gap { first: first.seq });
    }
    let events: Vec<_> = state
        .events
        .iter()
        .skip(start)
        .take(READ_BATCH)
        .cloned()
        .collect();
    let ended = state.ended() && start + events.len() == state.events.len();
    (!events.is_empty() || ended).then_some(LogRead::Events { events, ended })
}

#[cfg(test)]
mod tests;

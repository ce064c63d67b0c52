//! Where sessions and SSE event logs live.
//!
//! The [`Store`] trait is the boundary between the proxy and its state. The
//! memory store serves one replica; a shared store (Redis) lets every replica
//! see every session and every stream. Both must pass the same test-suite
//! ([`suite`]), so the proxy can rely on the contract written here rather than
//! on one implementation.

mod memory;
mod record;
mod redis;
#[cfg(test)]
pub mod suite;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::redis::RedisStore;
pub use memory::MemoryStore;
pub use record::{Instance, Owner, Registration, SessionChange, SessionRecord, Update};

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or timed out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something that cannot be read.
    #[error("store holds unreadable data: {0}")]
    Corrupt(String),
    /// The writer no longer holds the stream: another process took it over.
    #[error("stream {0} was taken over by another writer")]
    Fenced(String),
    /// The memory store's byte budget cannot hold the events.
    #[error("event store full: {0}")]
    Full(String),
}

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which kind of stream a log records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// The response stream of one POST.
    Request,
    /// A session's standalone server-to-client stream.
    Standalone,
}

/// Names one stream's log. The session is part of the name so that a store
/// can keep all of a session's keys together (one Redis hash slot) and so a
/// client can never reach another session's stream by guessing its id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// The session the stream belongs to.
    pub session: String,
    /// The stream id (the part of event ids before the dot).
    pub id: String,
}

impl std::fmt::Display for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// What the store keeps about a stream besides its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    /// The stream id (the part of event ids before the dot).
    pub id: String,
    /// The session the stream belongs to.
    pub session_id: String,
    /// Request or standalone stream.
    pub kind: StreamKind,
    /// The request ids a request stream answers: what its clients would wait
    /// for forever if the pump died with its replica. Once the stream ended
    /// a store may forget them.
    #[serde(default)]
    pub pending: Vec<serde_json::Value>,
}

impl StreamMeta {
    /// The key naming this stream.
    pub fn key(&self) -> StreamKey {
        StreamKey {
            session: self.session_id.clone(),
            id: self.id.clone(),
        }
    }
}

/// A stream that has not ended, and the process writing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenStream {
    /// The stream.
    pub meta: StreamMeta,
    /// Its writer, as [`Instance`] text.
    pub writer: String,
}

/// One event of a stream's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Position in the stream, from 1, strictly increasing, without holes.
    pub seq: u64,
    /// The SSE event type, if the upstream set one.
    pub event: Option<String>,
    /// The event's data (one JSON-RPC message).
    pub data: String,
}

impl StoredEvent {
    /// What the event costs to keep, roughly: its text and some overhead.
    pub fn bytes(&self) -> usize {
        self.data.len() + self.event.as_ref().map_or(0, String::len) + 64
    }
}

/// The answer to [`Store::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogRead {
    /// The events after the position, in order (none yet, if the wait
    /// passed), and whether the stream has ended after them.
    Events {
        /// The events.
        events: Vec<StoredEvent>,
        /// The stream is complete and every event has been returned.
        ended: bool,
    },
    /// The events right after the position were dropped (the log keeps only
    /// its newest); `first` is the oldest still kept. Replaying from here
    /// would silently skip messages.
    Gap {
        /// The oldest seq still in the log.
        first: u64,
    },
    /// The log does not exist: never did, or expired after its retention.
    Missing,
}

/// Bounds on what a store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// A session ends after this long without a touch; so do the logs of
    /// its open streams.
    pub idle: Duration,
    /// Events kept per stream; older ones are dropped.
    pub max_events: usize,
    /// Bytes of events kept per stream (memory store); older ones go first,
    /// the newest is always kept.
    pub max_log_bytes: usize,
    /// Logs kept in all, where the store has no memory policy of its own;
    /// the oldest finished ones are dropped first.
    pub max_streams: usize,
    /// Bytes of events kept in all (memory store).
    pub max_bytes: usize,
    /// How long a standalone stream's log lives after the stream ended.
    pub retention: Duration,
    /// How long a response stream's log lives after the stream ended.
    pub response_retention: Duration,
}

impl StoreLimits {
    /// How long a finished stream of `kind` stays readable.
    pub fn retention_of(&self, kind: StreamKind) -> Duration {
        match kind {
            StreamKind::Request => self.response_retention,
            StreamKind::Standalone => self.retention,
        }
    }
}

/// Largest number of events one [`Store::read`] returns.
pub const READ_BATCH: usize = 256;

/// Locks a store's mutex. Every critical section in the stores is a handful
/// of inserts, removes and pushes that cannot panic half way, so a poisoned
/// lock is still consistent.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// [`Store::finish`] in two steps.
async fn append_then_end<S: Store + ?Sized>(
    store: &S,
    key: &StreamKey,
    writer: &Instance,
    events: &[StoredEvent],
) -> Result<()> {
    match store.append(key, writer, events).await {
        // Refused: either the stream ended already (a retry whose reply was
        // lost: ending again is a no-op) or another writer holds it (ending
        // is refused too).
        Ok(()) | Err(StoreError::Fenced(_)) => store.end_stream(key, writer).await,
        Err(e) => Err(e),
    }
}

/// Sessions, event logs and the replica registry.
///
/// Contract every implementation keeps (checked by [`suite`]):
/// - a session is created only if its id is free, and never comes back once
///   deleted or expired: updates and touches of an absent session fail;
/// - a session expires after `idle` without a touch; its logs go with it
///   when it expires or is deleted;
/// - owner writes name the epoch they believe in; a claim moves the epoch
///   on, so writes of a fenced owner are refused;
/// - a log lives while its stream is open (as long as its session), and for
///   its kind's retention after the stream ends;
/// - only a stream's writer appends to it or ends it; appending events at or
///   below the last seq is a no-op (a retried batch), never an error;
/// - appended events are visible to every reader once `append` returns
///   (persist, then deliver), in seq order;
/// - `read` returns at most [`READ_BATCH`] events after a position and waits
///   up to `wait` when there are none yet and the stream has not ended; a
///   reader whose next events were dropped gets [`LogRead::Gap`].
#[async_trait]
pub trait Store: std::fmt::Debug + Send + Sync + 'static {
    /// Creates a session; `false` if the id is taken.
    async fn create_session(&self, record: &SessionRecord) -> Result<bool>;
    /// Looks a live session up.
    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>>;
    /// Changes one field of a session on behalf of the owner of `epoch`,
    /// and restarts its idle clock.
    async fn update_session(&self, id: &str, epoch: u64, change: &SessionChange) -> Result<Update>;
    /// Restarts a session's idle clock (and its open logs'); `false` if it
    /// no longer exists.
    async fn touch_session(&self, id: &str) -> Result<bool>;
    /// Ends a session and drops its event logs; `false` if it did not exist.
    async fn delete_session(&self, id: &str) -> Result<bool>;
    /// Moves a session from the holder of `epoch` to `to` (whose peer
    /// address is `addr`), only if no other claim came first. Returns the new
    /// epoch when this claim won; exactly one of several racing claims wins.
    async fn claim_session(
        &self,
        id: &str,
        epoch: u64,
        to: &Owner,
        addr: Option<&str>,
    ) -> Result<Option<u64>>;

    /// Registers a stream as open, written by `writer`. A stream that exists
    /// already (a standalone stream going on under a new owner) changes
    /// writer and keeps its events. [`StoreError::Fenced`] when the session
    /// is gone: nothing is left behind a delete.
    async fn create_stream(&self, meta: &StreamMeta, writer: &Instance) -> Result<()>;
    /// Looks a stream of a session up.
    async fn stream_meta(&self, key: &StreamKey) -> Result<Option<StreamMeta>>;
    /// Appends events (seq already assigned, increasing) to a stream's log;
    /// [`StoreError::Fenced`] when `writer` no longer holds the stream.
    async fn append(&self, key: &StreamKey, writer: &Instance, events: &[StoredEvent]) -> Result<()>;
    /// Marks a stream complete (readers that reach its end stop) and starts
    /// its retention; [`StoreError::Fenced`] when `writer` no longer holds it.
    async fn end_stream(&self, key: &StreamKey, writer: &Instance) -> Result<()>;
    /// Appends a stream's last events and ends it, as [`Store::append`] then
    /// [`Store::end_stream`] do, in one step where the store can. Retrying
    /// after an unknown outcome is safe.
    async fn finish(&self, key: &StreamKey, writer: &Instance, events: &[StoredEvent]) -> Result<()> {
        append_then_end(self, key, writer, events).await
    }
    /// Moves an open stream from writer `from` to `to`, only if `from`
    /// still holds it.
    async fn take_stream(&self, key: &StreamKey, from: &str, to: &Instance) -> Result<bool>;
    /// Events with seq above `after`, waiting up to `wait` for some to come.
    async fn read(&self, key: &StreamKey, after: u64, wait: Duration) -> Result<LogRead>;
    /// Records how far a client was sent a standalone stream, so a new GET
    /// without `Last-Event-ID` resumes after it.
    async fn set_delivered(&self, key: &StreamKey, seq: u64) -> Result<()>;
    /// See [`Store::set_delivered`]; 0 when nothing was delivered.
    async fn delivered(&self, key: &StreamKey) -> Result<u64>;
    /// The session's request streams that have not ended, with their writers.
    async fn open_streams(&self, session: &str) -> Result<Vec<OpenStream>>;
    /// The highest seq a log was given; 0 when it has none.
    async fn last_seq(&self, key: &StreamKey) -> Result<u64>;

    /// Announces that `me` is alive at peer address `addr` for `ttl`.
    async fn heartbeat(&self, me: &Instance, addr: &str, draining: bool, ttl: Duration) -> Result<()>;
    /// The registration of replica `replica`, if one is alive.
    async fn registration(&self, replica: &str) -> Result<Option<Registration>>;
    /// Announces that `me` is gone (a newer incarnation's registration stays).
    async fn deregister(&self, me: &Instance) -> Result<()>;

    /// Takes a token from the rate-limit bucket `key` (made full on first
    /// use: `burst` tokens, refilled at `per_second`). `None` when one was
    /// taken; else how long until one is back. Every replica sharing the
    /// store shares the bucket.
    async fn take_token(&self, key: &str, burst: u32, per_second: f64) -> Result<Option<Duration>>;

    /// Checks the store answers.
    async fn ping(&self) -> Result<()>;
    /// Bytes of events held, where the store counts them (the memory store).
    fn held_bytes(&self) -> Option<u64> {
        None
    }
}

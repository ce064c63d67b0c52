//! Where sessions and SSE event logs live.
//!
//! The [`Store`] trait is the boundary between the proxy and its state. The
//! memory store serves one replica; a shared store (Redis) lets every replica
//! see every session and every stream. Both must pass the same test-suite
//! ([`suite`]), so the proxy can rely on the contract written here rather than
//! on one implementation.

mod memory;
mod redis;
#[cfg(test)]
pub mod suite;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::redis::RedisStore;
pub use memory::MemoryStore;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or timed out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something that cannot be read.
    #[error("store holds unreadable data: {0}")]
    Corrupt(String),
}

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What the store keeps of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Shadowcat's session id, the one clients see.
    pub id: String,
    /// The upstream's own session id, if the upstream is stateful.
    pub upstream_id: Option<String>,
    /// Negotiated protocol version.
    pub protocol_version: String,
    /// The replica whose upstream holds this session.
    pub owner: String,
    /// The client's `initialize` request, verbatim, for re-initializing.
    pub initialize: String,
    /// The id of the session's standalone (GET) stream log.
    pub standalone_stream: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Requests that shaped the upstream session after initialize
    /// (`resources/subscribe`, `logging/setLevel`, …), verbatim and in order,
    /// replayed when another replica adopts the session.
    #[serde(default)]
    pub replay: Vec<String>,
}

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
    /// for forever if the pump died with its replica.
    #[serde(default)]
    pub pending: Vec<serde_json::Value>,
    /// The replica whose pump writes this log.
    #[serde(default)]
    pub replica: String,
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

/// One event of a stream's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Position in the stream, from 1, strictly increasing.
    pub seq: u64,
    /// The SSE event type, if the upstream set one.
    pub event: Option<String>,
    /// The event's data (one JSON-RPC message).
    pub data: String,
}

/// The answer to [`Store::read`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRead {
    /// Events after the requested position, in order.
    pub events: Vec<StoredEvent>,
    /// The stream is complete and every event has been returned.
    pub ended: bool,
    /// The log no longer exists (never did, or expired).
    pub missing: bool,
}

/// Bounds on what a stream log keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// Events kept per stream; older ones are dropped.
    pub max_events: usize,
    /// Logs kept in all, where the store has no memory policy of its own;
    /// the oldest finished ones are dropped first.
    pub max_streams: usize,
    /// How long a log lives after its last append.
    pub retention: Duration,
}

/// Largest number of events one [`Store::read`] returns.
pub const READ_BATCH: usize = 256;

/// Sessions and event logs.
///
/// Contract every implementation keeps (checked by [`suite`]):
/// - a session is created only if its id is free, and never comes back once
///   deleted or expired: updates and touches of an absent session fail;
/// - a session expires after `idle` without a touch; its logs go with it
///   when it expires or is deleted;
/// - appended events are visible to every reader once `append` returns
///   (persist, then deliver), in seq order;
/// - `read` returns at most [`READ_BATCH`] events after a position and waits up
///   to `wait` when there are none yet and the stream has not ended.
#[async_trait]
pub trait Store: std::fmt::Debug + Send + Sync + 'static {
    /// Creates a session; `false` if the id is taken.
    async fn create_session(&self, record: &SessionRecord, idle: Duration) -> Result<bool>;
    /// Looks a live session up.
    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>>;
    /// Replaces a live session's record; `false` if it no longer exists.
    async fn update_session(&self, record: &SessionRecord, idle: Duration) -> Result<bool>;
    /// Restarts a session's idle clock; `false` if it no longer exists.
    async fn touch_session(&self, id: &str, idle: Duration) -> Result<bool>;
    /// Ends a session and drops its event logs; `false` if it did not exist.
    async fn delete_session(&self, id: &str) -> Result<bool>;

    /// Registers a new, empty stream log.
    async fn create_stream(&self, meta: &StreamMeta) -> Result<()>;
    /// Looks a stream of a session up.
    async fn stream_meta(&self, key: &StreamKey) -> Result<Option<StreamMeta>>;
    /// Appends events (seq already assigned, increasing) to a stream's log.
    async fn append(&self, key: &StreamKey, events: &[StoredEvent]) -> Result<()>;
    /// Marks a stream complete: readers that reach its end stop.
    async fn end_stream(&self, key: &StreamKey) -> Result<()>;
    /// Events with seq above `after`, waiting up to `wait` for some to come.
    async fn read(&self, key: &StreamKey, after: u64, wait: Duration) -> Result<LogRead>;
    /// Records how far a client was sent a standalone stream, so a new GET
    /// without `Last-Event-ID` resumes after it.
    async fn set_delivered(&self, key: &StreamKey, seq: u64) -> Result<()>;
    /// See [`Store::set_delivered`]; 0 when nothing was delivered.
    async fn delivered(&self, key: &StreamKey) -> Result<u64>;

    /// The session's request streams that have not ended.
    async fn open_streams(&self, session: &str) -> Result<Vec<StreamMeta>>;
    /// The highest seq in a log; 0 when it has none.
    async fn last_seq(&self, key: &StreamKey) -> Result<u64>;

    /// Moves a session from owner `from` to `to`, only if `from` still owns
    /// it; exactly one of several racing claims wins.
    async fn claim_session(&self, id: &str, from: &str, to: &str) -> Result<bool>;
    /// Announces that `replica` is alive at peer address `addr` for `ttl`.
    async fn heartbeat(&self, replica: &str, addr: &str, ttl: Duration) -> Result<()>;
    /// The peer address of a live replica.
    async fn replica_addr(&self, replica: &str) -> Result<Option<String>>;
    /// Announces that `replica` is gone.
    async fn deregister(&self, replica: &str) -> Result<()>;

    /// Checks the store answers.
    async fn ping(&self) -> Result<()>;
}

//! The Redis store: every replica sees every session and every stream.
//!
//! Keys, all of one session under one hash tag so they share a Cluster slot:
//! - `P:{S}:session` — hash: the session record, sliding idle TTL;
//! - `P:{S}:streams` — hash: stream id -> JSON `{k: kind, p: pending request
//!   ids, e: ended}`, for every log of the session;
//! - `P:{S}:delivered` — hash: stream id -> seq delivered to a client;
//! - `P:{S}:log:<stream>` — Redis Stream: entry `<seq>-0` per event (fields
//!   `d` data, `e` type), capped with MAXLEN, TTL'd with the retention; an
//!   entry with field `end` marks the stream complete;
//! - `P:replica:<id>` — a live replica's peer address, with a heartbeat TTL.
//!
//! Invariants that need more than one command run as Lua scripts (create only
//! if absent, update only if present, delete with every log, forward-only
//! delivery cursor), so concurrent replicas cannot interleave them.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisError, Script, Value};

use self::scripts::Scripts;

mod scripts;
#[cfg(test)]
mod tests;

use super::{
    LogLimits, LogRead, READ_BATCH, Result, SessionRecord, Store, StoreError, StoredEvent, StreamKey,
    StreamKind, StreamMeta,
};

/// Time allowed for one Redis command (blocking reads get their wait on top).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis [`Store`].
pub struct RedisStore {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    limits: LogLimits,
    /// Connections for blocking reads (XREAD BLOCK would stall every other
    /// command on the shared multiplexed connection). Returned after use.
    blocking: Mutex<Vec<MultiplexedConnection>>,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// A store at `url` (`redis://` or `rediss://`) whose keys start with
    /// `prefix`. Connects lazily and reconnects by itself, so a Redis that is
    /// down at start or goes away later is an error per call, not a crash.
    pub fn new(url: &str, prefix: &str, limits: LogLimits) -> Result<Self> {
        let client = Client::open(url).map_err(|e| StoreError::Unavailable(format!("bad Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.to_owned(),
            limits,
            blocking: Mutex::default(),
            scripts: Scripts::new(),
        })
    }

    fn session_key(&self, session: &str) -> String {
        format!("{}:{{{session}}}:session", self.prefix)
    }

    fn streams_key(&self, session: &str) -> String {
        format!("{}:{{{session}}}:streams", self.prefix)
    }

    fn delivered_key(&self, session: &str) -> String {
        format!("{}:{{{session}}}:delivered", self.prefix)
    }

    fn log_prefix(&self, session: &str) -> String {
        format!("{}:{{{session}}}:log:", self.prefix)
    }

    fn log_key(&self, key: &StreamKey) -> String {
        format!("{}{}", self.log_prefix(&key.session), key.id)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn blocking_conn(&self, wait: Duration) -> Result<MultiplexedConnection> {
        let pooled = self.blocking.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(conn) = pooled {
            return Ok(conn);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT + wait));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)
    }

    fn return_blocking(&self, conn: MultiplexedConnection) {
        let mut pool = self.blocking.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 64 {
            pool.push(conn);
        }
    }

    fn replica_key(&self, replica: &str) -> String {
        format!("{}:replica:{replica}", self.prefix)
    }

    fn fields(record: &SessionRecord) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("id", record.id.clone()),
            ("protocol_version", record.protocol_version.clone()),
            ("owner", record.owner.clone()),
            ("initialize", record.initialize.clone()),
            ("standalone_stream", record.standalone_stream.clone()),
            ("created_ms", record.created_ms.to_string()),
            (
                "replay",
                serde_json::to_string(&record.replay).unwrap_or_else(|_| "[]".into()),
            ),
        ];
        if let Some(upstream) = &record.upstream_id {
            fields.push(("upstream_id", upstream.clone()));
        }
        fields
    }

    async fn write_session(&self, script: &Script, record: &SessionRecord, idle: Duration) -> Result<bool> {
        let mut invocation = script.key(self.session_key(&record.id));
        invocation.arg(ms(idle));
        for (field, value) in Self::fields(record) {
            invocation.arg(field).arg(value);
        }
        let written: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }
}

fn record_from(map: std::collections::HashMap<String, String>) -> Result<Option<SessionRecord>> {
    if map.is_empty() {
        return Ok(None);
    }
    let get = |k: &str| {
        map.get(k)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("session without `{k}`")))
    };
    Ok(Some(SessionRecord {
        id: get("id")?,
        upstream_id: map.get("upstream_id").cloned(),
        protocol_version: get("protocol_version")?,
        owner: get("owner")?,
        initialize: get("initialize")?,
        standalone_stream: get("standalone_stream")?,
        created_ms: get("created_ms")?
            .parse()
            .map_err(|_| StoreError::Corrupt("bad created_ms".into()))?,
        replay: match map.get("replay") {
            None => Vec::new(),
            Some(text) => {
                serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("bad replay: {e}")))?
            }
        },
    }))
}

/// A stream registry entry as Redis keeps it. Lua's cjson writes an empty
/// array as `{}`, so `p` is read leniently.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    k: String,
    #[serde(default)]
    p: serde_json::Value,
    #[serde(default)]
    e: bool,
    #[serde(default)]
    r: String,
}

fn meta_from(key: &StreamKey, text: &str) -> Result<(StreamMeta, bool)> {
    let entry: Entry =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("bad stream entry: {e}")))?;
    let kind = match entry.k.as_str() {
        "request" => StreamKind::Request,
        "standalone" => StreamKind::Standalone,
        other => return Err(StoreError::Corrupt(format!("unknown stream kind {other}"))),
    };
    let pending = match entry.p {
        serde_json::Value::Array(ids) => ids,
        _ => Vec::new(),
    };
    Ok((
        StreamMeta {
            id: key.id.clone(),
            session_id: key.session.clone(),
            kind,
            pending,
            replica: entry.r,
        },
        entry.e,
    ))
}

/// Turns stream entries into events; `true` when the end marker was among them.
fn events_from(ids: Vec<StreamId>) -> Result<(Vec<StoredEvent>, bool)> {
    let mut events = Vec::with_capacity(ids.len());
    for entry in ids {
        if entry.contains_key("end") {
            return Ok((events, true));
        }
        let seq = entry
            .id
            .split('-')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Corrupt(format!("bad entry id {}", entry.id)))?;
        let data: String = entry
            .get("d")
            .ok_or_else(|| StoreError::Corrupt(format!("entry {} without data", entry.id)))?;
        events.push(StoredEvent {
            seq,
            event: entry.get("e"),
            data,
        });
    }
    Ok((events, false))
}

#[async_trait]
impl Store for RedisStore {
    async fn create_session(&self, record: &SessionRecord, idle: Duration) -> Result<bool> {
        self.write_session(&self.scripts.create, record, idle).await
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>> {
        let map: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.session_key(id))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        record_from(map)
    }

    async fn update_session(&self, record: &SessionRecord, idle: Duration) -> Result<bool> {
        self.write_session(&self.scripts.update, record, idle).await
    }

    async fn touch_session(&self, id: &str, idle: Duration) -> Result<bool> {
        let touched: i64 = self
            .scripts
            .touch
            .key(self.session_key(id))
            .key(self.streams_key(id))
            .key(self.delivered_key(id))
            .arg(ms(idle))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(touched == 1)
    }

    async fn delete_session(&self, id: &str) -> Result<bool> {
        let deleted: i64 = self
            .scripts
            .delete
            .key(self.session_key(id))
            .key(self.streams_key(id))
            .key(self.delivered_key(id))
            .arg(self.log_prefix(id))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(deleted == 1)
    }

    async fn create_stream(&self, meta: &StreamMeta) -> Result<()> {
        let kind = match meta.kind {
            StreamKind::Request => "request",
            StreamKind::Standalone => "standalone",
        };
        let entry = Entry {
            k: kind.into(),
            p: serde_json::Value::Array(meta.pending.clone()),
            e: false,
            r: meta.replica.clone(),
        };
        let entry = serde_json::to_string(&entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.scripts
            .add_stream
            .key(self.streams_key(&meta.session_id))
            .arg(&meta.id)
            .arg(entry)
            .arg(ms(self.limits.retention))
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn stream_meta(&self, key: &StreamKey) -> Result<Option<StreamMeta>> {
        let entry: Option<String> = redis::cmd("HGET")
            .arg(self.streams_key(&key.session))
            .arg(&key.id)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        entry
            .map(|text| meta_from(key, &text).map(|(meta, _)| meta))
            .transpose()
    }

    async fn append(&self, key: &StreamKey, events: &[StoredEvent]) -> Result<()> {
        // One round trip for the whole batch: persist, then deliver.
        let log = self.log_key(key);
        let mut pipe = redis::pipe();
        for event in events {
            let cmd = pipe
                .cmd("XADD")
                .arg(&log)
                .arg("MAXLEN")
                .arg(self.limits.max_events);
            cmd.arg(format!("{}-0", event.seq)).arg("d").arg(&event.data);
            if let Some(kind) = &event.event {
                cmd.arg("e").arg(kind);
            }
            cmd.ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(&log)
            .arg(ms(self.limits.retention))
            .ignore();
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn end_stream(&self, key: &StreamKey) -> Result<()> {
        self.scripts
            .end_stream
            .key(self.log_key(key))
            .key(self.streams_key(&key.session))
            .arg(&key.id)
            .arg(ms(self.limits.retention))
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn read(&self, key: &StreamKey, after: u64, wait: Duration) -> Result<LogRead> {
        let log = self.log_key(key);
        let range: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&log)
            .arg(format!("({after}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(READ_BATCH)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let (events, ended) = events_from(range.ids)?;
        if !events.is_empty() || ended {
            return Ok(LogRead {
                events,
                ended,
                missing: false,
            });
        }
        if self.stream_meta(key).await?.is_none() {
            return Ok(LogRead {
                missing: true,
                ..Default::default()
            });
        }
        let mut conn = self.blocking_conn(wait).await?;
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(ms(wait))
            .arg("STREAMS")
            .arg(&log)
            .arg(format!("{after}-0"))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        self.return_blocking(conn);
        let ids = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        let (events, ended) = events_from(ids)?;
        Ok(LogRead {
            events,
            ended,
            missing: false,
        })
    }

    async fn set_delivered(&self, key: &StreamKey, seq: u64) -> Result<()> {
        self.scripts
            .delivered
            .key(self.delivered_key(&key.session))
            .arg(&key.id)
            .arg(seq)
            .arg(ms(self.limits.retention))
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn delivered(&self, key: &StreamKey) -> Result<u64> {
        let seq: Option<u64> = redis::cmd("HGET")
            .arg(self.delivered_key(&key.session))
            .arg(&key.id)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(seq.unwrap_or(0))
    }

    async fn open_streams(&self, session: &str) -> Result<Vec<StreamMeta>> {
        let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.streams_key(session))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut open = Vec::new();
        for (id, text) in all {
            let key = StreamKey {
                session: session.to_owned(),
                id,
            };
            let (meta, ended) = meta_from(&key, &text)?;
            if meta.kind == StreamKind::Request && !ended {
                open.push(meta);
            }
        }
        Ok(open)
    }

    async fn last_seq(&self, key: &StreamKey) -> Result<u64> {
        let newest: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.log_key(key))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(2)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let ids = newest
            .ids
            .into_iter()
            .filter(|e| !e.contains_key("end"))
            .take(1)
            .collect();
        Ok(events_from(ids)?.0.first().map_or(0, |e| e.seq))
    }

    async fn claim_session(&self, id: &str, from: &str, to: &str) -> Result<bool> {
        let won: i64 = self
            .scripts
            .claim
            .key(self.session_key(id))
            .arg(from)
            .arg(to)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(won == 1)
    }

    async fn heartbeat(&self, replica: &str, addr: &str, ttl: Duration) -> Result<()> {
        redis::cmd("SET")
            .arg(self.replica_key(replica))
            .arg(addr)
            .arg("PX")
            .arg(ms(ttl))
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn replica_addr(&self, replica: &str) -> Result<Option<String>> {
        redis::cmd("GET")
            .arg(self.replica_key(replica))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn deregister(&self, replica: &str) -> Result<()> {
        redis::cmd("DEL")
            .arg(self.replica_key(replica))
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<()> {
        let pong: Value = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match pong {
            Value::SimpleString(_) | Value::BulkString(_) => Ok(()),
            other => Err(StoreError::Corrupt(format!("PING answered {other:?}"))),
        }
    }
}

//! The Redis store: every replica sees every session and every stream.
//!
//! Keys, all of one session under one hash tag so they share a Cluster slot:
//! - `P:{S}:session` — hash: the session record; idle TTL;
//! - `P:{S}:subs` — set: the resources the client subscribed to;
//! - `P:{S}:streams` — hash: stream id -> JSON `{k: kind, p: pending ids}`,
//!   for the standalone stream and response streams not yet ended;
//! - `P:{S}:open` — hash: stream id -> writer, for streams not yet ended;
//! - `P:{S}:finished` — sorted set: ended response streams, scored by the
//!   time their log expires; pruned as streams end, so a session's keys
//!   stay small however many calls it made;
//! - `P:{S}:delivered` — hash: stream id -> seq delivered to a client;
//! - `P:{S}:log:<stream>` — Redis Stream: entry `<seq>-0` per event (fields
//!   `d` data, `e` type), capped with approximate MAXLEN (Redis trims whole
//!   nodes). While the stream is open the log lives as long as its session
//!   (its TTL follows the session's idle TTL); an entry with field `end`
//!   ends it, and then its kind's retention counts.
//!   With `WAIT` durability, an entry `<seq>-1` (field `c`) marks every event
//!   up to `seq` as acknowledged by the replicas: readers deliver nothing
//!   past the newest such mark;
//! - `P:replica:<name>` — a live replica's registration, heartbeat TTL.
//!
//! Invariants that need more than one command run as Lua scripts, so
//! concurrent replicas cannot interleave them.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use redis::streams::StreamRangeReply;
use shadowcat_crds::RedisSettings;

use self::codec::{Entry, corrupt, fields, meta_from, record_from};
use self::conn::{Conn, Connector, unavailable};
use self::scripts::Scripts;
use self::tail::{Answer, Tail};

mod codec;
mod conn;
mod read;
mod scripts;
mod tail;
#[cfg(test)]
mod tests;

use super::{
    self as store, Instance, LogRead, OpenStream, Owner, Registration, Result, SessionChange, SessionRecord,
    Store, StoreError, StoreLimits, StoredEvent, StreamKey, StreamKind, StreamMeta, Update,
};

/// The Redis [`Store`].
pub struct RedisStore {
    conns: Connector,
    prefix: String,
    limits: StoreLimits,
    /// Replicas that must acknowledge an append, and how long to wait.
    wait: Option<(u32, Duration)>,
    scripts: Scripts,
    /// The newest events of the streams this process writes, for readers
    /// in this process.
    tail: Tail,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Keys of one session.
struct Keys {
    session: String,
    subs: String,
    streams: String,
    open: String,
    delivered: String,
    finished: String,
    log_prefix: String,
}

/// Finished response logs dropped per command when a session is deleted,
/// so deleting a busy session never holds Redis up for long.
const DELETE_BATCH: usize = 256;

impl RedisStore {
    /// A store for `settings` whose logs keep what `limits` allow. Connects
    /// lazily and reconnects by itself, so a Redis that is down at start or
    /// goes away later is an error per call, not a crash.
    pub fn new(settings: &RedisSettings, limits: StoreLimits) -> Result<Self> {
        Ok(Self {
            conns: Connector::new(settings)?,
            prefix: settings.prefix.clone(),
            limits,
            wait: (settings.wait_replicas > 0).then_some((settings.wait_replicas, settings.wait_timeout)),
            scripts: Scripts::new(),
            tail: Tail::default(),
        })
    }

    fn keys(&self, session: &str) -> Keys {
        let base = format!("{}:{{{session}}}:", self.prefix);
        Keys {
            session: format!("{base}session"),
            subs: format!("{base}subs"),
            streams: format!("{base}streams"),
            open: format!("{base}open"),
            delivered: format!("{base}delivered"),
            finished: format!("{base}finished"),
            log_prefix: format!("{base}log:"),
        }
    }

    fn log_key(&self, key: &StreamKey) -> String {
        format!("{}:{{{}}}:log:{}", self.prefix, key.session, key.id)
    }

    fn replica_key(&self, replica: &str) -> String {
        format!("{}:replica:{replica}", self.prefix)
    }

    async fn conn(&self) -> Result<Conn> {
        self.conns.shared().await
    }

    /// Entries kept per log: with acknowledgement marks, one per event too.
    fn max_len(&self) -> usize {
        match self.wait {
            Some(_) => self.limits.max_events * 2,
            None => self.limits.max_events,
        }
    }

    /// Registry entries outlive the session's idle time and any log's retention.
    fn registry_ttl(&self) -> Duration {
        self.limits
            .idle
            .max(self.limits.retention)
            .max(self.limits.response_retention)
    }

    /// Drops the logs of a deleted session's finished response streams, a
    /// batch per command.
    async fn drop_finished(&self, keys: &Keys) -> Result<()> {
        let mut conn = self.conn().await?;
        loop {
            let ids: Vec<String> = redis::cmd("ZRANGE")
                .arg(&keys.finished)
                .arg(0)
                .arg(DELETE_BATCH - 1)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if ids.is_empty() {
                return Ok(());
            }
            let logs: Vec<String> = ids.iter().map(|id| format!("{}{id}", keys.log_prefix)).collect();
            redis::pipe()
                .cmd("UNLINK")
                .arg(&logs)
                .ignore()
                .cmd("ZREM")
                .arg(&keys.finished)
                .arg(&ids)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
    }

    async fn run(&self, invocation: redis::ScriptInvocation<'_>) -> Result<i64> {
        let mut conn = self.conn().await?;
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(fenced_or_unavailable)
    }

    /// Runs `invocation`, a write to `log`. With `WAIT` durability, waits on
    /// the same connection (`WAIT` covers that connection's writes) until
    /// the configured replicas hold it, then marks events up to `mark`
    /// acknowledged.
    async fn run_durably(
        &self,
        invocation: redis::ScriptInvocation<'_>,
        log: &str,
        mark: Option<u64>,
    ) -> Result<()> {
        let Some((replicas, timeout)) = self.wait else {
            return self.run(invocation).await.map(drop);
        };
        self.conns
            .with_dedicated(Duration::ZERO, async |conn| {
                invocation
                    .invoke_async::<i64>(conn)
                    .await
                    .map_err(fenced_or_unavailable)?;
                let acked = conn.wait(log, replicas, timeout).await?;
                if acked < replicas {
                    return Err(StoreError::Unavailable(format!(
                        "{acked} of {replicas} Redis replicas acknowledged a write to {log} within {timeout:?}"
                    )));
                }
                match mark {
                    Some(seq) => self.mark_acknowledged(conn, log, seq).await,
                    None => Ok(()),
                }
            })
            .await
    }

    /// A write to a stream's log, in the layout the log scripts share.
    fn log_write<'a>(
        &self,
        script: &'a redis::Script,
        log: &str,
        key: &StreamKey,
        writer: &Instance,
        events: &[StoredEvent],
    ) -> redis::ScriptInvocation<'a> {
        let keys = self.keys(&key.session);
        let mut invocation = script.key(log);
        invocation
            .key(&keys.open)
            .key(&keys.streams)
            .key(&keys.finished)
            .arg(&key.id)
            .arg(writer.to_string())
            .arg(self.max_len())
            .arg(ms(self.limits.idle))
            .arg(ms(self.limits.retention))
            .arg(ms(self.limits.response_retention));
        for event in events {
            invocation
                .arg(event.seq)
                .arg(event.event.as_deref().unwrap_or(""))
                .arg(&event.data);
        }
        invocation
    }

    async fn mark_acknowledged(&self, conn: &mut Conn, log: &str, seq: u64) -> Result<()> {
        let marked: redis::RedisResult<Value> = redis::cmd("XADD")
            .arg(log)
            .arg("MAXLEN")
            .arg(self.max_len())
            .arg(format!("{seq}-1"))
            .arg("c")
            .arg(1)
            .query_async(conn)
            .await;
        match marked {
            Ok(_) => Ok(()),
            // A later event or mark is there already: it covers this one.
            Err(e) if e.to_string().contains("equal or smaller") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Keeps the tail in step with a write to `key`: `then` after it
    /// succeeded; a fenced writer stops following the stream.
    fn follow(&self, key: &StreamKey, result: &Result<()>, then: impl FnOnce(&Tail)) {
        match result {
            Ok(()) => then(&self.tail),
            Err(StoreError::Fenced(_)) => self.tail.forget(key),
            Err(_) => {}
        }
    }
}

fn fenced_or_unavailable(e: redis::RedisError) -> StoreError {
    let text = e.to_string();
    if text.contains("FENCED") {
        StoreError::Fenced(text)
    } else {
        StoreError::Unavailable(text)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn create_session(&self, record: &SessionRecord) -> Result<bool> {
        let mut invocation = self.scripts.create.key(self.keys(&record.id).session);
        invocation.arg(ms(self.limits.idle));
        for (field, value) in fields(record) {
            invocation.arg(field).arg(value);
        }
        Ok(self.run(invocation).await? == 1)
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>> {
        let keys = self.keys(id);
        let (map, subs): (HashMap<String, String>, BTreeSet<String>) = redis::pipe()
            .cmd("HGETALL")
            .arg(&keys.session)
            .cmd("SMEMBERS")
            .arg(&keys.subs)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        record_from(map, subs)
    }

    async fn update_session(&self, id: &str, epoch: u64, change: &SessionChange) -> Result<Update> {
        let keys = self.keys(id);
        let (op, field, value) = match change {
            SessionChange::Upstream(Some(v)) => ("set", "upstream_id", v.as_str()),
            SessionChange::Upstream(None) => ("del", "upstream_id", ""),
            SessionChange::Version(v) => ("set", "protocol_version", v.as_str()),
            SessionChange::LogLevel(v) => ("set", "log_level", v.as_str()),
            SessionChange::Subscribe(uri) => ("sadd", "", uri.as_str()),
            SessionChange::Unsubscribe(uri) => ("srem", "", uri.as_str()),
        };
        let mut invocation = self.scripts.update.key(&keys.session);
        invocation
            .key(&keys.subs)
            .arg(epoch)
            .arg(ms(self.limits.idle))
            .arg(op)
            .arg(field)
            .arg(value);
        Ok(match self.run(invocation).await? {
            0 => Update::Gone,
            1 => Update::Applied,
            _ => Update::Fenced,
        })
    }

    async fn touch_session(&self, id: &str) -> Result<bool> {
        let keys = self.keys(id);
        let mut invocation = self.scripts.touch.key(&keys.session);
        invocation
            .key(&keys.streams)
            .key(&keys.delivered)
            .key(&keys.open)
            .key(&keys.subs)
            .arg(ms(self.limits.idle))
            .arg(&keys.log_prefix);
        Ok(self.run(invocation).await? == 1)
    }

    async fn delete_session(&self, id: &str) -> Result<bool> {
        let keys = self.keys(id);
        let mut invocation = self.scripts.delete.key(&keys.session);
        invocation
            .key(&keys.streams)
            .key(&keys.delivered)
            .key(&keys.open)
            .key(&keys.subs)
            .arg(&keys.log_prefix);
        let existed = self.run(invocation).await? == 1;
        self.tail.forget_session(id);
        self.drop_finished(&keys).await?;
        Ok(existed)
    }

    async fn claim_session(
        &self,
        id: &str,
        epoch: u64,
        to: &Owner,
        addr: Option<&str>,
    ) -> Result<Option<u64>> {
        let mut invocation = self.scripts.claim.key(self.keys(id).session);
        invocation.arg(epoch).arg(to.stored()).arg(addr.unwrap_or(""));
        let epoch = self.run(invocation).await?;
        Ok((epoch > 0).then(|| u64::try_from(epoch).unwrap_or(0)))
    }

    async fn create_stream(&self, meta: &StreamMeta, writer: &Instance) -> Result<()> {
        let keys = self.keys(&meta.session_id);
        let kind = match meta.kind {
            StreamKind::Request => "request",
            StreamKind::Standalone => "standalone",
        };
        let entry = Entry {
            k: kind.into(),
            p: serde_json::Value::Array(meta.pending.clone()),
        };
        let entry = serde_json::to_string(&entry).map_err(corrupt)?;
        let mut invocation = self.scripts.add_stream.key(&keys.streams);
        invocation
            .key(&keys.open)
            .key(self.log_key(&meta.key()))
            .key(&keys.session)
            .arg(&meta.id)
            .arg(entry)
            .arg(writer.to_string())
            .arg(ms(self.registry_ttl()))
            .arg(ms(self.limits.idle));
        self.run(invocation).await?;
        self.tail.open(&meta.key());
        Ok(())
    }

    async fn stream_meta(&self, key: &StreamKey) -> Result<Option<StreamMeta>> {
        let keys = self.keys(&key.session);
        let (entry, finished): (Option<String>, Option<f64>) = redis::pipe()
            .cmd("HGET")
            .arg(&keys.streams)
            .arg(&key.id)
            .cmd("ZSCORE")
            .arg(&keys.finished)
            .arg(&key.id)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        match (entry, finished) {
            (Some(text), _) => meta_from(key, &text).map(Some),
            // A finished response stream: nothing is pending on it any more.
            (None, Some(_)) => Ok(Some(StreamMeta {
                id: key.id.clone(),
                session_id: key.session.clone(),
                kind: StreamKind::Request,
                pending: Vec::new(),
            })),
            (None, None) => Ok(None),
        }
    }

    async fn append(&self, key: &StreamKey, writer: &Instance, events: &[StoredEvent]) -> Result<()> {
        let Some(last) = events.last() else { return Ok(()) };
        let log = self.log_key(key);
        let invocation = self.log_write(&self.scripts.append, &log, key, writer, events);
        let appended = self.run_durably(invocation, &log, Some(last.seq)).await;
        self.follow(key, &appended, |tail| tail.appended(key, events));
        appended
    }

    async fn end_stream(&self, key: &StreamKey, writer: &Instance) -> Result<()> {
        let log = self.log_key(key);
        let invocation = self.log_write(&self.scripts.end_stream, &log, key, writer, &[]);
        // The end marker must survive a failover too, or readers would
        // wait on a stream nobody ends.
        let ended = self.run_durably(invocation, &log, None).await;
        self.follow(key, &ended, |tail| tail.ended(key));
        ended
    }

    async fn finish(&self, key: &StreamKey, writer: &Instance, events: &[StoredEvent]) -> Result<()> {
        if self.wait.is_some() {
            // Events are acknowledged by a mark after them: they need a
            // write of their own before the end marker.
            return store::append_then_end(self, key, writer, events).await;
        }
        let log = self.log_key(key);
        let invocation = self.log_write(&self.scripts.finish, &log, key, writer, events);
        let finished = self.run(invocation).await.map(drop);
        self.follow(key, &finished, |tail| {
            tail.appended(key, events);
            tail.ended(key);
        });
        finished
    }

    async fn take_stream(&self, key: &StreamKey, from: &str, to: &Instance) -> Result<bool> {
        let mut invocation = self.scripts.take_stream.key(self.keys(&key.session).open);
        invocation.arg(&key.id).arg(from).arg(to.to_string());
        let taken = self.run(invocation).await? == 1;
        if taken {
            self.tail.open(key);
        }
        Ok(taken)
    }

    async fn read(&self, key: &StreamKey, after: u64, wait: Duration) -> Result<LogRead> {
        match self.tail.read(key, after, wait).await {
            Answer::Served(read) => Ok(read),
            Answer::Unknown => self.read_stored(key, after, wait).await,
            Answer::Quiet => {
                // Nothing new here: make sure no other process writes the
                // stream now, or readers here would wait on a stale tail.
                let read = self.read_stored(key, after, Duration::ZERO).await?;
                if !matches!(&read, LogRead::Events { events, ended: false } if events.is_empty()) {
                    self.tail.forget(key);
                }
                Ok(read)
            }
        }
    }

    async fn set_delivered(&self, key: &StreamKey, seq: u64) -> Result<()> {
        let mut invocation = self.scripts.delivered.key(self.keys(&key.session).delivered);
        invocation.arg(&key.id).arg(seq).arg(ms(self.registry_ttl()));
        self.run(invocation).await.map(drop)
    }

    async fn delivered(&self, key: &StreamKey) -> Result<u64> {
        let seq: Option<u64> = redis::cmd("HGET")
            .arg(self.keys(&key.session).delivered)
            .arg(&key.id)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        Ok(seq.unwrap_or(0))
    }

    async fn open_streams(&self, session: &str) -> Result<Vec<OpenStream>> {
        let keys = self.keys(session);
        let mut conn = self.conn().await?;
        let writers: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&keys.open)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if writers.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&String> = writers.keys().collect();
        let metas: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&keys.streams)
            .arg(&ids)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut open = Vec::new();
        for (id, text) in ids.into_iter().zip(metas) {
            let Some(text) = text else { continue };
            let key = StreamKey {
                session: session.to_owned(),
                id: id.clone(),
            };
            let meta = meta_from(&key, &text)?;
            if meta.kind == StreamKind::Request {
                open.push(OpenStream {
                    writer: writers[id].clone(),
                    meta,
                });
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
            .arg(3)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        let mut last = 0;
        for entry in newest.ids.into_iter().filter(|e| !e.contains_key("end")) {
            let seq = entry
                .id
                .split('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            last = last.max(seq);
        }
        Ok(last)
    }

    async fn heartbeat(&self, me: &Instance, addr: &str, draining: bool, ttl: Duration) -> Result<()> {
        let value = serde_json::json!({"i": me.incarnation, "a": addr, "d": draining}).to_string();
        redis::cmd("SET")
            .arg(self.replica_key(&me.replica))
            .arg(value)
            .arg("PX")
            .arg(ms(ttl))
            .query_async::<()>(&mut self.conn().await?)
            .await
            .map_err(unavailable)
    }

    async fn registration(&self, replica: &str) -> Result<Option<Registration>> {
        let value: Option<String> = redis::cmd("GET")
            .arg(self.replica_key(replica))
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        let Some(value) = value else { return Ok(None) };
        #[derive(serde::Deserialize)]
        struct Stored {
            i: String,
            a: String,
            d: bool,
        }
        let stored: Stored =
            serde_json::from_str(&value).map_err(|e| corrupt(format!("bad registration: {e}")))?;
        Ok(Some(Registration {
            incarnation: stored.i,
            addr: stored.a,
            draining: stored.d,
        }))
    }

    async fn deregister(&self, me: &Instance) -> Result<()> {
        let mut invocation = self.scripts.deregister.key(self.replica_key(&me.replica));
        invocation.arg(&me.incarnation);
        self.run(invocation).await.map(drop)
    }

    async fn take_token(&self, key: &str, burst: u32, per_second: f64) -> Result<Option<Duration>> {
        use sha2::Digest;
        // Hashed: a key of any length and any characters (a `{` would pick
        // the Cluster slot) becomes one of fixed shape.
        let digest = sha2::Sha256::digest(key.as_bytes());
        let name = format!("{}:ratelimit:{}", self.prefix, crate::peer::auth::hex(&digest));
        let mut invocation = self.scripts.take_token.key(&name);
        invocation.arg(burst).arg(per_second / 1000.0);
        let wait = self.run(invocation).await?;
        Ok((wait > 0).then(|| Duration::from_millis(u64::try_from(wait).unwrap_or(0))))
    }

    async fn ping(&self) -> Result<()> {
        let pong: Value = redis::cmd("PING")
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        match pong {
            Value::SimpleString(_) | Value::BulkString(_) => Ok(()),
            other => Err(corrupt(format!("PING answered {other:?}"))),
        }
    }
}

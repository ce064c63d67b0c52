//! Reading a log from Redis: catch up with XRANGE, then follow another
//! process's writer with a blocking XREAD on a connection of its own.

use std::time::Duration;

use redis::streams::{StreamRangeReply, StreamReadReply};

use super::codec::{Entries, entries_from};
use super::conn::unavailable;
use super::{RedisStore, ms};
use crate::store::{LogRead, READ_BATCH, Result, StreamKey};

impl RedisStore {
    /// What a reader after `after` may be given from `entries`: `None` when
    /// nothing yet (and the stream goes on).
    fn deliverable(&self, mut entries: Entries, after: u64) -> Option<LogRead> {
        if let Some(first) = entries.events.first()
            && first.seq > after + 1
        {
            return Some(LogRead::Gap { first: first.seq });
        }
        if self.wait.is_some() {
            let acked = entries.acked;
            let before = entries.events.len();
            entries.events.retain(|e| e.seq <= acked);
            if entries.events.len() < before {
                entries.ended = false;
            }
        }
        (!entries.events.is_empty() || entries.ended).then_some(LogRead::Events {
            events: entries.events,
            ended: entries.ended,
        })
    }

    async fn range(&self, log: &str, after: u64) -> Result<Entries> {
        let range: StreamRangeReply = redis::cmd("XRANGE")
            .arg(log)
            .arg(format!("({after}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(READ_BATCH)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        entries_from(range.ids)
    }

    /// Nothing was found after `after`. An open stream waits (`None`); a
    /// stream that is not open ended — perhaps just now, between that range
    /// and this check, so its log is read again — or expired, or never
    /// existed.
    pub(super) async fn unless_open(
        &self,
        key: &StreamKey,
        log: &str,
        after: u64,
    ) -> Result<Option<LogRead>> {
        let open: bool = redis::cmd("HEXISTS")
            .arg(self.keys(&key.session).open)
            .arg(&key.id)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        if open {
            return Ok(None);
        }
        let entries = self.range(log, after).await?;
        Ok(Some(self.deliverable(entries, after).unwrap_or(LogRead::Missing)))
    }

    /// [`Store::read`] from Redis.
    pub(super) async fn read_stored(&self, key: &StreamKey, after: u64, wait: Duration) -> Result<LogRead> {
        let log = self.log_key(key);
        let entries = self.range(&log, after).await?;
        let from = entries.last_id.clone();
        if let Some(read) = self.deliverable(entries, after) {
            return Ok(read);
        }
        if from.is_none()
            && let Some(read) = self.unless_open(key, &log, after).await?
        {
            return Ok(read);
        }
        if wait.is_zero() {
            return Ok(LogRead::Events {
                events: Vec::new(),
                ended: false,
            });
        }
        let from = from.unwrap_or_else(|| format!("{after}-0"));
        self.block(&log, &from, wait).await?;
        let entries = self.range(&log, after).await?;
        Ok(self.deliverable(entries, after).unwrap_or(LogRead::Events {
            events: Vec::new(),
            ended: false,
        }))
    }

    /// Blocks until an entry after `from` arrives or `wait` passes.
    async fn block(&self, log: &str, from: &str, wait: Duration) -> Result<()> {
        self.conns
            .with_dedicated(wait, async |conn| {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(ms(wait))
                    .arg("STREAMS")
                    .arg(log)
                    .arg(from)
                    .query_async::<Option<StreamReadReply>>(conn)
                    .await
                    .map(drop)
                    .map_err(unavailable)
            })
            .await
    }
}

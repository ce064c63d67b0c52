//! The newest events of the streams this process writes, kept in memory so
//! that readers in this process — the client of a POST reading its own
//! answer, a GET on the owner — follow them without a Redis round trip.
//!
//! The tail is only a cache in front of Redis: an event enters it after its
//! append succeeded (persist, then deliver), and a reader it cannot serve —
//! a stream it does not hold, a position older than it keeps, a stream whose
//! writer moved to another process — reads Redis as before. Memory is
//! bounded per stream (events and bytes) and in all (bytes); an ended
//! stream stays until a reader has seen its end, or for [`LINGER`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::{LogRead, READ_BATCH, StoredEvent, StreamKey, lock};

/// Events kept per stream.
const EVENTS: usize = 64;
/// Bytes kept per stream (the newest event is kept whatever its size, if
/// the total allows).
const STREAM_BYTES: usize = 256 * 1024;
/// Bytes kept in all.
const TOTAL_BYTES: usize = 16 * 1024 * 1024;
/// How long an ended stream nobody read to its end is kept.
const LINGER: Duration = Duration::from_secs(5);

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Tail {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Session id -> stream id -> stream.
    streams: HashMap<String, HashMap<String, Arc<Stream>>>,
    /// Ended streams in the order they ended, for the linger.
    ended: VecDeque<(Instant, StreamKey, Weak<Stream>)>,
    bytes: usize,
}

#[derive(Debug)]
struct Stream {
    state: Mutex<State>,
    appended: watch::Sender<()>,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<StoredEvent>,
    bytes: usize,
    /// The highest seq this process appended (0 before the first).
    last_seq: u64,
    ended: bool,
    /// The tail stopped following the stream (budget, fenced): readers go
    /// to Redis.
    dropped: bool,
}

/// What the tail can say to a reader.
#[derive(Debug)]
pub(super) enum Answer {
    /// The read, served from memory.
    Served(LogRead),
    /// Nothing new arrived within the wait; the stream's writer may have
    /// moved elsewhere, so the caller asks Redis once.
    Quiet,
    /// The tail cannot serve this read.
    Unknown,
}

impl Tail {
    /// Starts following a stream this process writes, from its next
    /// append on. A stream followed already and still open keeps what it has.
    pub(super) fn open(&self, key: &StreamKey) {
        let mut inner = lock(&self.inner);
        inner.forget_lingering(Instant::now());
        if let Some(stream) = inner.get(key) {
            let state = lock(&stream.state);
            if !state.ended && !state.dropped {
                return;
            }
        }
        let fresh = Arc::new(Stream {
            state: Mutex::default(),
            appended: watch::Sender::new(()),
        });
        if let Some(old) = inner.insert(key, fresh) {
            inner.release(&old);
            old.appended.send_replace(());
        }
    }

    /// Adds events Redis now holds, and wakes the stream's readers.
    pub(super) fn appended(&self, key: &StreamKey, events: &[StoredEvent]) {
        let mut inner = lock(&self.inner);
        let Some(stream) = inner.get(key).cloned() else {
            return;
        };
        let mut state = lock(&stream.state);
        if state.dropped {
            return;
        }
        for event in events {
            if event.seq <= state.last_seq {
                continue;
            }
            if state.last_seq != 0 && event.seq != state.last_seq + 1 {
                // A hole (an append this process did not see): Redis knows.
                state.dropped = true;
            }
            state.last_seq = event.seq;
            state.bytes += event.bytes();
            inner.bytes += event.bytes();
            state.events.push_back(event.clone());
        }
        while state.events.len() > 1 && (state.events.len() > EVENTS || state.bytes > STREAM_BYTES) {
            inner.bytes -= state.pop_oldest();
        }
        if state.dropped || inner.bytes > TOTAL_BYTES {
            // This stream's readers go to Redis from now on.
            inner.bytes -= state.clear();
        }
        drop(state);
        drop(inner);
        stream.appended.send_replace(());
    }

    /// The stream ended (its end marker is in Redis).
    pub(super) fn ended(&self, key: &StreamKey) {
        let mut inner = lock(&self.inner);
        let Some(stream) = inner.get(key).cloned() else {
            return;
        };
        lock(&stream.state).ended = true;
        inner
            .ended
            .push_back((Instant::now(), key.clone(), Arc::downgrade(&stream)));
        drop(inner);
        stream.appended.send_replace(());
    }

    /// Stops following a stream (another process writes it now, or its
    /// session is gone); its readers go to Redis.
    pub(super) fn forget(&self, key: &StreamKey) {
        let removed = lock(&self.inner).remove(key);
        if let Some(stream) = removed {
            stream.appended.send_replace(());
        }
    }

    /// Stops following every stream of a deleted session.
    pub(super) fn forget_session(&self, session: &str) {
        let mut inner = lock(&self.inner);
        let removed = inner.streams.remove(session).unwrap_or_default();
        for stream in removed.values() {
            inner.release(stream);
        }
        drop(inner);
        for stream in removed.values() {
            stream.appended.send_replace(());
        }
    }

    /// Events after `after`, from memory, waiting up to `wait` for some.
    pub(super) async fn read(&self, key: &StreamKey, after: u64, wait: Duration) -> Answer {
        let Some(stream) = lock(&self.inner).get(key).cloned() else {
            return Answer::Unknown;
        };
        let mut woken = stream.appended.subscribe();
        match self.collect(key, &stream, after) {
            Collected::Read(read) => return Answer::Served(read),
            Collected::Cannot => return Answer::Unknown,
            Collected::Nothing if wait.is_zero() => return Answer::Quiet,
            Collected::Nothing => {}
        }
        // Subscribed before collecting, so an append in between still wakes us.
        if tokio::time::timeout(wait, woken.changed()).await.is_err() {
            return Answer::Quiet;
        }
        match self.collect(key, &stream, after) {
            Collected::Read(read) => Answer::Served(read),
            Collected::Cannot => Answer::Unknown,
            Collected::Nothing => Answer::Served(LogRead::Events {
                events: Vec::new(),
                ended: false,
            }),
        }
    }

    fn collect(&self, key: &StreamKey, stream: &Stream, after: u64) -> Collected {
        let state = lock(&stream.state);
        if state.dropped {
            return Collected::Cannot;
        }
        let start = state.events.partition_point(|e| e.seq <= after);
        let oldest = state.events.front().map_or(state.last_seq + 1, |e| e.seq);
        if after + 1 < oldest {
            // Older than the tail keeps: Redis may still have it.
            return Collected::Cannot;
        }
        let events: Vec<StoredEvent> = state
            .events
            .iter()
            .skip(start)
            .take(READ_BATCH)
            .cloned()
            .collect();
        let ended = state.ended && start + events.len() == state.events.len();
        drop(state);
        if ended {
            // Read to its end: nobody in this process needs it any more.
            let mut inner = lock(&self.inner);
            if inner
                .get(key)
                .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), stream))
            {
                inner.remove(key);
            }
        }
        match events.is_empty() && !ended {
            true => Collected::Nothing,
            false => Collected::Read(LogRead::Events { events, ended }),
        }
    }

    /// Streams followed now (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.inner).streams.values().map(HashMap::len).sum()
    }
}

enum Collected {
    Read(LogRead),
    Nothing,
    Cannot,
}

impl State {
    fn pop_oldest(&mut self) -> usize {
        let freed = self.events.pop_front().map_or(0, |e| e.bytes());
        self.bytes -= freed;
        freed
    }

    /// Stops serving from memory; returns the bytes freed.
    fn clear(&mut self) -> usize {
        self.dropped = true;
        self.events.clear();
        std::mem::take(&mut self.bytes)
    }
}

impl Inner {
    fn get(&self, key: &StreamKey) -> Option<&Arc<Stream>> {
        self.streams.get(&key.session)?.get(&key.id)
    }

    fn insert(&mut self, key: &StreamKey, stream: Arc<Stream>) -> Option<Arc<Stream>> {
        self.streams
            .entry(key.session.clone())
            .or_default()
            .insert(key.id.clone(), stream)
    }

    fn remove(&mut self, key: &StreamKey) -> Option<Arc<Stream>> {
        let streams = self.streams.get_mut(&key.session)?;
        let stream = streams.remove(&key.id)?;
        if streams.is_empty() {
            self.streams.remove(&key.session);
        }
        self.release(&stream);
        Some(stream)
    }

    fn release(&mut self, stream: &Stream) {
        self.bytes -= lock(&stream.state).clear();
    }

    /// Drops ended streams nobody read to their end within the linger
    /// (unless the stream was opened again since).
    fn forget_lingering(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.ended.front() {
            if now.duration_since(*at) < LINGER {
                return;
            }
            let Some((_, key, ended)) = self.ended.pop_front() else {
                return;
            };
            let current = self.get(&key).is_some_and(|s| ended.as_ptr() == Arc::as_ptr(s));
            if current && let Some(stream) = self.remove(&key) {
                stream.appended.send_replace(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::events;

    fn key(id: &str) -> StreamKey {
        StreamKey {
            session: "s".into(),
            id: id.into(),
        }
    }

    fn seqs(answer: Answer) -> (Vec<u64>, bool) {
        match answer {
            Answer::Served(LogRead::Events { events, ended }) => {
                (events.iter().map(|e| e.seq).collect(), ended)
            }
            other => panic!("not served: {other:?}"),
        }
    }

    const NOW: Duration = Duration::ZERO;

    #[tokio::test]
    async fn serves_what_was_appended_and_lets_go_once_read_to_the_end() {
        let tail = Tail::default();
        assert!(matches!(tail.read(&key("a"), 0, NOW).await, Answer::Unknown));
        tail.open(&key("a"));
        assert!(matches!(tail.read(&key("a"), 0, NOW).await, Answer::Quiet));
        tail.appended(&key("a"), &events(1..=3));
        tail.appended(&key("a"), &events(2..=4)); // a retried batch
        assert_eq!(seqs(tail.read(&key("a"), 1, NOW).await), (vec![2, 3, 4], false));
        tail.ended(&key("a"));
        assert_eq!(seqs(tail.read(&key("a"), 4, NOW).await), (vec![], true));
        assert_eq!(tail.len(), 0, "read to its end, the stream is let go");
        assert!(matches!(tail.read(&key("a"), 4, NOW).await, Answer::Unknown));
        assert_eq!(lock(&tail.inner).bytes, 0);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_an_append_and_on_forget() {
        let tail = Arc::new(Tail::default());
        tail.open(&key("a"));
        let reader = tokio::spawn({
            let tail = tail.clone();
            async move { seqs(tail.read(&key("a"), 0, Duration::from_secs(30)).await) }
        });
        crate::test_support::eventually("the reader to wait", || async {
            let stream = lock(&tail.inner).get(&key("a")).cloned()?;
            (stream.appended.receiver_count() > 0).then_some(())
        })
        .await;
        tail.appended(&key("a"), &events(1..=1));
        assert_eq!(reader.await.unwrap(), (vec![1], false));

        let reader = tokio::spawn({
            let tail = tail.clone();
            async move { tail.read(&key("a"), 1, Duration::from_secs(30)).await }
        });
        crate::test_support::eventually("the reader to wait", || async {
            let stream = lock(&tail.inner).get(&key("a")).cloned()?;
            (stream.appended.receiver_count() > 0).then_some(())
        })
        .await;
        tail.forget(&key("a"));
        assert!(
            matches!(reader.await.unwrap(), Answer::Unknown),
            "forgotten: ask Redis"
        );
    }

    #[tokio::test]
    async fn keeps_only_the_newest_and_sends_older_positions_to_redis() {
        let tail = Tail::default();
        tail.open(&key("a"));
        let last = EVENTS as u64 + 10;
        tail.appended(&key("a"), &events(1..=last));
        assert!(matches!(tail.read(&key("a"), 0, NOW).await, Answer::Unknown));
        assert!(matches!(tail.read(&key("a"), 9, NOW).await, Answer::Unknown));
        let (got, _) = seqs(tail.read(&key("a"), 10, NOW).await);
        assert_eq!(got, (11..=last).collect::<Vec<_>>());
        // A hole (an append this process did not make) stops serving from memory.
        tail.appended(&key("a"), &events(last + 2..=last + 2));
        assert!(matches!(tail.read(&key("a"), last, NOW).await, Answer::Unknown));
        assert_eq!(lock(&tail.inner).bytes, 0);
    }

    #[tokio::test]
    async fn the_byte_budget_holds_across_streams() {
        let tail = Tail::default();
        let big = |seq| StoredEvent {
            seq,
            event: None,
            data: "x".repeat(STREAM_BYTES - 100),
        };
        let streams = TOTAL_BYTES / STREAM_BYTES + 4;
        for n in 0..streams {
            tail.open(&key(&n.to_string()));
            tail.appended(&key(&n.to_string()), &[big(1)]);
            assert!(lock(&tail.inner).bytes <= TOTAL_BYTES);
        }
        let served = (0..streams)
            .filter(|n| {
                lock(&tail.inner)
                    .get(&key(&n.to_string()))
                    .is_some_and(|s| !lock(&s.state).dropped)
            })
            .count();
        assert!(
            served > 0 && served < streams,
            "{served} of {streams} served from memory"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_stream_nobody_reads_goes_after_the_linger_and_a_reopened_one_stays() {
        let tail = Tail::default();
        for id in ["unread", "reopened"] {
            tail.open(&key(id));
            tail.appended(&key(id), &events(1..=1));
            tail.ended(&key(id));
        }
        tail.open(&key("reopened"));
        tokio::time::advance(LINGER).await;
        tail.open(&key("other"));
        assert!(matches!(tail.read(&key("unread"), 0, NOW).await, Answer::Unknown));
        assert!(
            matches!(tail.read(&key("reopened"), 0, NOW).await, Answer::Quiet),
            "the new stream starts empty and open"
        );
        assert_eq!(tail.len(), 2);
    }
}

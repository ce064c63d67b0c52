//! The store contract as tests, written once and run against every [`Store`].
//!
//! A factory hands each test a fresh, empty store whose logs keep at most 8
//! events, whose sessions idle out after a minute and whose finished logs are
//! retained at least that long. (Caps on bytes and on the number of logs are
//! an implementation's own business and are tested beside it.)

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{
    Instance, LogRead, Owner, SessionChange, SessionRecord, Store, StoreError, StoreLimits, StoredEvent,
    StreamKey, StreamKind, StreamMeta, Update,
};

const NO_WAIT: Duration = Duration::from_millis(1);

/// The limits the suite's stores are made with: 8 events per log, an idle
/// minute, a minute of retention for either kind of stream; no byte or log cap that a test would meet.
pub fn limits() -> StoreLimits {
    StoreLimits {
        idle: Duration::from_secs(60),
        max_events: 8,
        max_log_bytes: 1 << 20,
        max_streams: 16,
        max_bytes: 1 << 30,
        retention: Duration::from_secs(60),
        response_retention: Duration::from_secs(60),
    }
}

/// The instance the suite writes as.
pub fn writer() -> Instance {
    Instance {
        replica: "replica-a".into(),
        incarnation: "1".into(),
    }
}

/// A session record with the given id, owned by [`writer`] at epoch 1.
pub fn record(id: &str) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        upstream_id: Some(format!("up-{id}")),
        protocol_version: "2025-06-18".into(),
        owner: Owner::Held(writer()),
        epoch: 1,
        owner_addr: Some("10.0.0.1:8081".into()),
        initialize: r#"{"jsonrpc":"2.0","id":0,"method":"initialize"}"#.into(),
        standalone_stream: format!("{id}g"),
        created_ms: 1,
        principal: Some("aXNz.c3Vi".into()),
        log_level: None,
        subscriptions: BTreeSet::new(),
    }
}

/// Opens `meta`'s stream, written by `writer`, creating its session first
/// if there is none (a store refuses streams of sessions it does not hold).
pub async fn open_stream(store: &dyn Store, meta: &StreamMeta, writer: &Instance) {
    store.create_session(&record(&meta.session_id)).await.unwrap();
    store.create_stream(meta, writer).await.unwrap();
}

/// A stream of `session`.
pub fn meta(session: &str, id: &str, kind: StreamKind) -> StreamMeta {
    StreamMeta {
        id: id.into(),
        session_id: session.into(),
        kind,
        pending: Vec::new(),
    }
}

/// Events with these seqs, each a small JSON object.
pub fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<StoredEvent> {
    seqs.map(|seq| StoredEvent {
        seq,
        event: None,
        data: format!("{{\"n\":{seq}}}"),
    })
    .collect()
}

/// The seqs of a read that returned events; panics on a gap or a miss.
fn seqs(read: &LogRead) -> Vec<u64> {
    match read {
        LogRead::Events { events, .. } => events.iter().map(|e| e.seq).collect(),
        other => panic!("expected events, got {other:?}"),
    }
}

fn ended(read: &LogRead) -> bool {
    matches!(read, LogRead::Events { ended: true, .. })
}

fn key_of(session: &str, id: &str) -> StreamKey {
    StreamKey {
        session: session.into(),
        id: id.into(),
    }
}

fn key(id: &str) -> StreamKey {
    key_of("s", id)
}

async fn stream(store: &dyn Store, id: &str) -> StreamKey {
    let m = meta("s", id, StreamKind::Request);
    open_stream(store, &m, &writer()).await;
    m.key()
}

/// Runs every contract test, each on a fresh store.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    create_is_exclusive(&*fresh().await).await;
    deleted_sessions_stay_deleted(&*fresh().await).await;
    concurrent_creates_have_one_winner(fresh().await).await;
    owner_writes_are_fenced_by_a_newer_claim(&*fresh().await).await;
    concurrent_subscriptions_are_all_kept(fresh().await).await;
    log_reads_after_a_position_in_order(&*fresh().await).await;
    read_wakes_on_a_live_append(fresh().await).await;
    end_marker_stops_readers(&*fresh().await).await;
    finish_appends_and_ends_in_one_step(&*fresh().await).await;
    log_keeps_the_newest_events_and_a_reader_behind_them_sees_a_gap(&*fresh().await).await;
    unknown_stream_reads_as_missing(&*fresh().await).await;
    delivered_cursor_only_moves_forward(&*fresh().await).await;
    deleting_a_session_drops_its_logs(&*fresh().await).await;
    open_streams_are_the_unfinished_request_streams(&*fresh().await).await;
    last_seq_is_the_newest_event(&*fresh().await).await;
    appends_are_idempotent_and_only_the_writer_appends(&*fresh().await).await;
    a_standalone_stream_goes_on_under_a_new_writer(&*fresh().await).await;
    one_claim_wins_a_race(fresh().await).await;
    replicas_register_and_deregister_by_incarnation(&*fresh().await).await;
    rate_limit_buckets_hold_their_burst_and_refill(fresh().await).await;
}

async fn rate_limit_buckets_hold_their_burst_and_refill(store: Arc<dyn Store>) {
    // 3 tokens, refilled at 20 per second: 50 ms per token.
    let takes = futures::future::join_all((0..5).map(|_| store.take_token("suite-a", 3, 20.0))).await;
    let taken = takes.iter().filter(|t| matches!(t, Ok(None))).count();
    assert_eq!(taken, 3, "concurrent takes share one bucket: {takes:?}");
    let wait = takes
        .iter()
        .find_map(|t| t.as_ref().ok().copied().flatten())
        .expect("an empty bucket says how long to wait");
    assert!(wait <= Duration::from_millis(60), "{wait:?}");
    assert_eq!(
        store.take_token("suite-b", 1, 20.0).await.unwrap(),
        None,
        "each key has its own bucket"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if store.take_token("suite-a", 3, 20.0).await.unwrap().is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bucket never refilled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn create_is_exclusive(store: &dyn Store) {
    let a = record("s1");
    assert!(store.create_session(&a).await.unwrap());
    let mut other = record("s1");
    other.owner = Owner::Released;
    assert!(
        !store.create_session(&other).await.unwrap(),
        "create must not overwrite"
    );
    assert_eq!(store.get_session("s1").await.unwrap(), Some(a.clone()));
    let change = SessionChange::Version("2025-11-25".into());
    assert_eq!(
        store.update_session("s1", 1, &change).await.unwrap(),
        Update::Applied
    );
    let mut updated = a.clone();
    updated.protocol_version = "2025-11-25".into();
    assert_eq!(store.get_session("s1").await.unwrap(), Some(updated));
    let change = SessionChange::Upstream(None);
    store.update_session("s1", 1, &change).await.unwrap();
    assert_eq!(store.get_session("s1").await.unwrap().unwrap().upstream_id, None);
    assert_eq!(store.get_session("nope").await.unwrap(), None);
}

async fn deleted_sessions_stay_deleted(store: &dyn Store) {
    let a = record("s2");
    assert!(store.create_session(&a).await.unwrap());
    assert!(store.delete_session("s2").await.unwrap());
    assert!(!store.delete_session("s2").await.unwrap());
    let change = SessionChange::LogLevel("debug".into());
    assert_eq!(
        store.update_session("s2", 1, &change).await.unwrap(),
        Update::Gone,
        "update must not resurrect"
    );
    assert!(
        !store.touch_session("s2").await.unwrap(),
        "touch must not resurrect"
    );
    assert_eq!(
        store
            .claim_session("s2", 1, &Owner::Released, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_session("s2").await.unwrap(), None);
}

async fn concurrent_creates_have_one_winner(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut r = record("race");
                r.created_ms = i;
                store.create_session(&r).await.unwrap()
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
}

async fn owner_writes_are_fenced_by_a_newer_claim(store: &dyn Store) {
    assert!(store.create_session(&record("f")).await.unwrap());
    let b = Owner::Held(Instance {
        replica: "replica-b".into(),
        incarnation: "7".into(),
    });
    assert_eq!(
        store
            .claim_session("f", 1, &b, Some("10.0.0.2:8081"))
            .await
            .unwrap(),
        Some(2)
    );
    let got = store.get_session("f").await.unwrap().unwrap();
    assert_eq!((got.owner, got.epoch), (b.clone(), 2));
    assert_eq!(got.owner_addr.as_deref(), Some("10.0.0.2:8081"));
    // The old owner (epoch 1) is fenced: its writes and claims are refused.
    let change = SessionChange::Upstream(Some("stale".into()));
    assert_eq!(
        store.update_session("f", 1, &change).await.unwrap(),
        Update::Fenced
    );
    assert_eq!(
        store
            .claim_session("f", 1, &Owner::Held(writer()), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_session("f")
            .await
            .unwrap()
            .unwrap()
            .upstream_id
            .as_deref(),
        Some("up-f")
    );
    // The new owner writes; releasing moves the epoch on too.
    assert_eq!(
        store.update_session("f", 2, &change).await.unwrap(),
        Update::Applied
    );
    assert_eq!(
        store.claim_session("f", 2, &Owner::Released, None).await.unwrap(),
        Some(3)
    );
    let released = store.get_session("f").await.unwrap().unwrap();
    assert_eq!((released.owner, released.owner_addr), (Owner::Released, None));
}

async fn concurrent_subscriptions_are_all_kept(store: Arc<dyn Store>) {
    assert!(store.create_session(&record("sub")).await.unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let change = SessionChange::Subscribe(format!("test://r{i}"));
                store.update_session("sub", 1, &change).await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Update::Applied);
    }
    for change in [
        SessionChange::Subscribe("test://r0".into()),
        SessionChange::Unsubscribe("test://r7".into()),
        SessionChange::LogLevel("info".into()),
        SessionChange::LogLevel("debug".into()),
    ] {
        store.update_session("sub", 1, &change).await.unwrap();
    }
    let got = store.get_session("sub").await.unwrap().unwrap();
    let expected: BTreeSet<String> = (0..7).map(|i| format!("test://r{i}")).collect();
    assert_eq!(got.subscriptions, expected, "no subscription lost, none twice");
    assert_eq!(
        got.log_level.as_deref(),
        Some("debug"),
        "the level is state, not a list"
    );
}

async fn log_reads_after_a_position_in_order(store: &dyn Store) {
    stream(store, "l1").await;
    store.append(&key("l1"), &writer(), &events(1..=3)).await.unwrap();
    store.append(&key("l1"), &writer(), &events(4..=5)).await.unwrap();
    let all = store.read(&key("l1"), 0, NO_WAIT).await.unwrap();
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5]);
    let LogRead::Events {
        events: read,
        ended: done,
    } = &all
    else {
        unreachable!()
    };
    assert_eq!(read[2].data, r#"{"n":3}"#);
    assert!(!done);
    let tail = store.read(&key("l1"), 3, NO_WAIT).await.unwrap();
    assert_eq!(seqs(&tail), vec![4, 5]);
    let none = store.read(&key("l1"), 5, NO_WAIT).await.unwrap();
    assert!(seqs(&none).is_empty() && !ended(&none));
    let other = StreamKey {
        session: "other".into(),
        id: "l1".into(),
    };
    assert_eq!(
        store.stream_meta(&other).await.unwrap(),
        None,
        "a stream is reached only through its session"
    );
    assert_eq!(store.read(&other, 0, NO_WAIT).await.unwrap(), LogRead::Missing);
    let m = store.stream_meta(&key("l1")).await.unwrap().unwrap();
    assert_eq!((m.id.as_str(), m.kind), ("l1", StreamKind::Request));
}

async fn read_wakes_on_a_live_append(store: Arc<dyn Store>) {
    stream(&*store, "l2").await;
    let mut reader = {
        let store = store.clone();
        tokio::spawn(async move { store.read(&key("l2"), 0, Duration::from_secs(30)).await.unwrap() })
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut reader)
            .await
            .is_err(),
        "the reader waits for an event"
    );
    store.append(&key("l2"), &writer(), &events(1..=1)).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seqs(&read), vec![1]);
}

async fn finish_appends_and_ends_in_one_step(store: &dyn Store) {
    stream(store, "f").await;
    store.append(&key("f"), &writer(), &events(1..=1)).await.unwrap();
    let intruder = Instance {
        replica: "other".into(),
        incarnation: "x".into(),
    };
    assert!(matches!(
        store.finish(&key("f"), &intruder, &events(2..=3)).await,
        Err(StoreError::Fenced(_))
    ));
    store.finish(&key("f"), &writer(), &events(2..=3)).await.unwrap();
    store
        .finish(&key("f"), &writer(), &events(2..=3))
        .await
        .expect("finishing again (a retry) is a no-op");
    let all = store.read(&key("f"), 0, NO_WAIT).await.unwrap();
    assert_eq!(seqs(&all), vec![1, 2, 3]);
    assert!(ended(&all));
    assert!(store.open_streams("s").await.unwrap().is_empty());
}

async fn end_marker_stops_readers(store: &dyn Store) {
    stream(store, "l3").await;
    store.append(&key("l3"), &writer(), &events(1..=2)).await.unwrap();
    store.end_stream(&key("l3"), &writer()).await.unwrap();
    store
        .end_stream(&key("l3"), &writer())
        .await
        .expect("ending twice is a no-op");
    let all = store.read(&key("l3"), 0, NO_WAIT).await.unwrap();
    assert_eq!(seqs(&all), vec![1, 2]);
    assert!(ended(&all));
    let after = tokio::time::timeout(
        Duration::from_secs(2),
        store.read(&key("l3"), 2, Duration::from_secs(30)),
    )
    .await
    .expect("an ended stream does not make its reader wait")
    .unwrap();
    assert!(seqs(&after).is_empty() && ended(&after));
}

async fn log_keeps_the_newest_events_and_a_reader_behind_them_sees_a_gap(store: &dyn Store) {
    // A store may trim in steps (Redis trims whole stream nodes), so it
    // keeps at least the newest `max_events`, and far fewer than all of
    // these.
    const LAST: u64 = 400;
    stream(store, "l4").await;
    for seq in 1..=LAST {
        store
            .append(&key("l4"), &writer(), &events(seq..=seq))
            .await
            .unwrap();
    }
    let LogRead::Gap { first } = store.read(&key("l4"), 0, NO_WAIT).await.unwrap() else {
        panic!("the oldest events were dropped: replaying from 0 would skip them");
    };
    let kept = LAST - first + 1;
    assert!(kept >= limits().max_events as u64, "kept {kept}");
    assert!(kept < LAST / 2, "kept {kept} of {LAST}");
    assert_eq!(
        store.read(&key("l4"), first - 2, NO_WAIT).await.unwrap(),
        LogRead::Gap { first }
    );
    assert_eq!(
        seqs(&store.read(&key("l4"), LAST - 8, NO_WAIT).await.unwrap()),
        (LAST - 7..=LAST).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&store.read(&key("l4"), first - 1, NO_WAIT).await.unwrap()).first(),
        Some(&first)
    );
}

async fn unknown_stream_reads_as_missing(store: &dyn Store) {
    assert_eq!(
        store.read(&key("never"), 0, NO_WAIT).await.unwrap(),
        LogRead::Missing
    );
    assert_eq!(store.stream_meta(&key("never")).await.unwrap(), None);
}

async fn delivered_cursor_only_moves_forward(store: &dyn Store) {
    stream(store, "l5").await;
    assert_eq!(store.delivered(&key("l5")).await.unwrap(), 0);
    store.set_delivered(&key("l5"), 4).await.unwrap();
    store.set_delivered(&key("l5"), 2).await.unwrap();
    assert_eq!(store.delivered(&key("l5")).await.unwrap(), 4);
}

async fn deleting_a_session_drops_its_logs(store: &dyn Store) {
    for session in ["gone", "kept"] {
        assert!(store.create_session(&record(session)).await.unwrap());
        for (n, kind) in [
            (1, StreamKind::Request),
            (2, StreamKind::Request),
            (3, StreamKind::Standalone),
        ] {
            let m = meta(session, &format!("{session}{n}"), kind);
            open_stream(store, &m, &writer()).await;
            store.append(&m.key(), &writer(), &events(1..=2)).await.unwrap();
        }
        // One response stream finished: its log outlives the stream, not the session.
        let finished = meta(session, &format!("{session}2"), StreamKind::Request);
        store.end_stream(&finished.key(), &writer()).await.unwrap();
    }
    assert!(store.delete_session("gone").await.unwrap());
    // A late opener (a standalone stream opened in the background) is refused.
    assert!(matches!(
        store
            .create_stream(&meta("gone", "late", StreamKind::Standalone), &writer())
            .await,
        Err(StoreError::Fenced(_))
    ));
    for n in 1..=3 {
        let gone = key_of("gone", &format!("gone{n}"));
        assert_eq!(
            store.read(&gone, 0, NO_WAIT).await.unwrap(),
            LogRead::Missing,
            "gone{n}"
        );
        assert_eq!(store.stream_meta(&gone).await.unwrap(), None, "gone{n}");
    }
    let kept = meta("kept", "kept1", StreamKind::Request).key();
    assert_eq!(seqs(&store.read(&kept, 0, NO_WAIT).await.unwrap()), vec![1, 2]);
}

async fn open_streams_are_the_unfinished_request_streams(store: &dyn Store) {
    let mut open = meta("o", "open", StreamKind::Request);
    open.pending = vec![serde_json::json!(7), serde_json::json!("x")];
    let mut done = meta("o", "done", StreamKind::Request);
    done.pending = vec![serde_json::json!(8)];
    let standalone = meta("o", "get", StreamKind::Standalone);
    for m in [&open, &done, &standalone] {
        open_stream(store, m, &writer()).await;
    }
    store.end_stream(&done.key(), &writer()).await.unwrap();
    let found = store.open_streams("o").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].meta, open);
    assert_eq!(found[0].writer, writer().to_string());
    // Nothing is pending on an ended stream, so a store need not keep
    // what was.
    let ended = store
        .stream_meta(&done.key())
        .await
        .unwrap()
        .expect("ended streams stay readable");
    assert_eq!((ended.id, ended.kind), (done.id, StreamKind::Request));
    assert!(store.open_streams("nobody").await.unwrap().is_empty());
}

async fn last_seq_is_the_newest_event(store: &dyn Store) {
    let k = stream(store, "ls").await;
    assert_eq!(store.last_seq(&k).await.unwrap(), 0);
    store.append(&k, &writer(), &events(1..=3)).await.unwrap();
    assert_eq!(store.last_seq(&k).await.unwrap(), 3);
    store.end_stream(&k, &writer()).await.unwrap();
    assert_eq!(
        store.last_seq(&k).await.unwrap(),
        3,
        "the end marker is not an event"
    );
}

async fn appends_are_idempotent_and_only_the_writer_appends(store: &dyn Store) {
    let k = stream(store, "w").await;
    store.append(&k, &writer(), &events(1..=3)).await.unwrap();
    // A batch retried after a lost reply, overlapping what landed.
    store
        .append(&k, &writer(), &events(2..=4))
        .await
        .expect("a retried batch is not an error");
    assert_eq!(seqs(&store.read(&k, 0, NO_WAIT).await.unwrap()), vec![1, 2, 3, 4]);
    let other = Instance {
        replica: "replica-b".into(),
        incarnation: "9".into(),
    };
    assert!(matches!(
        store.append(&k, &other, &events(5..=5)).await,
        Err(StoreError::Fenced(_))
    ));
    assert!(!store.take_stream(&k, &other.to_string(), &other).await.unwrap());
    assert!(
        store
            .take_stream(&k, &writer().to_string(), &other)
            .await
            .unwrap()
    );
    assert!(matches!(
        store.append(&k, &writer(), &events(5..=5)).await,
        Err(StoreError::Fenced(_))
    ));
    assert!(matches!(
        store.end_stream(&k, &writer()).await,
        Err(StoreError::Fenced(_))
    ));
    store.append(&k, &other, &events(5..=5)).await.unwrap();
    store.end_stream(&k, &other).await.unwrap();
    let read = store.read(&k, 3, NO_WAIT).await.unwrap();
    assert_eq!(seqs(&read), vec![4, 5]);
    assert!(ended(&read));
    assert!(store.open_streams("s").await.unwrap().is_empty());
}

async fn a_standalone_stream_goes_on_under_a_new_writer(store: &dyn Store) {
    let m = meta("s", "g", StreamKind::Standalone);
    open_stream(store, &m, &writer()).await;
    store.append(&m.key(), &writer(), &events(1..=2)).await.unwrap();
    let next = Instance {
        replica: "replica-b".into(),
        incarnation: "3".into(),
    };
    open_stream(store, &m, &next).await;
    assert!(matches!(
        store.append(&m.key(), &writer(), &events(3..=3)).await,
        Err(StoreError::Fenced(_))
    ));
    let last = store.last_seq(&m.key()).await.unwrap();
    assert_eq!(last, 2);
    store.append(&m.key(), &next, &events(3..=3)).await.unwrap();
    assert_eq!(
        seqs(&store.read(&m.key(), 0, NO_WAIT).await.unwrap()),
        vec![1, 2, 3]
    );
}

async fn one_claim_wins_a_race(store: Arc<dyn Store>) {
    assert!(store.create_session(&record("c")).await.unwrap());
    let tasks: Vec<_> = ["replica-b", "replica-c", "replica-d"]
        .into_iter()
        .map(|to| {
            let store = store.clone();
            tokio::spawn(async move {
                let owner = Owner::Held(Instance {
                    replica: to.into(),
                    incarnation: "1".into(),
                });
                let won = store.claim_session("c", 1, &owner, None).await.unwrap();
                (owner, won)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (owner, won) = task.await.unwrap();
        if let Some(epoch) = won {
            winners.push((owner, epoch));
        }
    }
    assert_eq!(winners.len(), 1);
    let got = store.get_session("c").await.unwrap().unwrap();
    assert_eq!((got.owner, got.epoch), winners[0].clone());
    assert_eq!(
        store
            .claim_session("gone", 1, &Owner::Released, None)
            .await
            .unwrap(),
        None
    );
}

async fn replicas_register_and_deregister_by_incarnation(store: &dyn Store) {
    let old = Instance {
        replica: "r1".into(),
        incarnation: "old".into(),
    };
    let new = Instance {
        replica: "r1".into(),
        incarnation: "new".into(),
    };
    assert_eq!(store.registration("r1").await.unwrap(), None);
    let ttl = Duration::from_secs(60);
    store.heartbeat(&old, "10.0.0.1:8081", false, ttl).await.unwrap();
    let got = store.registration("r1").await.unwrap().unwrap();
    assert_eq!(
        (got.incarnation.as_str(), got.addr.as_str(), got.draining),
        ("old", "10.0.0.1:8081", false)
    );
    // The pod restarts under the same name; the old process's late goodbye
    // must not remove the new one.
    store.heartbeat(&new, "10.0.0.9:8081", true, ttl).await.unwrap();
    store.deregister(&old).await.unwrap();
    let got = store.registration("r1").await.unwrap().unwrap();
    assert_eq!((got.incarnation.as_str(), got.draining), ("new", true));
    store.deregister(&new).await.unwrap();
    assert_eq!(store.registration("r1").await.unwrap(), None);
}

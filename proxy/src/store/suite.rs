//! The store contract as tests, written once and run against every [`Store`].
//!
//! A factory hands each test a fresh, empty store whose logs keep at most 8
//! events and retain them for at least a minute. (A cap on the number of logs
//! is an implementation's own business and is tested beside it.)

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{SessionRecord, Store, StoredEvent, StreamKey, StreamKind, StreamMeta};

const IDLE: Duration = Duration::from_secs(60);
const NO_WAIT: Duration = Duration::from_millis(1);

/// A session record with the given id.
pub fn record(id: &str) -> SessionRecord {
    SessionRecord {
        id: id.into(),
        upstream_id: Some(format!("up-{id}")),
        protocol_version: "2025-06-18".into(),
        owner: "replica-a".into(),
        initialize: r#"{"jsonrpc":"2.0","id":0,"method":"initialize"}"#.into(),
        standalone_stream: format!("{id}-g"),
        created_ms: 1,
        replay: vec![
            r#"{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"debug"}}"#.into(),
        ],
    }
}

fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<StoredEvent> {
    seqs.map(|seq| StoredEvent {
        seq,
        event: None,
        data: format!("{{\"n\":{seq}}}"),
    })
    .collect()
}

fn seqs(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn key(id: &str) -> StreamKey {
    StreamKey {
        session: "s".into(),
        id: id.into(),
    }
}

async fn stream(store: &dyn Store, id: &str) -> StreamKey {
    let meta = StreamMeta {
        id: id.into(),
        session_id: "s".into(),
        kind: StreamKind::Request,
        pending: Vec::new(),
        replica: "replica-a".into(),
    };
    store.create_stream(&meta).await.unwrap();
    meta.key()
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
    log_reads_after_a_position_in_order(&*fresh().await).await;
    read_wakes_on_a_live_append(fresh().await).await;
    end_marker_stops_readers(&*fresh().await).await;
    log_keeps_the_newest_events(&*fresh().await).await;
    unknown_stream_reads_as_missing(&*fresh().await).await;
    delivered_cursor_only_moves_forward(&*fresh().await).await;
    deleting_a_session_drops_its_logs(&*fresh().await).await;
    open_streams_are_the_unfinished_request_streams(&*fresh().await).await;
    last_seq_is_the_newest_event(&*fresh().await).await;
    one_claim_wins_a_race(fresh().await).await;
    replicas_register_and_deregister(&*fresh().await).await;
}

async fn create_is_exclusive(store: &dyn Store) {
    let a = record("s1");
    assert!(store.create_session(&a, IDLE).await.unwrap());
    let mut other = record("s1");
    other.owner = "replica-b".into();
    assert!(
        !store.create_session(&other, IDLE).await.unwrap(),
        "create must not overwrite"
    );
    assert_eq!(store.get_session("s1").await.unwrap(), Some(a.clone()));
    let mut updated = a.clone();
    updated.protocol_version = "2025-11-25".into();
    assert!(store.update_session(&updated, IDLE).await.unwrap());
    assert_eq!(store.get_session("s1").await.unwrap(), Some(updated));
    assert_eq!(store.get_session("nope").await.unwrap(), None);
}

async fn deleted_sessions_stay_deleted(store: &dyn Store) {
    let a = record("s2");
    assert!(store.create_session(&a, IDLE).await.unwrap());
    assert!(store.delete_session("s2").await.unwrap());
    assert!(!store.delete_session("s2").await.unwrap());
    assert!(
        !store.update_session(&a, IDLE).await.unwrap(),
        "update must not resurrect"
    );
    assert!(
        !store.touch_session("s2", IDLE).await.unwrap(),
        "touch must not resurrect"
    );
    assert_eq!(store.get_session("s2").await.unwrap(), None);
}

async fn concurrent_creates_have_one_winner(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut r = record("race");
                r.owner = format!("replica-{i}");
                store.create_session(&r, IDLE).await.unwrap()
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap());
    }
    assert_eq!(wins, 1);
}

async fn log_reads_after_a_position_in_order(store: &dyn Store) {
    stream(store, "l1").await;
    store.append(&key("l1"), &events(1..=3)).await.unwrap();
    store.append(&key("l1"), &events(4..=5)).await.unwrap();
    let all = store.read(&key("l1"), 0, NO_WAIT).await.unwrap();
    assert_eq!(seqs(&all.events), vec![1, 2, 3, 4, 5]);
    assert_eq!(all.events[2].data, r#"{"n":3}"#);
    assert!(!all.ended && !all.missing);
    let tail = store.read(&key("l1"), 3, NO_WAIT).await.unwrap();
    assert_eq!(seqs(&tail.events), vec![4, 5]);
    let none = store.read(&key("l1"), 5, NO_WAIT).await.unwrap();
    assert!(none.events.is_empty() && !none.ended);
    let other = StreamKey {
        session: "other".into(),
        id: "l1".into(),
    };
    assert_eq!(
        store.stream_meta(&other).await.unwrap(),
        None,
        "a stream is reached only through its session"
    );
    assert!(store.read(&other, 0, NO_WAIT).await.unwrap().missing);
    let meta = store.stream_meta(&key("l1")).await.unwrap().unwrap();
    assert_eq!((meta.id.as_str(), meta.kind), ("l1", StreamKind::Request));
}

async fn read_wakes_on_a_live_append(store: Arc<dyn Store>) {
    stream(&*store, "l2").await;
    let reader = {
        let store = store.clone();
        tokio::spawn(async move { store.read(&key("l2"), 0, Duration::from_secs(30)).await.unwrap() })
    };
    store.append(&key("l2"), &events(1..=1)).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seqs(&read.events), vec![1]);
}

async fn end_marker_stops_readers(store: &dyn Store) {
    stream(store, "l3").await;
    store.append(&key("l3"), &events(1..=2)).await.unwrap();
    store.end_stream(&key("l3")).await.unwrap();
    let all = store.read(&key("l3"), 0, NO_WAIT).await.unwrap();
    assert_eq!(seqs(&all.events), vec![1, 2]);
    assert!(all.ended);
    let after = store.read(&key("l3"), 2, Duration::from_secs(30)).await.unwrap();
    assert!(after.events.is_empty() && after.ended);
}

async fn log_keeps_the_newest_events(store: &dyn Store) {
    stream(store, "l4").await;
    for seq in 1..=20 {
        store.append(&key("l4"), &events(seq..=seq)).await.unwrap();
    }
    let kept = store.read(&key("l4"), 0, NO_WAIT).await.unwrap();
    assert_eq!(seqs(&kept.events), (13..=20).collect::<Vec<_>>());
}

async fn unknown_stream_reads_as_missing(store: &dyn Store) {
    let read = store.read(&key("never"), 0, NO_WAIT).await.unwrap();
    assert!(read.missing && read.events.is_empty());
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
        assert!(store.create_session(&record(session), IDLE).await.unwrap());
        let meta = StreamMeta {
            id: format!("{session}1"),
            session_id: session.into(),
            kind: StreamKind::Request,
            pending: Vec::new(),
            replica: "replica-a".into(),
        };
        store.create_stream(&meta).await.unwrap();
        store.append(&meta.key(), &events(1..=2)).await.unwrap();
    }
    assert!(store.delete_session("gone").await.unwrap());
    assert!(
        store
            .read(
                &StreamKey {
                    session: "gone".into(),
                    id: "gone1".into()
                },
                0,
                NO_WAIT
            )
            .await
            .unwrap()
            .missing
    );
    assert_eq!(
        store
            .stream_meta(&StreamKey {
                session: "gone".into(),
                id: "gone1".into()
            })
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        seqs(
            &store
                .read(
                    &StreamKey {
                        session: "kept".into(),
                        id: "kept1".into()
                    },
                    0,
                    NO_WAIT
                )
                .await
                .unwrap()
                .events
        ),
        vec![1, 2]
    );
}

async fn open_streams_are_the_unfinished_request_streams(store: &dyn Store) {
    let meta = |id: &str, kind, pending: Vec<serde_json::Value>| StreamMeta {
        id: id.into(),
        session_id: "o".into(),
        kind,
        pending,
        replica: "replica-a".into(),
    };
    let open = meta(
        "open",
        StreamKind::Request,
        vec![serde_json::json!(7), serde_json::json!("x")],
    );
    let done = meta("done", StreamKind::Request, vec![serde_json::json!(8)]);
    let standalone = meta("get", StreamKind::Standalone, vec![]);
    for m in [&open, &done, &standalone] {
        store.create_stream(m).await.unwrap();
    }
    store.end_stream(&done.key()).await.unwrap();
    assert_eq!(store.open_streams("o").await.unwrap(), vec![open.clone()]);
    assert_eq!(
        store.stream_meta(&done.key()).await.unwrap(),
        Some(done),
        "ended streams stay readable"
    );
    assert!(store.open_streams("nobody").await.unwrap().is_empty());
}

async fn last_seq_is_the_newest_event(store: &dyn Store) {
    let k = stream(store, "ls").await;
    assert_eq!(store.last_seq(&k).await.unwrap(), 0);
    store.append(&k, &events(1..=3)).await.unwrap();
    assert_eq!(store.last_seq(&k).await.unwrap(), 3);
    store.end_stream(&k).await.unwrap();
    assert_eq!(
        store.last_seq(&k).await.unwrap(),
        3,
        "the end marker is not an event"
    );
}

async fn one_claim_wins_a_race(store: Arc<dyn Store>) {
    assert!(store.create_session(&record("c"), IDLE).await.unwrap());
    assert!(
        !store.claim_session("c", "replica-x", "replica-b").await.unwrap(),
        "only the owner can be claimed from"
    );
    let tasks: Vec<_> = ["replica-b", "replica-c", "replica-d"]
        .into_iter()
        .map(|to| {
            let store = store.clone();
            tokio::spawn(async move { (to, store.claim_session("c", "replica-a", to).await.unwrap()) })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (to, won) = task.await.unwrap();
        if won {
            winners.push(to);
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(store.get_session("c").await.unwrap().unwrap().owner, winners[0]);
    assert!(
        !store
            .claim_session("gone", "replica-a", "replica-b")
            .await
            .unwrap()
    );
}

async fn replicas_register_and_deregister(store: &dyn Store) {
    assert_eq!(store.replica_addr("r1").await.unwrap(), None);
    store.heartbeat("r1", "10.0.0.1:8081", IDLE).await.unwrap();
    assert_eq!(
        store.replica_addr("r1").await.unwrap().as_deref(),
        Some("10.0.0.1:8081")
    );
    store.deregister("r1").await.unwrap();
    assert_eq!(store.replica_addr("r1").await.unwrap(), None);
}

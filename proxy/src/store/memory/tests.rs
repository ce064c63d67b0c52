//! The memory store beyond the shared contract: eviction order, byte
//! budgets, and expiry with its session.
use super::*;
use crate::store::suite;

#[tokio::test(flavor = "multi_thread")]
async fn memory_store_passes_the_store_suite() {
    suite::run_all(|| async { MemoryStore::new(suite::limits()) as Arc<dyn Store> }).await;
}

#[tokio::test]
async fn the_oldest_finished_logs_go_first_past_the_cap() {
    let s = MemoryStore::new(suite::limits());
    let meta = |i: usize| suite::meta("s", &format!("l{i}"), StreamKind::Request);
    let me = suite::writer();
    // l0 stays live; every other log ends as soon as it is made.
    for i in 0..24 {
        suite::open_stream(&*s, &meta(i), &me).await;
        if i > 0 {
            s.end_stream(&meta(i).key(), &me).await.unwrap();
        }
    }
    let kept: Vec<usize> = (0..24).filter(|i| s.log(&meta(*i).key()).is_some()).collect();
    assert_eq!(kept.len(), 16);
    assert_eq!(kept[0], 0, "a live log is never evicted");
    assert_eq!(
        &kept[1..],
        &(9..24).collect::<Vec<_>>()[..],
        "the oldest finished logs went first"
    );
}

#[tokio::test]
async fn bytes_stay_within_the_log_and_store_budgets() {
    let s = MemoryStore::new(StoreLimits {
        max_events: 1000,
        max_log_bytes: 4 * 1100,
        max_bytes: 10 * 1100,
        ..suite::limits()
    });
    let me = suite::writer();
    let big = |seq| StoredEvent {
        seq,
        event: None,
        data: "x".repeat(1000),
    };
    // One log: the newest four events fit its own budget.
    let one = suite::meta("s", "one", StreamKind::Request);
    suite::open_stream(&*s, &one, &me).await;
    for seq in 1..=6 {
        s.append(&one.key(), &me, &[big(seq)]).await.unwrap();
    }
    let LogRead::Gap { first } = s.read(&one.key(), 0, Duration::ZERO).await.unwrap() else {
        panic!("the oldest events were dropped: a reader from 0 has a gap")
    };
    assert_eq!(first, 3);
    s.end_stream(&one.key(), &me).await.unwrap();
    // More logs: finished ones go first, then the growing log's oldest.
    for n in 0..3 {
        let m = suite::meta("s", &format!("more{n}"), StreamKind::Request);
        suite::open_stream(&*s, &m, &me).await;
        for seq in 1..=4 {
            s.append(&m.key(), &me, &[big(seq)]).await.unwrap();
            assert!(
                s.held_bytes().unwrap() <= 10 * 1100,
                "held {} bytes",
                s.held_bytes().unwrap()
            );
        }
    }
    assert!(s.log(&one.key()).is_none(), "the finished log was evicted");
    // A batch larger than the whole budget is refused, not kept.
    let huge = suite::meta("s", "huge", StreamKind::Request);
    suite::open_stream(&*s, &huge, &me).await;
    let batch: Vec<_> = (1..=12).map(big).collect();
    assert!(matches!(
        s.append(&huge.key(), &me, &batch).await,
        Err(StoreError::Full(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn sessions_expire_when_idle_and_open_logs_with_them() {
    let s = MemoryStore::new(StoreLimits {
        idle: Duration::from_secs(10),
        retention: Duration::from_secs(1),
        response_retention: Duration::from_secs(1),
        ..suite::limits()
    });
    let record = suite::record("idle");
    assert!(s.create_session(&record).await.unwrap());
    let open = suite::meta("idle", "open", StreamKind::Standalone);
    suite::open_stream(&*s, &open, &suite::writer()).await;
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(s.touch_session("idle").await.unwrap());
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(s.get_session("idle").await.unwrap().is_some());
    assert!(
        s.log(&open.key()).is_some(),
        "an open log outlives the retention while its session lives"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(s.get_session("idle").await.unwrap().is_none());
    assert!(!s.touch_session("idle").await.unwrap());
    assert_eq!(s.session_count(), 0);
    s.sweep();
    assert!(s.log(&open.key()).is_none(), "its logs went with it");
}

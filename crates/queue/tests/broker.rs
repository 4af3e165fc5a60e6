//! The built-in broker's log with an injected clock: restart recovery,
//! torn tails, compaction. The state machine itself (transitions, leases,
//! backoff, dead letters, idempotency, wake-ups, bad input) is tested
//! against both backends in `testkit/tests/queue_backends.rs`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use queue::{Broker, BrokerOptions, Error, ManualClock, NewJob, State};

fn opts() -> BrokerOptions {
    BrokerOptions {
        // Ticks are driven by hand.
        tick: Duration::from_secs(3600),
        ..BrokerOptions::default()
    }
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Arc<Broker> {
    Broker::open(dir, opts(), clock.clone()).expect("open")
}

fn q() -> Vec<String> {
    vec!["q".to_owned()]
}

async fn reserve(b: &Broker) -> queue::Job {
    b.reserve(&q(), Some(Duration::ZERO), 0)
        .await
        .expect("reserve")
        .expect("a job")
}

#[tokio::test]
async fn a_restart_rebuilds_every_state_and_redelivers_leases() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let ids = {
        let b = open(dir.path(), &clock);
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(
                b.put(NewJob::new("q", format!("job {i}")))
                    .await
                    .expect("put")
                    .0,
            );
        }
        let mut delayed = NewJob::new("q", "delayed");
        delayed.delay_ms = 60_000;
        ids.push(b.put(delayed).await.expect("put").0);
        let r = reserve(&b).await; // job 0: done
        b.complete(r.id, 0, Some(1), Bytes::from("result 0"))
            .await
            .expect("c");
        let r = reserve(&b).await; // job 1: dead
        b.bury(r.id, 0, Some(1), 5).await.expect("bury");
        let r = reserve(&b).await; // job 2: deleted
        b.delete(r.id, 0, Some(1)).await.expect("delete");
        let r = reserve(&b).await; // job 3: retrying
        b.fail(r.id, 0, Some(1), "transient").await.expect("fail");
        let _held = reserve(&b).await; // job 4: reserved when it stops
        b.flush().await.expect("flush");
        ids
    };
    let b = open(dir.path(), &clock);
    let st = |i: usize| b.status(ids[i]).map(|s| s.state);
    assert_eq!(st(0), Some(State::Succeeded));
    assert_eq!(
        b.status(ids[0]).expect("s").result.as_deref(),
        Some("result 0")
    );
    assert_eq!(st(1), Some(State::Dead));
    assert_eq!(st(2), None);
    assert_eq!(st(3), Some(State::Retrying));
    assert_eq!(st(4), Some(State::Ready), "its lease died with the process");
    assert_eq!(
        b.get(ids[4]).expect("j").attempts,
        1,
        "the attempt was counted"
    );
    assert_eq!(st(5), Some(State::Ready));
    assert_eq!(st(6), Some(State::Delayed));
    assert_eq!(&b.get(ids[5]).expect("j").payload[..], b"job 5");
    // New ids continue after the old ones.
    let (next, _) = b.put(NewJob::new("q", "new")).await.expect("put");
    assert!(next > *ids.iter().max().expect("ids"));
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_damage_elsewhere_is_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let id = {
        let b = open(dir.path(), &clock);
        b.put(NewJob::new("q", "kept")).await.expect("put").0
    };
    let seg = |dir: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .expect("ls")
            .map(|e| e.expect("e").path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        v.sort();
        v
    };
    // Where the records of a segment end (zeroed space follows them).
    let end_of_records = |data: &[u8]| {
        let mut pos = 8;
        loop {
            let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4")) as usize;
            if len == 0 {
                return pos;
            }
            pos += 8 + len;
        }
    };
    // A crash mid-append: half a record after the last one of the newest
    // segment.
    let newest = seg(dir.path()).pop().expect("segment");
    let mut data = std::fs::read(&newest).expect("read");
    let at = end_of_records(&data);
    data[at..at + 10].copy_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]);
    std::fs::write(&newest, data).expect("write");
    {
        let b = open(dir.path(), &clock);
        assert_eq!(&b.get(id).expect("kept").payload[..], b"kept");
        b.put(NewJob::new("q", "after")).await.expect("put");
    }
    // Damage inside an older segment: refused, not skipped.
    let first = seg(dir.path()).remove(0);
    let mut data = std::fs::read(&first).expect("read");
    // A byte inside the first record's body.
    data[8 + 8 + 3] ^= 0xFF;
    std::fs::write(&first, data).expect("write");
    match Broker::open(dir.path(), opts(), clock.clone()) {
        Err(Error::Corrupt { .. }) => {}
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got a broker"),
    }
}

#[tokio::test]
async fn compaction_keeps_exactly_the_live_jobs() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let o = BrokerOptions {
        compact_min_bytes: 10_000,
        result_ttl_ms: 1_000,
        ..opts()
    };
    let live = {
        let b = Broker::open(dir.path(), o.clone(), clock.clone()).expect("open");
        for i in 0..200 {
            let (id, _) = b.put(NewJob::new("q", vec![b'x'; 500])).await.expect("put");
            if i % 10 != 0 {
                let r = reserve(&b).await;
                b.complete(r.id, 0, Some(1), Bytes::from("r"))
                    .await
                    .expect("c");
            } else {
                let _ = id;
            }
        }
        clock.advance(2_000);
        b.tick(); // results expire, the log is compacted
        b.flush().await.expect("flush");
        b.queue_stats("q").expect("stats").ready
    };
    assert_eq!(live, 20);
    let segs = std::fs::read_dir(dir.path()).expect("ls").count();
    let b = Broker::open(dir.path(), o, clock.clone()).expect("reopen");
    let s = b.queue_stats("q").expect("stats");
    assert_eq!((s.ready, s.succeeded), (20, 0));
    assert!(segs <= 2, "old segments removed ({segs} left)");
}

#[tokio::test]
async fn a_delete_is_durable_before_the_next_change_is_acknowledged() {
    // Default: the delete is not waited for, but its record goes into the
    // log ahead of anything later, so once a later put is acknowledged a
    // restart cannot bring the deleted job back.
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let (gone, kept) = {
        let b = open(dir.path(), &clock);
        let (gone, _) = b.put(NewJob::new("q", "done")).await.expect("put");
        let r = reserve(&b).await;
        assert_eq!(r.id, gone);
        b.delete(gone, 0, Some(1)).await.expect("delete");
        assert!(b.status(gone).is_none(), "gone at once for everyone");
        let (kept, _) = b.put(NewJob::new("q", "next")).await.expect("put");
        (gone, kept)
    };
    let b = open(dir.path(), &clock);
    assert_eq!(b.status(gone).map(|s| s.state), None);
    assert_eq!(b.status(kept).map(|s| s.state), Some(State::Ready));
}

#[tokio::test]
async fn with_sync_deletes_a_delete_answers_once_it_is_on_disk() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let o = BrokerOptions {
        sync_deletes: true,
        ..opts()
    };
    let id = {
        let b = Broker::open(dir.path(), o.clone(), clock.clone()).expect("open");
        let (id, _) = b.put(NewJob::new("q", "done")).await.expect("put");
        let r = reserve(&b).await;
        b.delete(r.id, 0, Some(1)).await.expect("delete");
        // Nothing after it, no flush: the answer itself means it is synced.
        id
    };
    let b = Broker::open(dir.path(), o, clock.clone()).expect("reopen");
    assert_eq!(b.status(id).map(|s| s.state), None);
    assert_eq!(b.queue_stats("q").map_or(0, |s| s.ready), 0);
}

//! The broker's state machine with an injected clock: every transition,
//! leases, backoff, dead letters, idempotency, restart recovery, torn
//! tails, compaction.

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
async fn every_transition_of_a_job() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let b = open(dir.path(), &clock);

    // put -> ready -> reserved -> succeeded (result kept)
    let (id, created) = b.put(NewJob::new("q", "a")).await.expect("put");
    assert!(created);
    assert_eq!(b.status(id).expect("s").state, State::Ready);
    let j = reserve(&b).await;
    assert_eq!((j.id, j.attempts, j.state), (id, 1, State::Reserved));
    b.complete(id, 0, Some(1), Bytes::from("done"))
        .await
        .expect("complete");
    let s = b.status(id).expect("s");
    assert_eq!(
        (s.state, s.result.as_deref()),
        (State::Succeeded, Some("done"))
    );

    // delayed -> ready when due
    let mut d = NewJob::new("q", "later");
    d.delay_ms = 5_000;
    let (d, _) = b.put(d).await.expect("put");
    assert_eq!(b.status(d).expect("s").state, State::Delayed);
    assert!(b
        .reserve(&q(), Some(Duration::ZERO), 0)
        .await
        .expect("r")
        .is_none());
    clock.advance(5_000);
    b.tick();
    assert_eq!(b.status(d).expect("s").state, State::Ready);

    // reserved -> released with delay -> delayed; -> ready; reserved ->
    // buried (dead) -> kicked -> ready -> deleted
    let j = reserve(&b).await;
    b.release(j.id, 0, Some(j.attempts), 7, 1_000)
        .await
        .expect("release");
    assert_eq!(b.status(d).expect("s").state, State::Delayed);
    b.kick_job(d).await.expect("kick delayed");
    let j = reserve(&b).await;
    assert_eq!(j.priority, 7);
    b.bury(j.id, 0, Some(j.attempts), 9).await.expect("bury");
    assert_eq!(b.status(d).expect("s").state, State::Dead);
    assert_eq!(b.dead("q", 10).len(), 1);
    assert_eq!(b.kick("q", 10).await.expect("kick"), 1);
    assert_eq!(b.status(d).expect("s").state, State::Ready);
    b.delete(d, 0, None).await.expect("delete");
    assert!(b.status(d).is_none());
    assert!(matches!(
        b.delete(d, 0, None).await,
        Err(Error::NotFound(_))
    ));

    // Priorities: smaller first, then older.
    for (p, body) in [(5, "p5"), (1, "p1a"), (1, "p1b")] {
        let mut j = NewJob::new("q", body);
        j.priority = p;
        b.put(j).await.expect("put");
    }
    let order: Vec<Bytes> = [reserve(&b).await, reserve(&b).await, reserve(&b).await]
        .into_iter()
        .map(|j| j.payload)
        .collect();
    assert_eq!(order, ["p1a", "p1b", "p5"].map(Bytes::from));
}

#[tokio::test]
async fn an_expired_lease_is_redelivered_and_the_old_worker_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let b = open(dir.path(), &clock);
    let mut j = NewJob::new("q", "work");
    j.ttr_ms = 2_000;
    let (id, _) = b.put(j).await.expect("put");
    let first = reserve(&b).await;
    clock.advance(1_500);
    b.touch(id, 0, Some(first.attempts)).await.expect("touch");
    clock.advance(1_500);
    b.tick();
    assert_eq!(
        b.status(id).expect("s").state,
        State::Reserved,
        "touch extended it"
    );
    clock.advance(600);
    b.tick();
    assert_eq!(
        b.status(id).expect("s").state,
        State::Ready,
        "lease expired"
    );
    let second = reserve(&b).await;
    assert_eq!(second.attempts, 2);
    // The first worker comes back late: refused, whatever it tries.
    assert!(matches!(
        b.complete(id, 0, Some(first.attempts), Bytes::new()).await,
        Err(Error::NotReserved(_))
    ));
    assert!(matches!(
        b.fail(id, 0, Some(first.attempts), "x").await,
        Err(Error::NotReserved(_))
    ));
    b.complete(id, 0, Some(second.attempts), Bytes::from("ok"))
        .await
        .expect("complete");
    assert_eq!(b.get(id).expect("j").timeouts, 1);
}

#[tokio::test]
async fn failures_back_off_exponentially_with_jitter_then_go_dead() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let b = open(dir.path(), &clock);
    let mut j = NewJob::new("q", "poison");
    j.max_attempts = 3;
    let (id, _) = b.put(j).await.expect("put");
    for (attempt, base) in [(1u32, 1_000u64), (2, 2_000)] {
        let r = reserve(&b).await;
        assert_eq!(r.attempts, attempt);
        let now = clock.now_ms_for_test();
        assert_eq!(
            b.fail(id, 0, Some(attempt), "boom").await.expect("fail"),
            State::Retrying
        );
        let at = b.get(id).expect("j").at_ms;
        assert!(
            at >= now + base / 2 && at < now + base * 3 / 2,
            "attempt {attempt}: {}",
            at - now
        );
        assert!(b
            .reserve(&q(), Some(Duration::ZERO), 0)
            .await
            .expect("r")
            .is_none());
        clock.advance(base * 3 / 2);
        b.tick();
    }
    let r = reserve(&b).await;
    assert_eq!(
        b.fail(id, 0, Some(r.attempts), "boom").await.expect("fail"),
        State::Dead
    );
    let dead = b.dead("q", 10);
    assert_eq!((dead.len(), dead[0].error.as_deref()), (1, Some("boom")));
    // A kicked dead letter gets one more attempt.
    b.kick("q", 1).await.expect("kick");
    let r = reserve(&b).await;
    assert_eq!(r.attempts, 4);
    assert_eq!(
        b.fail(id, 0, Some(4), "again").await.expect("fail"),
        State::Dead
    );
}

trait NowForTest {
    fn now_ms_for_test(&self) -> u64;
}
impl NowForTest for ManualClock {
    fn now_ms_for_test(&self) -> u64 {
        queue::Clock::now_ms(self)
    }
}

#[tokio::test]
async fn the_same_idempotency_key_gives_the_same_job_even_after_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut j = NewJob::new("q", "upload");
    j.idempotency_key = Some("client-42".into());
    let id = {
        let b = open(dir.path(), &clock);
        let (a, created_a) = b.put(j.clone()).await.expect("put");
        let (b2, created_b) = b.put(j.clone()).await.expect("put again");
        assert_eq!((a, created_a, created_b), (b2, true, false));
        // Another queue is another key space.
        let mut other = j.clone();
        other.queue = "r".into();
        assert_ne!(b.put(other).await.expect("put").0, a);
        a
    };
    let b = open(dir.path(), &clock);
    assert_eq!(b.put(j).await.expect("put after restart"), (id, false));
    assert_eq!(b.queue_stats("q").expect("stats").ready, 1);
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
async fn reserve_waits_for_a_put_and_times_out_otherwise() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let b = open(dir.path(), &clock);
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.reserve(&q(), Some(Duration::from_secs(30)), 0).await })
    };
    // Wait until the reserve is registered as waiting, then put.
    while b.waiting("q") == 0 {
        tokio::task::yield_now().await;
    }
    b.put(NewJob::new("q", "wake")).await.expect("put");
    let got = waiter.await.expect("join").expect("reserve").expect("job");
    assert_eq!(&got.payload[..], b"wake");
    let t = tokio::time::Instant::now();
    let none = b
        .reserve(&q(), Some(Duration::from_secs(5)), 0)
        .await
        .expect("r");
    assert!(none.is_none());
    assert!(t.elapsed() >= Duration::from_secs(5));
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let b = Broker::open(
        dir.path(),
        BrokerOptions {
            max_payload: 10,
            ..opts()
        },
        clock,
    )
    .expect("open");
    assert!(matches!(
        b.put(NewJob::new("q", vec![0u8; 11])).await,
        Err(Error::TooBig { .. })
    ));
    for bad in ["", "-x", "a b", "ü", &"x".repeat(201)] {
        assert!(
            matches!(b.put(NewJob::new(bad, "x")).await, Err(Error::Invalid(_))),
            "{bad:?}"
        );
    }
    assert!(b.queues().is_empty());
    assert!(matches!(
        b.complete(99, 0, Some(1), Bytes::new()).await,
        Err(Error::NotFound(99))
    ));
    let (id, _) = b.put(NewJob::new("q", "x")).await.expect("put");
    // Not reserved: complete, fail, touch are refused.
    assert!(matches!(
        b.complete(id, 0, Some(0), Bytes::new()).await,
        Err(Error::NotReserved(_))
    ));
    assert!(matches!(
        b.touch(id, 0, Some(0)).await,
        Err(Error::NotReserved(_))
    ));
}

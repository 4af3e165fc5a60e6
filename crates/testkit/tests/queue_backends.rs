//! The queue's state machine, run against both backends: the built-in
//! broker and PostgreSQL (a real server from `testkit::postgres`, one
//! fresh database per scenario). Times come from an injected clock and
//! ticks are driven by hand, so both backends see exactly the same story.
//! Log-specific behaviour (torn tails, compaction, a restart's leases)
//! stays in `queue/tests/broker.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use queue::pg::{PgOptions, PgQueue};
use queue::{Broker, BrokerOptions, Clock, Error, ManualClock, NewJob, Queue, State};
use testkit::PgCluster;

type Q = Arc<dyn Queue>;
/// Opens the backend again over the same data (a restart).
type Open = Box<dyn Fn(BrokerOptions) -> Pin<Box<dyn Future<Output = Q>>>>;

fn opts() -> BrokerOptions {
    BrokerOptions {
        // Ticks are driven by hand.
        tick: Duration::from_secs(3600),
        ..BrokerOptions::default()
    }
}

fn q() -> Vec<String> {
    vec!["q".to_owned()]
}

async fn reserve(b: &Q) -> queue::Job {
    b.reserve(&q(), Some(Duration::ZERO), 0)
        .await
        .expect("reserve")
        .expect("a job")
}

async fn state(b: &Q, id: u64) -> State {
    b.status(id).await.expect("status").expect("job").state
}

async fn every_transition_of_a_job(open: Open, clock: Arc<ManualClock>) {
    let b = open(opts()).await;
    let (id, created) = b.put(NewJob::new("q", "a")).await.expect("put");
    assert!(created);
    assert_eq!(state(&b, id).await, State::Ready);
    let j = reserve(&b).await;
    assert_eq!((j.id, j.attempts, j.state), (id, 1, State::Reserved));
    b.complete(id, 0, Some(1), Bytes::from("done"))
        .await
        .expect("complete");
    let s = b.status(id).await.expect("s").expect("job");
    assert_eq!(
        (s.state, s.result.as_deref()),
        (State::Succeeded, Some("done"))
    );

    // delayed -> ready when due
    let mut d = NewJob::new("q", "later");
    d.delay_ms = 5_000;
    let (d, _) = b.put(d).await.expect("put");
    assert_eq!(state(&b, d).await, State::Delayed);
    assert!(b
        .reserve(&q(), Some(Duration::ZERO), 0)
        .await
        .expect("r")
        .is_none());
    clock.advance(5_000);
    b.tick().await.expect("tick");
    assert_eq!(state(&b, d).await, State::Ready);

    // released with delay -> delayed -> kicked -> reserved -> buried ->
    // kicked -> deleted
    let j = reserve(&b).await;
    b.release(j.id, 0, Some(j.attempts), 7, 1_000)
        .await
        .expect("release");
    assert_eq!(state(&b, d).await, State::Delayed);
    b.kick_job(d).await.expect("kick delayed");
    let j = reserve(&b).await;
    assert_eq!(j.priority, 7);
    b.bury(j.id, 0, Some(j.attempts), 9).await.expect("bury");
    assert_eq!(state(&b, d).await, State::Dead);
    assert_eq!(
        b.peek("q", State::Dead).await.expect("peek").map(|j| j.id),
        Some(d)
    );
    assert_eq!(b.kick("q", 10).await.expect("kick"), 1);
    assert_eq!(state(&b, d).await, State::Ready);
    b.delete(d, 0, None).await.expect("delete");
    assert!(b.status(d).await.expect("s").is_none());

    // priorities first, then age
    for (p, body) in [(5u32, "p5"), (1, "p1a"), (1, "p1b")] {
        let mut j = NewJob::new("q", body);
        j.priority = p;
        b.put(j).await.expect("put");
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        let j = reserve(&b).await;
        b.complete(j.id, 0, Some(j.attempts), Bytes::new())
            .await
            .expect("c");
        order.push(j.payload);
    }
    assert_eq!(order, ["p1a", "p1b", "p5"].map(Bytes::from));
    let s = b.queue_stats("q").await.expect("stats").expect("q");
    assert_eq!((s.ready, s.succeeded), (0, 4));
    assert_eq!(b.queues().await.expect("queues"), ["q"]);
}

async fn an_expired_lease_is_redelivered_and_the_old_worker_is_refused(
    open: Open,
    clock: Arc<ManualClock>,
) {
    let b = open(opts()).await;
    let mut j = NewJob::new("q", "work");
    j.ttr_ms = 2_000;
    let (id, _) = b.put(j).await.expect("put");
    let first = reserve(&b).await;
    clock.advance(1_500);
    b.touch(id, 0, Some(first.attempts)).await.expect("touch");
    clock.advance(1_500);
    b.tick().await.expect("tick");
    assert_eq!(state(&b, id).await, State::Reserved, "touch extended it");
    clock.advance(600);
    b.tick().await.expect("tick");
    assert_eq!(state(&b, id).await, State::Ready, "lease expired");
    let second = reserve(&b).await;
    assert_eq!(second.attempts, 2);
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
    assert_eq!(b.get(id).await.expect("g").expect("j").timeouts, 1);
    // A beanstalkd connection's jobs go back when it closes.
    b.put(NewJob::new("q", "held")).await.expect("put");
    let held = b
        .reserve(&q(), Some(Duration::ZERO), 77)
        .await
        .expect("r")
        .expect("job");
    assert!(matches!(
        b.touch(held.id, 78, None).await,
        Err(Error::NotReserved(_))
    ));
    b.release_holder(77).await.expect("release holder");
    assert_eq!(state(&b, held.id).await, State::Ready);
}

async fn failures_back_off_exponentially_with_jitter_then_go_dead(
    open: Open,
    clock: Arc<ManualClock>,
) {
    let b = open(opts()).await;
    let mut j = NewJob::new("q", "poison");
    j.max_attempts = 3;
    let (id, _) = b.put(j).await.expect("put");
    for (attempt, base) in [(1u32, 1_000u64), (2, 2_000)] {
        let r = reserve(&b).await;
        assert_eq!(r.attempts, attempt);
        let now = clock.now_ms();
        assert_eq!(
            b.fail(id, 0, Some(attempt), "boom").await.expect("fail"),
            State::Retrying
        );
        let at = b.get(id).await.expect("g").expect("j").at_ms;
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
        b.tick().await.expect("tick");
    }
    let r = reserve(&b).await;
    assert_eq!(
        b.fail(id, 0, Some(r.attempts), "boom").await.expect("fail"),
        State::Dead
    );
    let dead = b.dead("q", 10).await.expect("dead");
    assert_eq!((dead.len(), dead[0].error.as_deref()), (1, Some("boom")));
    b.kick("q", 1).await.expect("kick");
    let r = reserve(&b).await;
    assert_eq!(r.attempts, 4);
    assert_eq!(
        b.fail(id, 0, Some(4), "again").await.expect("fail"),
        State::Dead
    );
}

async fn the_same_idempotency_key_gives_the_same_job_even_after_a_restart(
    open: Open,
    _clock: Arc<ManualClock>,
) {
    let mut j = NewJob::new("q", "upload");
    j.idempotency_key = Some("client-42".into());
    let id = {
        let b = open(opts()).await;
        let (a, created_a) = b.put(j.clone()).await.expect("put");
        let (b2, created_b) = b.put(j.clone()).await.expect("put again");
        assert_eq!((a, created_a, created_b), (b2, true, false));
        let mut other = j.clone();
        other.queue = "r".into();
        assert_ne!(b.put(other).await.expect("put").0, a);
        a
    };
    let b = open(opts()).await;
    assert_eq!(b.put(j).await.expect("put after restart"), (id, false));
    assert_eq!(b.queue_stats("q").await.expect("s").expect("q").ready, 1);
    // Concurrent puts with one key make one job.
    let mut k = NewJob::new("q", "race");
    k.idempotency_key = Some("race".into());
    let puts: Vec<_> = (0..8).map(|_| b.put(k.clone())).collect();
    let mut ids = Vec::new();
    for p in puts {
        ids.push(p.await.expect("put").0);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
}

async fn reserve_waits_for_a_put_and_times_out_otherwise(open: Open, _clock: Arc<ManualClock>) {
    let b = open(opts()).await;
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.reserve(&q(), Some(Duration::from_secs(30)), 0).await })
    };
    // Once the reserve is registered as waiting, put: the put's wake-up
    // (a notification for PostgreSQL) must reach it.
    while b.waiting("q") == 0 {
        assert!(!waiter.is_finished(), "reserve returned without waiting");
        tokio::task::yield_now().await;
    }
    b.put(NewJob::new("q", "wake")).await.expect("put");
    let got = waiter.await.expect("join").expect("reserve").expect("job");
    assert_eq!(&got.payload[..], b"wake");
    let t = std::time::Instant::now();
    let none = b
        .reserve(&q(), Some(Duration::from_millis(1500)), 0)
        .await
        .expect("r");
    assert!(none.is_none());
    assert!(t.elapsed() >= Duration::from_millis(1500));
}

async fn bad_input_is_refused_and_changes_nothing(open: Open, _clock: Arc<ManualClock>) {
    let b = open(BrokerOptions {
        max_payload: 10,
        ..opts()
    })
    .await;
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
    assert!(b.queues().await.expect("queues").is_empty());
    assert!(matches!(
        b.complete(99, 0, Some(1), Bytes::new()).await,
        Err(Error::NotFound(99))
    ));
    let (id, _) = b.put(NewJob::new("q", "x")).await.expect("put");
    assert!(matches!(
        b.complete(id, 0, Some(0), Bytes::new()).await,
        Err(Error::NotReserved(_))
    ));
    assert!(matches!(
        b.touch(id, 0, Some(0)).await,
        Err(Error::NotReserved(_))
    ));
    assert!(matches!(b.kick_job(id).await, Err(Error::NotFound(_))));
}

type Scenario = fn(Open, Arc<ManualClock>) -> Pin<Box<dyn Future<Output = ()>>>;

fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("transitions", |o, c| {
            Box::pin(every_transition_of_a_job(o, c))
        }),
        ("leases", |o, c| {
            Box::pin(an_expired_lease_is_redelivered_and_the_old_worker_is_refused(o, c))
        }),
        ("backoff", |o, c| {
            Box::pin(failures_back_off_exponentially_with_jitter_then_go_dead(
                o, c,
            ))
        }),
        ("idempotency", |o, c| {
            Box::pin(the_same_idempotency_key_gives_the_same_job_even_after_a_restart(o, c))
        }),
        ("wakeup", |o, c| {
            Box::pin(reserve_waits_for_a_put_and_times_out_otherwise(o, c))
        }),
        ("bad_input", |o, c| {
            Box::pin(bad_input_is_refused_and_changes_nothing(o, c))
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_broker_state_machine() {
    for (name, run) in scenarios() {
        let dir = Arc::new(tempfile::tempdir().expect("tmp"));
        let clock = Arc::new(ManualClock::new(1_000_000));
        let c = clock.clone();
        let open: Open = Box::new(move |o| {
            let (dir, c) = (dir.clone(), c.clone());
            Box::pin(async move {
                let b: Q = Broker::open(dir.path(), o, c).expect("open");
                b
            })
        });
        println!("scenario {name}");
        run(open, clock).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_queue_state_machine() {
    let pg = PgCluster::single().expect("PostgreSQL for the test");
    for (name, run) in scenarios() {
        let mut o = PgOptions::new("queue", &pg.create_database(name).expect("createdb"));
        o.password = Some(pg.password.clone());
        o.pool_size = 4;
        let clock = Arc::new(ManualClock::new(1_000_000));
        let c = clock.clone();
        let open: Open = Box::new(move |bo| {
            let (o, c) = (o.clone(), c.clone());
            Box::pin(async move {
                let q: Q = PgQueue::connect(o, bo, c).await.expect("connect");
                q
            })
        });
        println!("scenario {name}");
        run(open, clock).await;
    }
}

/// Several fronts over one database: every job is claimed exactly once
/// however many workers race for it (SKIP LOCKED), and a worker waiting on
/// one process is woken by a put through another (LISTEN/NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claims_are_exclusive_across_processes_and_wake_each_other() {
    let pg = PgCluster::single().expect("PostgreSQL for the test");
    let mut o = PgOptions::new("queue", &pg.url());
    o.password = Some(pg.password.clone());
    let clock: Arc<dyn Clock> = Arc::new(queue::SystemClock);
    let a = PgQueue::connect(o.clone(), opts(), clock.clone())
        .await
        .expect("a");
    let b = PgQueue::connect(o, opts(), clock).await.expect("b");
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.reserve(&q(), Some(Duration::from_secs(20)), 0).await })
    };
    while Queue::waiting(b.as_ref(), "q") == 0 {
        assert!(!waiter.is_finished(), "reserve returned without waiting");
        tokio::task::yield_now().await;
    }
    a.put(NewJob::new("q", "cross")).await.expect("put");
    let got = waiter
        .await
        .expect("join")
        .expect("reserve")
        .expect("woken");
    assert_eq!(&got.payload[..], b"cross");

    for i in 0..200 {
        a.put(NewJob::new("q", format!("job {i}")))
            .await
            .expect("put");
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let q2: Q = if w % 2 == 0 { a.clone() } else { b.clone() };
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(j) = q2.reserve(&q(), Some(Duration::ZERO), 0).await.expect("r") {
                q2.complete(j.id, 0, Some(j.attempts), Bytes::new())
                    .await
                    .expect("c");
                mine.push(j.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (200, 200), "each job claimed exactly once");
}

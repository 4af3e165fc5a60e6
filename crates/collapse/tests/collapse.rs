//! Collapsed forwarding, each edge case deterministic: a paused clock and
//! explicit release of the origin fetch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collapse::{CollapseOptions, Collapser, Error};
use tokio::sync::Semaphore;

type C = Collapser<&'static str, String, String>;

/// An origin whose fetches block until released, and count themselves.
/// Release adds permits, so a fetch that starts waiting after the release
/// still goes through (no lost wake-up).
struct Origin {
    fetches: AtomicU64,
    release: Semaphore,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            fetches: AtomicU64::new(0),
            release: Semaphore::new(0),
        }
    }
}

impl Origin {
    fn fetch(
        self: &Arc<Self>,
        answer: Result<String, String>,
    ) -> impl std::future::Future<Output = Result<String, String>> + Send + 'static {
        let me = self.clone();
        me.fetches.fetch_add(1, Ordering::SeqCst);
        async move {
            let _permit = me.release.acquire().await;
            answer
        }
    }
}

async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::task::yield_now().await;
    }
}

fn spawn_get(
    c: &Arc<C>,
    o: &Arc<Origin>,
    answer: Result<&'static str, &'static str>,
) -> tokio::task::JoinHandle<Result<String, Error<String>>> {
    let (c, o) = (c.clone(), o.clone());
    tokio::spawn(async move {
        let a = answer.map(str::to_owned).map_err(str::to_owned);
        c.get("k", || o.fetch(a)).await
    })
}

#[tokio::test(start_paused = true)]
async fn n_concurrent_misses_cost_one_fetch() {
    let c: Arc<C> = Collapser::new(CollapseOptions::default());
    let o = Arc::new(Origin::default());
    let tasks: Vec<_> = (0..100).map(|_| spawn_get(&c, &o, Ok("v"))).collect();
    until(|| c.waiting(&"k") == 99).await;
    o.release.add_permits(1000);
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("value"), "v");
    }
    assert_eq!(o.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(c.metrics.collapsed.load(Ordering::SeqCst), 99);
    let text = prom::render_families(c.metrics.families("strata_proxy"));
    assert!(
        text.contains("strata_proxy_followers_per_leader_bucket{le=\"256\"} 1"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_old_flight_gets_a_new_leader() {
    let c: Arc<C> = Collapser::new(CollapseOptions {
        max_age: Duration::from_millis(100),
        ..Default::default()
    });
    let o = Arc::new(Origin::default());
    let first = spawn_get(&c, &o, Ok("old"));
    until(|| o.fetches.load(Ordering::SeqCst) == 1).await;
    tokio::time::advance(Duration::from_millis(150)).await;
    let second = spawn_get(&c, &o, Ok("new"));
    until(|| o.fetches.load(Ordering::SeqCst) == 2).await;
    o.release.add_permits(1000);
    assert_eq!(first.await.expect("task").expect("v"), "old");
    assert_eq!(second.await.expect("task").expect("v"), "new");
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_waits_too_long_fetches_itself() {
    let c: Arc<C> = Collapser::new(CollapseOptions {
        wait_timeout: Duration::from_millis(100),
        ..Default::default()
    });
    let o = Arc::new(Origin::default());
    let leader = spawn_get(&c, &o, Ok("slow"));
    until(|| o.fetches.load(Ordering::SeqCst) == 1).await;
    let follower = spawn_get(&c, &o, Ok("own"));
    until(|| c.waiting(&"k") == 1).await;
    tokio::time::advance(Duration::from_millis(101)).await;
    until(|| o.fetches.load(Ordering::SeqCst) == 2).await;
    o.release.add_permits(1000);
    assert_eq!(follower.await.expect("task").expect("v"), "own");
    assert_eq!(leader.await.expect("task").expect("v"), "slow");
    assert_eq!(c.metrics.wait_timeouts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_fetch_goes_on_when_the_leader_goes_away() {
    let c: Arc<C> = Collapser::new(CollapseOptions::default());
    let o = Arc::new(Origin::default());
    let leader = spawn_get(&c, &o, Ok("v"));
    until(|| o.fetches.load(Ordering::SeqCst) == 1).await;
    let followers: Vec<_> = (0..5).map(|_| spawn_get(&c, &o, Ok("unused"))).collect();
    until(|| c.waiting(&"k") == 5).await;
    leader.abort();
    let _ = leader.await;
    o.release.add_permits(1000);
    for f in followers {
        assert_eq!(f.await.expect("task").expect("v"), "v");
    }
    assert_eq!(o.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_error_goes_to_waiters_only_and_is_not_cached() {
    let c: Arc<C> = Collapser::new(CollapseOptions::default());
    let o = Arc::new(Origin::default());
    let tasks: Vec<_> = (0..10)
        .map(|_| spawn_get(&c, &o, Err("cut midway")))
        .collect();
    until(|| c.waiting(&"k") == 9).await;
    o.release.add_permits(1000);
    for t in tasks {
        match t.await.expect("task") {
            Err(Error::Origin(e)) => assert_eq!(e, "cut midway"),
            other => panic!("expected the shared error, got {other:?}"),
        }
    }
    // The next request starts a new fetch.
    let again = spawn_get(&c, &o, Ok("fresh"));
    until(|| o.fetches.load(Ordering::SeqCst) == 2).await;
    o.release.add_permits(1000);
    assert_eq!(again.await.expect("task").expect("v"), "fresh");
}

#[tokio::test(start_paused = true)]
async fn waiters_are_bounded_and_the_rest_fetch_directly() {
    let c: Arc<C> = Collapser::new(CollapseOptions {
        max_waiters: 2,
        ..Default::default()
    });
    let o = Arc::new(Origin::default());
    let tasks: Vec<_> = (0..3).map(|_| spawn_get(&c, &o, Ok("v"))).collect();
    until(|| c.waiting(&"k") == 2).await;
    let direct = spawn_get(&c, &o, Ok("direct"));
    until(|| o.fetches.load(Ordering::SeqCst) == 2).await;
    o.release.add_permits(1000);
    assert_eq!(direct.await.expect("task").expect("v"), "direct");
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("v"), "v");
    }
    assert_eq!(c.metrics.overflow.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_fetch_aborts_its_followers_but_not_later_requests() {
    let c: Arc<C> = Collapser::new(CollapseOptions::default());
    let release = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let (r2, s2) = (release.clone(), started.clone());
    let c2 = c.clone();
    let leader = tokio::spawn(async move {
        c2.get("k", move || {
            s2.fetch_add(1, Ordering::SeqCst);
            async move {
                let _p = r2.acquire().await;
                panic!("origin client bug");
            }
        })
        .await
    });
    until(|| started.load(Ordering::SeqCst) == 1).await;
    let c3 = c.clone();
    let follower = tokio::spawn(async move {
        c3.get("k", || async { Ok::<_, String>("unused".to_string()) })
            .await
    });
    until(|| c.waiting(&"k") == 1).await;
    release.add_permits(1);
    assert!(matches!(follower.await.expect("task"), Err(Error::Aborted)));
    assert!(matches!(leader.await.expect("task"), Err(Error::Aborted)));
    let v = c
        .get("k", || async { Ok::<_, String>("next".to_string()) })
        .await;
    assert_eq!(v.expect("value"), "next");
}

//! The built-in broker's log under injected disk faults
//! (`storage::Faults`): a failed fsync refuses exactly the changes it
//! carried and they do not come back after a restart; power lost at every
//! write point of a workload loses no acknowledged put or completion.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use queue::{Broker, BrokerOptions, ManualClock, NewJob, State};
use storage::Faults;

fn opts(faults: Option<Arc<Faults>>) -> BrokerOptions {
    BrokerOptions {
        // Ticks are driven by hand.
        tick: Duration::from_secs(3600),
        faults,
        ..BrokerOptions::default()
    }
}

fn q() -> Vec<String> {
    vec!["q".to_owned()]
}

fn open(dir: &std::path::Path, faults: Option<Arc<Faults>>) -> queue::Result<Arc<Broker>> {
    Broker::open(dir, opts(faults), Arc::new(ManualClock::new(1_000_000)))
}

#[tokio::test]
async fn a_failed_fsync_refuses_its_put_and_the_put_never_comes_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let plan = Faults::none();
    let b = open(dir.path(), Some(plan.clone())).expect("open");
    let (a, _) = b.put(NewJob::new("q", "a")).await.expect("put a");
    let next = plan.syncs() + 1;
    drop(b);

    let dir = tempfile::tempdir().expect("tmp");
    let plan = Faults::fail_sync(next);
    let b = open(dir.path(), Some(plan.clone())).expect("open");
    let (a2, _) = b.put(NewJob::new("q", "a")).await.expect("put a");
    assert_eq!(a2, a);
    // A larger put whose fsync fails: refused, and not visible.
    let err = b
        .put(NewJob::new("q", vec![b'x'; 5000]))
        .await
        .expect_err("fsync failed");
    assert!(err.to_string().contains("Input/output"), "{err}");
    assert!(b.status(a + 1).is_none());
    // The next, shorter put lands where the refused one was, and the
    // broker goes on.
    let (c, _) = b.put(NewJob::new("q", "c")).await.expect("put c");
    drop(b);
    let b = open(dir.path(), None).expect("reopen");
    let mut payloads = Vec::new();
    while let Some(j) = b
        .reserve(&q(), Some(Duration::ZERO), 0)
        .await
        .expect("reserve")
    {
        payloads.push(j.payload);
    }
    assert_eq!(payloads, [Bytes::from("a"), Bytes::from("c")]);
    assert!(b.status(c).is_some());
}

/// What the workload was told, for the check after recovery.
#[derive(Default)]
struct Told {
    /// Puts acknowledged (id, payload).
    put: Vec<(u64, Bytes)>,
    /// Completions acknowledged.
    completed: Vec<u64>,
    /// Jobs a delete was issued for (they may come back).
    deleted: Vec<u64>,
}

/// Puts, reserves, completes and deletes until the first failure (the
/// machine is gone after it).
async fn run(dir: &std::path::Path, plan: Arc<Faults>) -> Told {
    let mut told = Told::default();
    let Ok(b) = open(dir, Some(plan)) else {
        return told;
    };
    for round in 0..4u64 {
        for i in 0..3u64 {
            let payload = Bytes::from(format!("job {round}/{i}"));
            match b.put(NewJob::new("q", payload.clone())).await {
                Ok((id, _)) => told.put.push((id, payload)),
                Err(_) => return told,
            }
        }
        let Ok(Some(j)) = b.reserve(&q(), Some(Duration::ZERO), 0).await else {
            return told;
        };
        if b.complete(j.id, 0, Some(j.attempts), Bytes::from("done"))
            .await
            .is_err()
        {
            return told;
        }
        told.completed.push(j.id);
        let Ok(Some(j)) = b.reserve(&q(), Some(Duration::ZERO), 0).await else {
            return told;
        };
        told.deleted.push(j.id);
        if b.delete(j.id, 0, Some(j.attempts)).await.is_err() {
            return told;
        }
    }
    told
}

#[tokio::test]
async fn power_lost_at_every_write_loses_no_acknowledged_put_or_completion() {
    let dry = tempfile::tempdir().expect("tmp");
    let plan = Faults::none();
    let told = run(dry.path(), plan.clone()).await;
    assert_eq!((told.put.len(), told.completed.len()), (12, 4));
    // Lazy records (attempt counts, deletes) may ride a batch or not, so
    // the count is about this many.
    let total = plan.writes();
    let mut crashed = 0;
    for n in 1..=total + 2 {
        let dir = tempfile::tempdir().expect("tmp");
        let plan = Faults::crash_after_write(n);
        let told = run(dir.path(), plan.clone()).await;
        crashed += u64::from(plan.crashed());
        let b =
            open(dir.path(), None).unwrap_or_else(|e| panic!("reopen after crash point {n}: {e}"));
        for (id, payload) in &told.put {
            if told.deleted.contains(id) {
                continue;
            }
            let j = b
                .get(*id)
                .unwrap_or_else(|| panic!("crash point {n}: acknowledged put {id} lost"));
            assert_eq!(&j.payload, payload, "crash point {n}, job {id}");
            if told.completed.contains(id) {
                assert_eq!(j.state, State::Succeeded, "crash point {n}, job {id}");
            }
        }
        drop(b);
        // A second recovery finds the same jobs.
        let again = open(dir.path(), None).expect("second reopen");
        for (id, _) in told.put.iter().filter(|(id, _)| !told.deleted.contains(id)) {
            assert!(again.get(*id).is_some(), "crash point {n}, job {id}");
        }
    }
    assert!(
        crashed * 2 >= total,
        "crash points that hit: {crashed} of {total}"
    );
}

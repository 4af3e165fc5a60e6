//! The store writer under injected disk faults (`storage::Faults`): a
//! failed fsync, a short write, and a power loss at every write point of a
//! workload, each followed by recovery from the files as they were left.
//! Nothing acknowledged may be lost; nothing unacknowledged may come back
//! damaged.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use storage::Faults;
use store::{Error, Store, StoreOptions};

fn meta(i: u64) -> Bytes {
    Bytes::from(format!("key/{i}"))
}

fn blob(i: u64) -> Bytes {
    let len = 100 + (i as usize * 997) % 3000;
    (0..len)
        .map(|j| (i as usize * 31 + j * 7) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn opts(faults: Option<Arc<Faults>>) -> StoreOptions {
    StoreOptions {
        // Index checkpoints between the appends: their writes are crash
        // points too.
        checkpoint_every: 3,
        faults,
        ..StoreOptions::default()
    }
}

#[tokio::test]
async fn a_failed_fsync_fails_its_writes_and_the_store_goes_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let plan = Faults::fail_sync(3);
    let (s, _) = Store::open(dir.path(), opts(Some(plan.clone()))).expect("open");
    s.put(1, meta(1), blob(1)).await.expect("put 1");
    s.put(2, meta(2), blob(2)).await.expect("put 2");
    assert_eq!(plan.syncs(), 2, "one fsync per acknowledged batch");
    // The third fsync fails: the write is refused, and not readable.
    let err = s.put(3, meta(3), blob(3)).await.expect_err("fsync failed");
    assert!(err.to_string().contains("Input/output"), "{err}");
    assert!(matches!(s.get(3), Err(Error::NotFound(3))));
    // The next batch starts at a needle boundary and is kept.
    s.put(4, meta(4), blob(4)).await.expect("put 4");
    for i in [1, 2, 4] {
        assert_eq!(s.get(i).expect("get"), blob(i));
    }
    drop(s);
    let (s, report) = Store::open(dir.path(), opts(None)).expect("reopen");
    assert_eq!(
        report.truncated_bytes, 0,
        "the failed batch was cut at once"
    );
    for i in [1, 2, 4] {
        assert_eq!(s.get(i).expect("get after restart"), blob(i));
    }
    assert!(matches!(s.get(3), Err(Error::NotFound(3))));
}

#[tokio::test]
async fn a_short_write_fails_its_batch_and_leaves_no_torn_needle() {
    // Writes up to and including the first append, counted without a fault.
    let dry = tempfile::tempdir().expect("tmp");
    let plan = Faults::none();
    let (s, _) = Store::open(dry.path(), opts(Some(plan.clone()))).expect("open");
    s.put(1, meta(1), blob(1)).await.expect("put 1");
    let second_append = plan.writes() + 1;
    drop(s);

    let dir = tempfile::tempdir().expect("tmp");
    let plan = Faults::short_write(second_append);
    let (s, _) = Store::open(dir.path(), opts(Some(plan))).expect("open");
    s.put(1, meta(1), blob(1)).await.expect("put 1");
    // Half of blob 2's needle reaches the file, then ENOSPC.
    let err = s.put(2, meta(2), blob(2)).await.expect_err("short write");
    assert!(err.to_string().contains("No space"), "{err}");
    assert!(matches!(s.get(2), Err(Error::NotFound(2))));
    // The files as a crash right now would leave them: the torn half was
    // already cut.
    let now = tempfile::tempdir().expect("tmp");
    for f in std::fs::read_dir(dir.path()).expect("ls") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, now.path().join(f.file_name().expect("name"))).expect("copy");
    }
    let (copy, report) = Store::open(now.path(), opts(None)).expect("open copy");
    assert_eq!((report.truncated_bytes, copy.len()), (0, 1));
    drop(copy);
    for i in 3..6 {
        s.put(i, meta(i), blob(i)).await.expect("later puts");
    }
    drop(s);
    let (s, report) = Store::open(dir.path(), opts(None)).expect("reopen");
    assert_eq!(report.truncated_bytes, 0, "the torn half was cut at once");
    assert_eq!(s.len(), 4);
    for i in [1, 3, 4, 5] {
        assert_eq!(s.get(i).expect("get"), blob(i));
    }
}

/// One step of the crash workload.
#[derive(Clone, Copy)]
enum Op {
    Put(u64),
    Delete(u64),
}

const WORKLOAD: [Op; 12] = [
    Op::Put(1),
    Op::Put(2),
    Op::Put(3),
    Op::Delete(2),
    Op::Put(4),
    Op::Put(5),
    Op::Put(2),
    Op::Put(6),
    Op::Delete(1),
    Op::Put(7),
    Op::Put(8),
    Op::Put(9),
];

/// Runs the workload under `plan` until the first failure; returns what
/// the acknowledgements promised per blob (`true`: present, `false`:
/// gone) and the blob whose write was in flight when it failed.
async fn run(dir: &std::path::Path, plan: Arc<Faults>) -> (HashMap<u64, bool>, Option<u64>) {
    let mut promised = HashMap::new();
    let Ok((s, _)) = Store::open(dir, opts(Some(plan))) else {
        // Power lost while the store was being created: nothing promised.
        return (promised, None);
    };
    for op in WORKLOAD {
        let (i, done) = match op {
            Op::Put(i) => (i, s.put(i, meta(i), blob(i)).await.map(|_| true)),
            Op::Delete(i) => (i, s.delete(i, meta(i)).await.map(|_| false)),
        };
        match done {
            Ok(present) => {
                promised.insert(i, present);
            }
            // The machine is gone: nothing after this point happens.
            Err(_) => return (promised, Some(i)),
        }
    }
    (promised, None)
}

#[tokio::test]
async fn power_lost_at_every_write_loses_nothing_acknowledged() {
    // The workload's writes, counted once without a fault.
    let dry = tempfile::tempdir().expect("tmp");
    let plan = Faults::none();
    let (promised, _) = run(dry.path(), plan.clone()).await;
    assert_eq!(promised.len(), 9);
    let total = plan.writes();
    assert!(total >= 14, "appends and checkpoints: {total}");
    let mut torn_cut = 0;
    for n in 1..=total + 1 {
        let dir = tempfile::tempdir().expect("tmp");
        let plan = Faults::crash_after_write(n);
        let (promised, in_flight) = run(dir.path(), plan.clone()).await;
        assert_eq!(plan.crashed(), n <= total, "crash point {n}");
        // Recovery twice: the first cuts what the crash tore, the second
        // finds nothing more to cut.
        for round in 0..2 {
            let (s, report) = Store::open(dir.path(), opts(None))
                .unwrap_or_else(|e| panic!("reopen after crash point {n}: {e}"));
            if round == 0 && report.truncated_bytes > 0 {
                torn_cut += 1;
            }
            if round == 1 {
                assert_eq!(report.truncated_bytes, 0, "crash point {n}");
            }
            for (&i, &present) in &promised {
                if in_flight == Some(i) {
                    continue;
                }
                match (present, s.get(i)) {
                    (true, Ok(b)) => assert_eq!(b, blob(i), "crash point {n}, blob {i}"),
                    (false, Err(Error::NotFound(_))) => {}
                    (p, g) => panic!("crash point {n}, blob {i}: promised {p}, got {g:?}"),
                }
            }
            // The write in flight either happened whole or not at all.
            if let Some(i) = in_flight {
                match s.get(i) {
                    Ok(b) => assert_eq!(b, blob(i), "crash point {n}, in-flight blob {i}"),
                    Err(Error::NotFound(_)) => {}
                    Err(e) => panic!("crash point {n}, in-flight blob {i}: {e}"),
                }
            }
        }
    }
    // Most crash points tear a needle append that recovery must cut.
    assert!(
        torn_cut >= 9,
        "torn volume tails cut: {torn_cut} of {total}"
    );
}

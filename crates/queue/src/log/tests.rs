use super::*;

fn removed_ids(dir: &Path) -> Vec<u64> {
    replay(dir)
        .expect("replay")
        .0
        .into_iter()
        .map(|r| match r {
            Record::Remove(id) => id,
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

#[test]
fn a_batch_that_fails_to_write_is_dropped_and_the_next_lands_whole() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut w = Writer::open(dir.path(), 1, None).expect("open");
    let mut buf = Vec::new();
    Writer::frame(&mut buf, &encode_remove(1));
    w.write_out(&mut buf)
        .and_then(|_| w.sync())
        .expect("batch 1");
    // A write through a read-only handle of the segment fails (EBADF),
    // as a full or failing disk would.
    let ro = File::open(segment_path(dir.path(), 1)).expect("read-only");
    let writable = std::mem::replace(&mut w.file, Arc::new(ro));
    Writer::frame(&mut buf, &encode_remove(2));
    assert!(w.write_out(&mut buf).is_err(), "batch 2 fails");
    assert!(
        buf.is_empty(),
        "a failed batch is dropped, not kept for later"
    );
    w.file = writable;
    Writer::frame(&mut buf, &encode_remove(3));
    w.write_out(&mut buf)
        .and_then(|_| w.sync())
        .expect("batch 3");
    assert_eq!(removed_ids(dir.path()), vec![1, 3]);
}

#[test]
fn a_record_nobody_waits_for_is_written_at_once() {
    // Written without any later waited record: a process crash after
    // the answer finds it in the file (the page cache survives it).
    let dir = tempfile::tempdir().expect("tmp");
    let log = Log::start(dir.path(), 0, None).expect("start");
    log.append_lazy(encode_remove(7));
    let deadline = Instant::now() + Duration::from_secs(10);
    while removed_ids(dir.path()) != [7] {
        assert!(Instant::now() < deadline, "the record was never written");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Dropping the log closes it: every record it was sent is in the file
/// before the drop returns, so a replay right after (a recovery, or the
/// next open in the same process) sees all of them and nothing is still
/// being appended behind it.
#[test]
fn a_dropped_log_has_written_everything_it_was_sent() {
    for round in 0..20u64 {
        let dir = tempfile::tempdir().expect("tmp");
        let log = Log::start(dir.path(), 0, None).expect("start");
        for id in 1..=50 {
            log.append_lazy(encode_remove(round * 100 + id));
        }
        drop(log);
        let want: Vec<u64> = (1..=50).map(|id| round * 100 + id).collect();
        assert_eq!(removed_ids(dir.path()), want, "round {round}");
    }
}

//! Store engine: durability, recovery, checkpoints, roll-over, compaction.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use store::{Store, StoreOptions};

/// Metadata of varied length, so that data never starts at a fixed offset.
fn meta(i: u64) -> Bytes {
    Bytes::from(format!("key/{}", "m".repeat((i % 23) as usize)))
}

fn blob(i: u64, len: usize) -> Bytes {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn small_volumes() -> StoreOptions {
    StoreOptions {
        volume_bytes: 1 << 20,
        compact_garbage_ratio: 0.3,
        checkpoint_every: 16,
        max_bytes: 0,
        faults: None,
    }
}

#[tokio::test]
async fn a_full_store_refuses_new_blobs_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = StoreOptions {
        max_bytes: 4096,
        ..StoreOptions::default()
    };
    let (s, _) = Store::open(dir.path(), opts.clone()).expect("open");
    let mut stored = Vec::new();
    let mut refused = None;
    for i in 1..100 {
        match s.put(i, meta(i), blob(i, 500)).await {
            Ok(()) => stored.push(i),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the store filled up");
    assert!(matches!(e, store::Error::Full { limit: 4096, .. }), "{e}");
    assert!(!stored.is_empty());
    // Everything taken before is served; deletes still work (and a
    // tombstone is accepted even when full).
    for &i in &stored {
        assert_eq!(s.get(i).expect("get"), blob(i, 500));
    }
    s.delete(stored[0], meta(0))
        .await
        .expect("delete when full");
    drop(s);
    let (s, _) = Store::open(dir.path(), opts).expect("reopen");
    assert_eq!(s.len(), stored.len() - 1);
}

#[tokio::test]
async fn put_get_delete_and_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
    for i in 0..50 {
        s.put(i, meta(i), blob(i, 100 + i as usize * 37))
            .await
            .expect("put");
    }
    assert_eq!(s.get(7).expect("get"), blob(7, 100 + 7 * 37));
    assert_eq!(
        s.get_range(7, 10, 20).expect("range"),
        blob(7, 359).slice(10..20)
    );
    assert!(matches!(
        s.get_range(7, 10, 10_000),
        Err(store::Error::BadRange { .. })
    ));
    s.delete(3, meta(0)).await.expect("delete");
    assert!(matches!(s.get(3), Err(store::Error::NotFound(3))));
    assert!(matches!(
        s.delete(3, meta(0)).await,
        Err(store::Error::NotFound(3))
    ));
    assert!(matches!(
        s.delete(999, meta(0)).await,
        Err(store::Error::NotFound(999))
    ));
    s.checkpoint().await.expect("checkpoint");
    drop(s);

    let (s, report) = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
    assert_eq!(
        report.scanned, 0,
        "a clean checkpoint leaves nothing to rescan"
    );
    assert_eq!(report.from_index, 51);
    assert_eq!(s.len(), 49);
    for i in (0..50).filter(|i| *i != 3) {
        assert_eq!(
            s.get(i).expect("get"),
            blob(i, 100 + i as usize * 37),
            "blob {i}"
        );
    }
    assert!(s.get(3).is_err());
}

#[tokio::test]
async fn restart_replays_only_the_tail_after_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = StoreOptions {
        checkpoint_every: 10,
        ..StoreOptions::default()
    };
    let (s, _) = Store::open(dir.path(), opts.clone()).expect("open");
    for i in 0..25 {
        s.put(i, meta(i), blob(i, 64)).await.expect("put");
    }
    // Simulate a crash: copy the files as they are now, without a clean
    // checkpoint (the copy is what a kill -9 would leave on disk).
    let crash = tempfile::tempdir().expect("tmp");
    for f in ["vol-000001.dat", "vol-000001.idx"] {
        std::fs::copy(dir.path().join(f), crash.path().join(f)).expect("copy");
    }
    drop(s);
    let (s, report) = Store::open(crash.path(), opts).expect("reopen");
    assert_eq!(report.from_index, 20, "two checkpoints of 10");
    assert_eq!(report.scanned, 5, "only the tail is replayed");
    for i in 0..25 {
        assert_eq!(s.get(i).expect("get"), blob(i, 64));
    }
}

#[tokio::test]
async fn torn_tail_is_cut_and_acknowledged_blobs_survive() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
    for i in 0..20 {
        s.put(i, meta(i), blob(i, 1000)).await.expect("put");
    }
    drop(s);
    let path = dir.path().join("vol-000001.dat");
    let good_len = std::fs::metadata(&path).expect("meta").len();
    // A half-written needle: a real header promising 5000 bytes, then 100.
    let mut torn = bytes::BytesMut::new();
    store::needle::encode_into(
        &mut torn,
        &store::needle::Header {
            cookie: 1,
            id: 77,
            flags: 0,
            meta: 0,
            size: 5000,
        },
        &[],
        &blob(77, 5000),
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.write_all_at(&torn[..124], good_len).expect("write torn");
    drop(f);

    let (s, report) = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
    assert_eq!(report.truncated_bytes, 124);
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), good_len);
    assert!(s.get(77).is_err(), "a torn blob is never served");
    for i in 0..20 {
        assert_eq!(s.get(i).expect("get"), blob(i, 1000));
    }
    // And the store keeps working after the cut.
    s.put(78, meta(78), blob(78, 10))
        .await
        .expect("put after cut");
    assert_eq!(s.get(78).expect("get"), blob(78, 10));
}

#[tokio::test]
async fn corrupt_needle_in_the_tail_is_cut_too() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
    for i in 0..3 {
        s.put(i, meta(i), blob(i, 100)).await.expect("put");
    }
    drop(s);
    std::fs::remove_file(dir.path().join("vol-000001.idx")).expect("rm idx");
    // Flip one data byte of the last needle: its CRC no longer matches.
    let path = dir.path().join("vol-000001.dat");
    let len = std::fs::metadata(&path).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let at = len - 60;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    f.write_all_at(&[b[0] ^ 0xFF], at).expect("flip");
    drop(f);
    let (s, report) = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
    assert!(report.truncated_bytes > 0);
    assert_eq!(s.len(), 2);
    assert!(s.get(2).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let s = s.clone();
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            s.put(i, meta(i), blob(i, 4096)).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("put");
    }
    assert_eq!(s.metrics.writes.get(), 64);
    assert!(
        s.metrics.fsync_batches.get() < 64,
        "batches: {}",
        s.metrics.fsync_batches.get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollover_and_online_compaction() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = Store::open(dir.path(), small_volumes()).expect("open");
    let n = 200u64;
    for i in 0..n {
        s.put(i, meta(i), blob(i, 20_000)).await.expect("put");
    }
    let vols = s.volume_stats();
    assert!(vols.len() >= 4, "rolled over into {} volumes", vols.len());
    for &v in vols.keys() {
        assert!(
            std::fs::metadata(store::dat_path(dir.path(), v))
                .expect("meta")
                .len()
                <= 1 << 20
        );
    }

    // Readers loop while we delete two thirds and compact.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let s = s.clone();
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in (0..n).filter(|i| i % 3 == 0) {
                    assert_eq!(
                        s.get(i).expect("live blob readable during compaction"),
                        blob(i, 20_000)
                    );
                    reads += 1;
                }
            }
            reads
        })
    };
    for i in (0..n).filter(|i| i % 3 != 0) {
        s.delete(i, meta(0)).await.expect("delete");
    }
    let reports = {
        let s = s.clone();
        tokio::task::spawn_blocking(move || s.compact_due())
            .await
            .expect("join")
            .expect("compact")
    };
    // The background compactor may have done some of them already.
    let compacted = s.metrics.compactions.get();
    assert!(
        compacted >= 3,
        "compacted {compacted} volumes ({} now)",
        reports.len()
    );
    // Writes go on after compaction too.
    s.put(10_000, meta(10_000), blob(10_000, 5))
        .await
        .expect("put");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.await.expect("reader") > 0);

    for (v, st) in s.volume_stats() {
        if v != *s.volume_stats().keys().last().expect("active") {
            assert!(st.garbage_ratio() <= 0.3, "volume {v} still {st:?}");
        }
    }
    drop(s);
    let (s, _) = Store::open(dir.path(), small_volumes()).expect("reopen");
    for i in 0..n {
        if i % 3 == 0 {
            assert_eq!(s.get(i).expect("kept"), blob(i, 20_000));
        } else {
            assert!(s.get(i).is_err(), "deleted blob {i} came back");
        }
    }
    assert_eq!(s.get(10_000).expect("new"), blob(10_000, 5));
}

#[tokio::test]
async fn oversized_blob_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let big = Bytes::from(vec![0u8; (store::needle::MAX_DATA + 1) as usize]);
    assert!(matches!(
        s.put(1, meta(1), big).await,
        Err(store::Error::TooLarge(_))
    ));
    assert!(s.is_empty());
}

/// The index file names needles the volume lost (cut off from outside):
/// restart trusts the index only up to the volume's end, and a second
/// restart still finds every needle the volume holds.
#[tokio::test]
async fn an_index_that_outruns_its_volume_is_trimmed_not_trusted() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
    for i in 0..10 {
        s.put(i, meta(i), blob(i, 100)).await.expect("put");
    }
    s.checkpoint().await.expect("checkpoint");
    drop(s);
    let path = store::dat_path(dir.path(), 1);
    let len = std::fs::metadata(&path).expect("meta").len();
    let last3: u64 = (7..10)
        .map(|i| store::needle::needle_len(meta(i).len() as u16, 100))
        .sum();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(len - last3)
        .expect("cut");
    for round in 0..2 {
        let (s, _) = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
        assert_eq!(s.len() as u64, 7 + round, "round {round}");
        for i in 0..7 {
            assert_eq!(s.get(i).expect("get"), blob(i, 100), "round {round}");
        }
        s.put(100 + round, meta(100 + round), blob(100 + round, 10))
            .await
            .expect("put");
        s.checkpoint().await.expect("checkpoint");
    }
    let (s, _) = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
    assert_eq!(s.len(), 9);
}

/// Flips `mask` into the first byte of `run` where it sits in the volume
/// file `path`: in place, as rot would (no truncation under the store's
/// mapping).
fn flip_byte(path: &std::path::Path, run: &[u8], mask: u8) {
    let bytes = std::fs::read(path).expect("read");
    let at = bytes
        .windows(run.len())
        .position(|w| w == run)
        .expect("the bytes are on disk");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    f.write_at(&[bytes[at] ^ mask], at as u64).expect("flip");
}

#[tokio::test]
async fn scrub_finds_a_flipped_byte_and_a_rewrite_heals_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
    for i in 1..=20 {
        s.put(i, meta(i), blob(i, 3000)).await.expect("put");
    }
    let clean = s.scrub();
    assert_eq!((clean.checked, clean.corrupt.len()), (20, 0));
    assert_eq!(clean.bytes, 20 * 3000);
    // Flip one byte inside blob 7's data on disk.
    flip_byte(
        &store::dat_path(dir.path(), 1),
        &blob(7, 3000)[1000..1064],
        0x40,
    );
    let bad = s.scrub();
    assert_eq!(bad.corrupt, vec![7]);
    assert!(s.get(7).is_err(), "a corrupt needle is never served");
    // A good copy written again (what a repair does) replaces it.
    s.put(7, meta(7), blob(7, 3000)).await.expect("rewrite");
    assert_eq!(s.scrub().corrupt, Vec::<u64>::new());
    assert_eq!(s.get(7).expect("get"), blob(7, 3000));
}

#[tokio::test]
async fn a_verified_extent_names_the_blobs_bytes_and_refuses_a_flipped_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
    for i in 1..=5 {
        s.put(i, meta(i), blob(i, 5000)).await.expect("put");
    }
    let path = store::dat_path(dir.path(), 1);
    let file = std::fs::File::open(&path).expect("open");
    for i in 1..=5 {
        let x = s.verified_extent(i).expect("extent");
        let mut at = vec![0; x.len as usize];
        file.read_exact_at(&mut at, x.offset).expect("read");
        assert_eq!(at, blob(i, 5000), "blob {i}");
    }
    flip_byte(&path, &blob(3, 5000)[4000..4064], 0x02);
    assert!(matches!(
        s.verified_extent(3),
        Err(store::Error::Corrupt { id: 3, .. })
    ));
    // The check covers the whole needle; an unverified extent does not.
    assert!(s.extent(3, 0, 5000).is_ok());
    assert!(s.verified_extent(4).is_ok());
}

#[tokio::test]
async fn a_dropped_store_has_finished_its_last_checkpoint() {
    // Found by the volume fuzz target: the writer and compactor threads
    // outlived the store (LeakSanitizer saw their thread-locals), so a
    // reopen right after a drop could race the writer's last index
    // checkpoint. Drop now joins them.
    let dir = tempfile::tempdir().expect("tmp");
    let opts = StoreOptions {
        checkpoint_every: 1000,
        ..StoreOptions::default()
    };
    for round in 0..20u64 {
        let (s, _) = Store::open(dir.path(), opts.clone()).expect("open");
        s.put(round + 1, meta(round + 1), blob(round, 100))
            .await
            .expect("put");
        drop(s);
        // Everything is in the index file: nothing left to scan.
        let (s, report) = Store::open(dir.path(), opts.clone()).expect("reopen");
        assert_eq!(report.scanned, 0, "round {round}: {report:?}");
        assert_eq!(report.from_index, round + 1);
        assert_eq!(s.len() as u64, round + 1);
    }
}

/// Volumes of format 1 (written by the release before needles carried
/// metadata: `tests/fixtures/v1`, blobs 1..=5 with blob 3 deleted) are
/// read as they are, and compaction rewrites them as format 2.
#[tokio::test]
async fn format_1_volumes_are_read_and_compacted_into_format_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    for f in ["vol-000001.dat", "vol-000001.idx"] {
        std::fs::copy(fixture.join(f), dir.path().join(f)).expect("copy fixture");
    }
    let v1_data = |id: u64| -> Vec<u8> { (0..id * 100).map(|i| (i * id) as u8).collect() };
    let opts = StoreOptions {
        compact_garbage_ratio: 0.0,
        ..StoreOptions::default()
    };
    let (s, _) = Store::open(dir.path(), opts.clone()).expect("open a format 1 volume");
    for id in [1, 2, 4, 5] {
        assert_eq!(s.get(id).expect("read"), v1_data(id), "blob {id}");
    }
    assert!(matches!(s.get(3), Err(store::Error::NotFound(3))));
    let heads = s.heads(1, 0, None, 100).expect("heads").heads;
    assert!(
        heads.iter().all(|h| h.meta.is_empty()),
        "format 1 carries no metadata"
    );
    // New writes go to a new volume of format 2; the old one is sealed,
    // holds garbage (blob 3), and is rewritten.
    s.put(10, meta(10), blob(10, 50)).await.expect("put");
    let superblock = |v: u16| std::fs::read(store::dat_path(dir.path(), v)).expect("read")[8];
    assert_eq!(superblock(1), 1);
    drop(s);
    let (s, _) = Store::open(
        dir.path(),
        StoreOptions {
            volume_bytes: 1,
            ..opts.clone()
        },
    )
    .expect("reopen");
    s.put(11, meta(11), blob(11, 50)).await.expect("put");
    s.compact_volume(1).expect("compact");
    assert_eq!(superblock(1), 2, "rewritten as format 2");
    for id in [1, 2, 4, 5] {
        assert_eq!(s.get(id).expect("read after compaction"), v1_data(id));
    }
    drop(s);
    let (s, _) = Store::open(dir.path(), opts).expect("reopen after compaction");
    assert_eq!(s.get(5).expect("read"), v1_data(5));
    assert_eq!(s.get(10).expect("read"), blob(10, 50));
}

/// The heads of a volume name every needle with its metadata, say which
/// copies are live, carry a tombstone's metadata, and a listing begun
/// before a compaction is refused after it.
#[tokio::test]
async fn heads_report_metadata_liveness_and_tombstones() {
    let dir = tempfile::tempdir().expect("tmp");
    let (s, _) = Store::open(dir.path(), StoreOptions::default()).expect("open");
    for i in 1..=20 {
        s.put(i, meta(i), blob(i, 10 + i as usize))
            .await
            .expect("put");
    }
    s.delete(4, Bytes::from_static(b"deleted key/4"))
        .await
        .expect("delete");
    s.put(7, meta(70), blob(70, 5))
        .await
        .expect("overwrite of an id");
    let mut all = Vec::new();
    let mut from = 0;
    let generation = s.volumes()[0].1;
    loop {
        let page = s.heads(1, from, Some(generation), 6).expect("page");
        assert!(page.heads.len() <= 6);
        all.extend(page.heads);
        match page.next {
            Some(n) => from = n,
            None => break,
        }
    }
    assert_eq!(all.len(), 22);
    let wire = store::heads::decode(store::heads::encode(&all)).expect("wire form");
    assert_eq!(wire, all);
    for h in &all[..20] {
        assert_eq!(h.meta, meta(h.id));
        assert_eq!(h.live, h.id != 4 && h.id != 7, "blob {}", h.id);
    }
    assert!(all[20].tombstone && all[20].id == 4 && &all[20].meta[..] == b"deleted key/4");
    assert!(all[21].live && all[21].id == 7 && all[21].meta == meta(70));
    assert!(matches!(
        s.heads(1, 0, Some(generation + 1), 10),
        Err(store::Error::Moved { volume: 1 })
    ));
    let big = Bytes::from(vec![1u8; store::needle::MAX_META + 1]);
    assert!(matches!(
        s.put(99, big, blob(99, 1)).await,
        Err(store::Error::MetaTooLarge(_))
    ));
}

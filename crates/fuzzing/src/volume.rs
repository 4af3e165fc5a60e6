//! Crash recovery of a store directory after arbitrary damage.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use store::{Store, StoreOptions};

use crate::Input;

/// Writes blobs and deletes through a real [`Store`] (small volumes, so it
/// rolls over; frequent index checkpoints), copies its files as a crash
/// would leave them, damages one of the copies — truncation, flipped bytes or appended garbage, chosen by the
/// input — and opens it again. Opening either fails with an error or
/// succeeds; after success no read returns bytes that were never written
/// under that id, and when only index files (checkpoints) were damaged,
/// every blob reads back as last written.
pub fn volume(data: &[u8]) {
    let mut input = Input::new(data);
    let (dir, crash) = (scratch_dir(), scratch_dir());
    let opts = StoreOptions {
        volume_bytes: 2048,
        // Never: a compaction running in the background would race the copy.
        compact_garbage_ratio: 2.0,
        max_bytes: 0,
        checkpoint_every: 1 + u64::from(input.byte() % 4),
        ..StoreOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // Every value ever written per id, and the last state.
    let mut history: HashMap<u64, Vec<Bytes>> = HashMap::new();
    let mut last: HashMap<u64, Option<Bytes>> = HashMap::new();
    {
        let (st, _) = Store::open(dir.path(), opts.clone()).expect("open empty store");
        let ops = 1 + input.byte() % 24;
        for _ in 0..ops {
            let id = 1 + u64::from(input.byte() % 12);
            if input.byte() % 5 == 0 {
                let why = Bytes::copy_from_slice(input.bytes(40));
                let gone = rt.block_on(st.delete(id, why)).is_ok();
                assert_eq!(gone, matches!(last.get(&id), Some(Some(_))));
                last.insert(id, None);
            } else {
                // Metadata of any length, so data starts anywhere.
                let meta = Bytes::copy_from_slice(input.bytes(40));
                let v = Bytes::copy_from_slice(input.bytes(600));
                rt.block_on(st.put(id, meta, v.clone())).expect("put");
                history.entry(id).or_default().push(v.clone());
                last.insert(id, Some(v));
            }
        }
        // The files as a crash would leave them, taken while the store is
        // still open: dropping it would write a last index checkpoint.
        for e in std::fs::read_dir(dir.path()).expect("list store") {
            let p = e.expect("entry").path();
            std::fs::copy(&p, crash.path().join(p.file_name().expect("name"))).expect("copy");
        }
    }
    let hit_dat = damage(crash.path(), &mut input);
    let Ok((st, _)) = Store::open(crash.path(), opts) else {
        // Refusing to open damaged files is allowed; guessing is not.
        return;
    };
    for (id, want) in &last {
        match st.get(*id) {
            Ok(got) => {
                let ever = history.get(id).is_some_and(|h| h.contains(&got));
                assert!(ever, "blob {id}: read {} bytes never written", got.len());
                if !hit_dat {
                    assert_eq!(Some(&got), want.as_ref(), "blob {id} after index damage");
                }
            }
            Err(e) => assert!(
                hit_dat || want.is_none(),
                "blob {id} lost after index damage: {e}"
            ),
        }
    }
}

/// Damages one file of the store; true when it was a volume (`.dat`).
fn damage(dir: &Path, input: &mut Input<'_>) -> bool {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list store")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return false;
    }
    let path = &files[input.byte() as usize % files.len()];
    let mut bytes = std::fs::read(path).expect("read file");
    let at = input.u16() as usize % (bytes.len() + 1);
    match input.byte() % 3 {
        0 => bytes.truncate(at),
        1 => {
            for (i, b) in input.bytes(16).iter().enumerate() {
                if let Some(x) = bytes.get_mut(at + i) {
                    *x ^= b | 1;
                }
            }
        }
        _ => bytes.extend_from_slice(input.rest()),
    }
    std::fs::write(path, &bytes).expect("write damaged file");
    path.extension().is_some_and(|e| e == "dat")
}

/// A fresh directory, in memory when the machine has /dev/shm (the store
/// fsyncs every write; on tmpfs that costs nothing).
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

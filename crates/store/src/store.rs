//! [`Store`]: volumes + needle map + the group-commit writer.
//!
//! One writer thread owns the active volume. Writers send it ops over a
//! channel; it drains everything queued, appends the needles with one write,
//! fsyncs once, then publishes the new locations and answers every op of the
//! batch. So concurrent PUTs share an fsync (group commit), and a blob is
//! visible to readers only once it is durable.
//!
//! Readers take the state lock just long enough to copy a location and an
//! `Arc` of its volume, then read outside the lock from the volume's
//! read-only mapping: the bytes are a zero-copy `Bytes` over it, or an
//! [`Extent`] of the file for `sendfile`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::{Bytes, BytesMut};
use storage::Media;
use tokio::sync::{mpsc, oneshot};

use crate::idx::{self, IdxWriter, Record};
use crate::metrics::StoreMetrics;
use crate::needle::{self, Header, FLAG_TOMBSTONE};
use crate::needle_map::{Loc, NeedleMap, MAX_OFFSET};
use crate::volume::{self, Superblock, Volume, SUPERBLOCK_LEN};
use crate::{Error, Result};

/// Tunables of one store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Roll over to a new volume past this size, in bytes.
    pub volume_bytes: u64,
    /// Compact a sealed volume once this fraction of it is garbage.
    pub compact_garbage_ratio: f64,
    /// Needles between two index-file checkpoints.
    pub checkpoint_every: u64,
    /// Refuse new blobs once the volumes would hold more than this many
    /// bytes (0 = no limit): a store that fills its disk says so instead
    /// of failing writes half way. Deletes are always taken.
    pub max_bytes: u64,
    /// Tests: the writer's files (the active volume and the index files)
    /// under this fault plan ([`storage::Faults`]); `None` writes the files
    /// themselves.
    pub faults: Option<Arc<storage::Faults>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            volume_bytes: 4 << 30,
            compact_garbage_ratio: 0.3,
            checkpoint_every: 4096,
            max_bytes: 0,
            faults: None,
        }
    }
}

/// Byte accounting of one volume, for the compaction decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolStats {
    /// Needle bytes in the file (superblock excluded).
    pub total: u64,
    /// Bytes of needles the map still points at.
    pub live: u64,
    /// Bytes of tombstones (kept by compaction, so never counted as garbage).
    pub tombstones: u64,
}

impl VolStats {
    /// Reclaimable fraction of the file.
    pub fn garbage_ratio(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.total.saturating_sub(self.live + self.tombstones) as f64 / self.total as f64
    }
}

pub(crate) struct State {
    pub(crate) map: NeedleMap,
    pub(crate) volumes: BTreeMap<u16, Arc<Volume>>,
    pub(crate) stats: BTreeMap<u16, VolStats>,
    pub(crate) active: u16,
}

enum Op {
    Put {
        id: u64,
        cookie: u32,
        meta: Bytes,
        data: Bytes,
        reply: oneshot::Sender<Result<()>>,
    },
    Delete {
        id: u64,
        meta: Bytes,
        reply: oneshot::Sender<Result<()>>,
    },
    Checkpoint {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// Where the writer sends one operation's outcome.
type Reply = oneshot::Sender<Result<()>>;

/// A blob store over one data directory.
pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) opts: StoreOptions,
    pub(crate) state: RwLock<State>,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Op>>,
    /// Counters exported on `/metrics`.
    pub metrics: StoreMetrics,
    /// Serialises compactions (the background one and `compact_now`).
    pub(crate) compact_lock: std::sync::Mutex<()>,
    /// `None` only while dropping.
    compact_tx: Option<std::sync::mpsc::SyncSender<()>>,
    /// The writer and compactor threads, joined on drop.
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Drop for Store {
    /// Closes both channels and waits for the threads: the writer's last
    /// index checkpoint is on disk, and no thread touches the directory,
    /// when the store is gone (it can be opened again at once). The last
    /// reference may be dropped by one of those threads itself (each holds
    /// the store while it works); that one is not waited for — it is about
    /// to see its channel closed and end.
    fn drop(&mut self) {
        self.tx.take();
        self.compact_tx.take();
        let me = std::thread::current().id();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

/// What recovery found on open.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    /// Needles loaded from index files.
    pub from_index: u64,
    /// Needles found by scanning volume tails.
    pub scanned: u64,
    /// Bytes cut off torn volume tails.
    pub truncated_bytes: u64,
}

impl Store {
    /// Opens (or creates) the store in `dir`, recovering from a crash: index
    /// files are loaded, each volume's tail after its last checkpoint is
    /// scanned, and a torn needle at a tail is cut off.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<(Arc<Store>, OpenReport)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let mut report = OpenReport::default();
        let mut ids = Vec::new();
        let entries =
            std::fs::read_dir(dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list data dir", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // Leftover of a compaction that never swapped in.
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(n) = name
                .strip_prefix("vol-")
                .and_then(|s| s.strip_suffix(".dat"))
            {
                if let Ok(n) = n.parse::<u16>() {
                    ids.push(n);
                }
            }
        }
        ids.sort_unstable();

        let mut map = NeedleMap::new();
        let mut volumes = BTreeMap::new();
        let mut tombstone_bytes: HashMap<u16, u64> = HashMap::new();
        let mut writer_parts = None;
        let last = ids.last().copied();
        for &v in &ids {
            let reserve = if Some(v) == last {
                active_reserve(&opts)
            } else {
                0
            };
            let (vol, file, idxw, end) = recover_volume(
                dir,
                v,
                reserve,
                opts.faults.as_ref(),
                &mut map,
                &mut tombstone_bytes,
                &mut report,
            )?;
            volumes.insert(v, Arc::new(vol));
            if Some(v) == last {
                writer_parts = Some((v, storage::open(file, opts.faults.as_ref()), idxw, end));
            } else {
                idxw.sync()?;
            }
        }
        let (active, file, idxw, end) = match writer_parts {
            Some(p) => p,
            None => {
                let (file, idxw) = new_volume(dir, 1, opts.faults.as_ref())?;
                volumes.insert(
                    1,
                    Arc::new(Volume::open(
                        &volume::dat_path(dir, 1),
                        active_reserve(&opts),
                    )?),
                );
                (1, file, idxw, SUPERBLOCK_LEN)
            }
        };
        map.shrink();

        let mut stats: BTreeMap<u16, VolStats> = BTreeMap::new();
        for &v in volumes.keys() {
            let len = std::fs::metadata(volume::dat_path(dir, v))
                .map_err(|e| Error::io("stat volume", e))?
                .len();
            stats.insert(
                v,
                VolStats {
                    total: len - SUPERBLOCK_LEN,
                    live: 0,
                    tombstones: tombstone_bytes.get(&v).copied().unwrap_or(0),
                },
            );
        }
        for (_, loc) in map.iter() {
            if let Some(s) = stats.get_mut(&loc.volume) {
                s.live += loc.needle_len();
            }
        }

        let (tx, rx) = mpsc::channel(4096);
        let (compact_tx, compact_rx) = std::sync::mpsc::sync_channel(1);
        let store = Arc::new(Store {
            dir: dir.to_owned(),
            opts,
            state: RwLock::new(State {
                map,
                volumes,
                stats,
                active,
            }),
            tx: Some(tx),
            metrics: StoreMetrics::default(),
            compact_lock: std::sync::Mutex::new(()),
            compact_tx: Some(compact_tx),
            threads: std::sync::Mutex::new(Vec::new()),
        });
        store.metrics.torn_bytes.add(report.truncated_bytes);
        let writer = Writer {
            store: Arc::downgrade(&store),
            dir: dir.to_owned(),
            opts: store.opts.clone(),
            volume: active,
            file,
            end,
            idx: idxw,
            pending: Vec::new(),
        };
        let w = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::io("spawn writer thread", e))?;
        let weak = Arc::downgrade(&store);
        let c = std::thread::Builder::new()
            .name("store-compactor".into())
            .spawn(move || {
                while compact_rx.recv().is_ok() {
                    let Some(store) = weak.upgrade() else { break };
                    if let Err(e) = store.compact_due() {
                        tracing::warn!(error = %e, "background compaction failed");
                    }
                }
            })
            .map_err(|e| Error::io("spawn compactor thread", e))?;
        store
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([w, c]);
        Ok((store, report))
    }

    /// Appends a blob with its metadata (opaque here: the node's record of
    /// its key, read back by [`Store::heads`]); returns once it is fsynced
    /// and readable.
    pub async fn put(&self, id: u64, meta: Bytes, data: Bytes) -> Result<()> {
        if data.len() as u64 > needle::MAX_DATA {
            return Err(Error::TooLarge(data.len() as u64));
        }
        check_meta(&meta)?;
        let cookie = (crate::metrics::nanos() as u32) ^ (id as u32).rotate_left(16);
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(Error::Closed)?
            .send(Op::Put {
                id,
                cookie,
                meta,
                data,
                reply,
            })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Appends a tombstone for `id` carrying `meta` (why it was deleted);
    /// `NotFound` if it is not live.
    pub async fn delete(&self, id: u64, meta: Bytes) -> Result<()> {
        check_meta(&meta)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(Error::Closed)?
            .send(Op::Delete { id, meta, reply })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Writes every pending needle-map record to the index files and fsyncs
    /// them, so that the next open has nothing to rescan. Called on clean
    /// shutdown; crash recovery does not depend on it.
    pub async fn checkpoint(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(Error::Closed)?
            .send(Op::Checkpoint { reply })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    pub(crate) fn locate(&self, id: u64) -> Result<(Loc, Arc<Volume>)> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let loc = st.map.get(id).ok_or(Error::NotFound(id))?;
        let vol = st
            .volumes
            .get(&loc.volume)
            .cloned()
            .ok_or(Error::NotFound(id))?;
        Ok((loc, vol))
    }

    /// Data size of a live blob.
    pub fn size(&self, id: u64) -> Result<u64> {
        Ok(u64::from(self.locate(id)?.0.size))
    }

    /// Reads a whole blob (a slice of the volume's mapping) and verifies
    /// its CRC.
    pub fn get(&self, id: u64) -> Result<Bytes> {
        self.read_verified(id).map(|(data, _, _)| data)
    }

    /// Verifies a whole blob's CRC, then says where its bytes lie, for a
    /// caller that sends them with `sendfile`: the check reads the bytes
    /// once, the kernel copies them from the page cache.
    pub fn verified_extent(&self, id: u64) -> Result<Extent> {
        let (data, loc, vol) = self.read_verified(id)?;
        Ok(Extent {
            offset: loc.data_offset(),
            len: data.len() as u64,
            file: vol,
        })
    }

    /// A whole blob's bytes, CRC-verified, with where they lie.
    fn read_verified(&self, id: u64) -> Result<(Bytes, Loc, Arc<Volume>)> {
        let (loc, vol) = self.locate(id)?;
        let len = loc.needle_len() as usize;
        let buf = vol
            .read_at(loc.offset, len)
            .map_err(|e| Error::io(format!("read volume {}", loc.volume), e))?;
        self.metrics.reads.inc();
        let corrupt = |reason| Error::Corrupt {
            id,
            volume: loc.volume,
            offset: loc.offset,
            reason,
        };
        let n = needle::decode(&buf).map_err(|why| corrupt(why.as_str()))?;
        if n.header.id != id || n.header.is_tombstone() {
            return Err(corrupt("needle names another blob"));
        }
        self.metrics.bytes_read.add(n.data.len() as u64);
        Ok((n.data, loc, vol))
    }

    /// Reads bytes `start..end` of a blob: one positioned read of just that
    /// slice (the CRC covers the whole needle, so it is not checked here).
    pub fn get_range(&self, id: u64, start: u64, end: u64) -> Result<Bytes> {
        let (loc, vol) = self.locate(id)?;
        let size = u64::from(loc.size);
        if start > end || end > size {
            return Err(Error::BadRange { start, end, size });
        }
        let data = vol
            .read_at(loc.data_offset() + start, (end - start) as usize)
            .map_err(|e| Error::io(format!("read volume {}", loc.volume), e))?;
        self.metrics.reads.inc();
        self.metrics.bytes_read.add(data.len() as u64);
        Ok(data)
    }

    /// Where bytes `start..end` of a live blob lie in its volume file, for
    /// a caller that sends them with `sendfile(2)` (the page cache to the
    /// socket, no copy through user space). Not verified, like
    /// [`Store::get_range`]. The extent keeps its volume file open: a
    /// compaction that replaces the volume meanwhile leaves the old file
    /// readable until the extent is dropped.
    pub fn extent(&self, id: u64, start: u64, end: u64) -> Result<Extent> {
        let (loc, vol) = self.locate(id)?;
        let size = u64::from(loc.size);
        if start > end || end > size {
            return Err(Error::BadRange { start, end, size });
        }
        self.metrics.reads.inc();
        self.metrics.bytes_read.add(end - start);
        Ok(Extent {
            offset: loc.data_offset() + start,
            len: end - start,
            file: vol,
        })
    }

    /// Live blobs.
    pub fn len(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// True when no blob is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes of the needle map.
    pub fn needle_map_bytes(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .heap_bytes()
    }

    /// Per-volume byte accounting.
    pub fn volume_stats(&self) -> BTreeMap<u16, VolStats> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .stats
            .clone()
    }

    pub(crate) fn poke_compactor(&self) {
        // A full channel means a check is already queued; that one will see
        // our garbage too.
        if let Some(tx) = &self.compact_tx {
            let _ = tx.try_send(());
        }
    }
}

/// Address space mapped for an active volume: it can grow to the roll-over
/// size plus one maximal needle (a needle larger than the remaining room in
/// an empty volume still goes in).
fn active_reserve(opts: &StoreOptions) -> u64 {
    SUPERBLOCK_LEN + opts.volume_bytes + needle::needle_len(u16::MAX, needle::MAX_DATA)
}

fn new_volume(
    dir: &Path,
    v: u16,
    faults: Option<&Arc<storage::Faults>>,
) -> Result<(Arc<dyn Media>, IdxWriter)> {
    let sb = Superblock {
        volume: v,
        generation: 1,
    };
    let file = volume::create(&volume::dat_path(dir, v), sb)?;
    let idxw = IdxWriter::create(&volume::idx_path(dir, v), sb, &[], faults)?;
    Ok((storage::open(file, faults), idxw))
}

fn apply(map: &mut NeedleMap, tomb: &mut HashMap<u16, u64>, v: u16, r: &Record) {
    if r.flags & FLAG_TOMBSTONE != 0 {
        map.remove(r.id);
        *tomb.entry(v).or_default() += needle::needle_len(r.meta, u64::from(r.size));
    } else {
        map.insert(
            r.id,
            Loc {
                volume: v,
                offset: r.offset,
                meta: needle::meta_room(r.meta),
                size: r.size,
            },
        );
    }
}

/// Metadata must fit the needle's 16-bit length.
fn check_meta(meta: &[u8]) -> Result<()> {
    if meta.len() > needle::MAX_META {
        return Err(Error::MetaTooLarge(meta.len()));
    }
    Ok(())
}

/// Loads one volume's checkpoint, scans its tail and cuts a torn needle.
fn recover_volume(
    dir: &Path,
    v: u16,
    reserve: u64,
    faults: Option<&Arc<storage::Faults>>,
    map: &mut NeedleMap,
    tomb: &mut HashMap<u16, u64>,
    report: &mut OpenReport,
) -> Result<(Volume, File, IdxWriter, u64)> {
    let path = volume::dat_path(dir, v);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let sb = {
        use std::os::unix::fs::FileExt;
        let mut raw = [0u8; SUPERBLOCK_LEN as usize];
        file.read_exact_at(&mut raw, 0)
            .map_err(|e| Error::io(format!("read superblock of {}", path.display()), e))?;
        Superblock::decode(&raw, &path)?
    };
    if sb.volume != v {
        return Err(Error::Format {
            path: path.display().to_string(),
            reason: format!("superblock says volume {}", sb.volume),
        });
    }
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat volume", e))?
        .len();
    let ipath = volume::idx_path(dir, v);
    let loaded = idx::load(&ipath, sb)?;
    let mut covered = SUPERBLOCK_LEN;
    // Index records trusted (applied); the file is cut after them.
    let mut trusted = 0;
    for r in loaded.iter().flatten() {
        let end = r.offset + needle::needle_len(r.meta, u64::from(r.size));
        if end > len {
            // The index names bytes the volume does not have: distrust the
            // rest of it and rescan from the last good point.
            break;
        }
        apply(map, tomb, v, r);
        covered = covered.max(end);
        report.from_index += 1;
        trusted += 1;
    }
    let (found, valid_end, stop) = volume::scan(&file, covered, len)
        .map_err(|e| Error::io(format!("scan {}", path.display()), e))?;
    if valid_end < len {
        tracing::warn!(volume = v, at = valid_end, cut = len - valid_end, why = ?stop.map(|s| s.as_str()), "cutting torn volume tail");
        file.set_len(valid_end)
            .map_err(|e| Error::io("truncate torn tail", e))?;
        file.sync_all()
            .map_err(|e| Error::io("fsync after truncate", e))?;
        report.truncated_bytes += len - valid_end;
    }
    let mut recs = Vec::with_capacity(found.len());
    for s in &found {
        let r = Record {
            id: s.header.id,
            offset: s.offset,
            size: s.header.size,
            flags: s.header.flags,
            meta: s.header.meta,
        };
        apply(map, tomb, v, &r);
        recs.push(r);
    }
    report.scanned += found.len() as u64;
    // Mapped only now: the torn tail (if any) is already cut off.
    let vol = Volume::open(&path, reserve)?;
    // Keep the trusted records, then add the scanned tail; with no usable
    // index the scan started at the superblock, so the rebuilt file is
    // complete.
    let mut idxw = match loaded {
        Some(_) => IdxWriter::reopen(&ipath, trusted, faults)?,
        None => IdxWriter::create(&ipath, sb, &[], faults)?,
    };
    idxw.append(&recs)?;
    Ok((vol, file, idxw, valid_end))
}

/// The writer thread's state.
struct Writer {
    store: std::sync::Weak<Store>,
    dir: PathBuf,
    opts: StoreOptions,
    volume: u16,
    /// The active volume, written only through the storage seam.
    file: Arc<dyn Media>,
    end: u64,
    idx: IdxWriter,
    pending: Vec<Record>,
}

/// A needle appended by the current batch, to publish after the fsync.
struct Appended {
    volume: u16,
    offset: u64,
    id: u64,
    meta: u16,
    size: u32,
    flags: u8,
    /// Cleared when the flush that carried it failed.
    durable: bool,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        const BATCH_BYTES: usize = 32 << 20;
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            let mut bytes = 0usize;
            while bytes < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(op) => {
                        if let Op::Put { data, .. } = &op {
                            bytes += data.len();
                        }
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            let outbox = {
                let Some(store) = self.store.upgrade() else {
                    return;
                };
                self.commit(&store, batch)
            };
            // Answer only once this thread holds no reference: a caller
            // that drops the store after its answer then drops the last
            // one, and its drop waits for this thread (see `Drop`).
            for (reply, res) in outbox {
                let _ = reply.send(res);
            }
        }
        // Channel closed: the store is dropping. Leave the index complete.
        let _ = self.flush_idx(true);
    }

    /// Appends a batch; returns the answers to send.
    fn commit(&mut self, store: &Store, batch: Vec<Op>) -> Vec<(Reply, Result<()>)> {
        let mut outbox: Vec<(Reply, Result<()>)> = Vec::with_capacity(batch.len());
        let mut buf = BytesMut::new();
        let mut appended: Vec<Appended> = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        // Liveness of ids touched earlier in this batch (not yet in the map).
        let mut seen: HashMap<u64, bool> = HashMap::new();
        let mut failure: Option<String> = None;
        let mut any_delete = false;

        let mut checkpoints = Vec::new();
        // Bytes the volumes hold before this batch, for `max_bytes`.
        let used_before: u64 = if self.opts.max_bytes > 0 {
            let st = store.state.read().unwrap_or_else(|p| p.into_inner());
            st.stats.values().map(|v| v.total).sum()
        } else {
            0
        };
        for op in batch {
            let (id, cookie, meta, data, flags, reply) = match op {
                Op::Checkpoint { reply } => {
                    checkpoints.push(reply);
                    continue;
                }
                Op::Put {
                    id,
                    cookie,
                    meta,
                    data,
                    reply,
                } => {
                    let used = used_before + buf.len() as u64;
                    let len = needle::needle_len(meta.len() as u16, data.len() as u64);
                    if self.opts.max_bytes > 0 && used + len > self.opts.max_bytes {
                        outbox.push((
                            reply,
                            Err(Error::Full {
                                used,
                                limit: self.opts.max_bytes,
                            }),
                        ));
                        continue;
                    }
                    (id, cookie, meta, data, 0u8, reply)
                }
                Op::Delete { id, meta, reply } => {
                    let live = match seen.get(&id) {
                        Some(l) => *l,
                        None => store
                            .state
                            .read()
                            .unwrap_or_else(|p| p.into_inner())
                            .map
                            .get(id)
                            .is_some(),
                    };
                    if !live {
                        outbox.push((reply, Err(Error::NotFound(id))));
                        continue;
                    }
                    any_delete = true;
                    (id, 0, meta, Bytes::new(), FLAG_TOMBSTONE, reply)
                }
            };
            let len = needle::needle_len(meta.len() as u16, data.len() as u64);
            let at = self.end + buf.len() as u64;
            if failure.is_none()
                && at + len > self.opts.volume_bytes.min(MAX_OFFSET)
                && at > SUPERBLOCK_LEN
            {
                if let Err(e) = self.flush(&mut buf).and_then(|_| self.roll_over(store)) {
                    failure = Some(e.to_string());
                    self.mark_lost(&mut appended);
                }
            }
            if failure.is_some() {
                replies.push((reply, None));
                continue;
            }
            let offset = self.end + buf.len() as u64;
            needle::encode_into(
                &mut buf,
                &Header {
                    cookie,
                    id,
                    flags,
                    meta: meta.len() as u16,
                    size: data.len() as u32,
                },
                &meta,
                &data,
            );
            seen.insert(id, flags == 0);
            appended.push(Appended {
                volume: self.volume,
                offset,
                id,
                meta: meta.len() as u16,
                size: data.len() as u32,
                flags,
                durable: true,
            });
            replies.push((reply, Some(appended.len() - 1)));
        }
        if failure.is_none() {
            if let Err(e) = self.flush(&mut buf) {
                failure = Some(e.to_string());
                self.mark_lost(&mut appended);
            }
        }
        if !appended.is_empty() {
            store.metrics.fsync_batches.inc();
        }

        // Publish: the needles are durable now.
        {
            let mut st = store.state.write().unwrap_or_else(|p| p.into_inner());
            for a in appended.iter().filter(|a| a.durable) {
                let nlen = needle::needle_len(a.meta, u64::from(a.size));
                let stats = st.stats.entry(a.volume).or_default();
                stats.total += nlen;
                if a.flags & FLAG_TOMBSTONE != 0 {
                    stats.tombstones += nlen;
                    if let Some(old) = st.map.remove(a.id) {
                        let s = st.stats.entry(old.volume).or_default();
                        s.live = s.live.saturating_sub(old.needle_len());
                    }
                } else {
                    stats.live += nlen;
                    if let Some(old) = st.map.insert(
                        a.id,
                        Loc {
                            volume: a.volume,
                            offset: a.offset,
                            meta: needle::meta_room(a.meta),
                            size: a.size,
                        },
                    ) {
                        let s = st.stats.entry(old.volume).or_default();
                        s.live = s.live.saturating_sub(old.needle_len());
                    }
                }
            }
        }
        for a in appended.iter().filter(|a| a.durable) {
            if a.flags & FLAG_TOMBSTONE != 0 {
                store.metrics.deletes.inc();
            } else {
                store.metrics.writes.inc();
                store.metrics.bytes_written.add(u64::from(a.size));
            }
            self.pending.push(Record {
                id: a.id,
                offset: a.offset,
                size: a.size,
                flags: a.flags,
                meta: a.meta,
            });
        }
        for (reply, idx) in replies {
            let ok = idx.is_some_and(|i| appended[i].durable);
            let res = if ok {
                Ok(())
            } else {
                Err(Error::io(
                    "append needle",
                    std::io::Error::other(failure.clone().unwrap_or_else(|| "write failed".into())),
                ))
            };
            outbox.push((reply, res));
        }
        if self.pending.len() as u64 >= self.opts.checkpoint_every {
            if let Err(e) = self.flush_idx(false) {
                tracing::warn!(error = %e, "index checkpoint failed; restart will rescan");
            }
        }
        if any_delete {
            store.poke_compactor();
        }
        if !checkpoints.is_empty() {
            let res = self.flush_idx(true);
            for reply in checkpoints {
                let r = match &res {
                    Ok(()) => Ok(()),
                    Err(e) => Err(Error::io(
                        "checkpoint",
                        std::io::Error::other(e.to_string()),
                    )),
                };
                outbox.push((reply, r));
            }
        }
        outbox
    }

    /// After a failed flush: needles of the active volume at or past its end
    /// never became durable. Earlier ones (before a roll-over) did.
    fn mark_lost(&self, appended: &mut [Appended]) {
        for a in appended.iter_mut() {
            if a.volume == self.volume && a.offset >= self.end {
                a.durable = false;
            }
        }
    }

    /// Writes `buf` at the end of the active volume and fsyncs it.
    fn flush(&mut self, buf: &mut BytesMut) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let res = self
            .file
            .write_at(buf, self.end)
            .and_then(|_| self.file.sync());
        match res {
            Ok(()) => {
                self.end += buf.len() as u64;
                buf.clear();
                Ok(())
            }
            Err(e) => {
                // Drop whatever part of the batch reached the file so the
                // next batch starts at a needle boundary.
                let _ = self.file.set_len(self.end);
                buf.clear();
                Err(Error::io("write volume", e))
            }
        }
    }

    fn flush_idx(&mut self, sync: bool) -> Result<()> {
        self.idx.append(&self.pending)?;
        self.pending.clear();
        if sync {
            self.idx.sync()?;
        }
        Ok(())
    }

    /// Seals the active volume and starts the next one.
    fn roll_over(&mut self, store: &Store) -> Result<()> {
        self.flush_idx(true)?;
        let next = self.volume.checked_add(1).ok_or_else(|| Error::Format {
            path: self.dir.display().to_string(),
            reason: "out of volume numbers".into(),
        })?;
        let (file, idxw) = new_volume(&self.dir, next, self.opts.faults.as_ref())?;
        let vol = Arc::new(Volume::open(
            &volume::dat_path(&self.dir, next),
            active_reserve(&self.opts),
        )?);
        {
            let mut st = store.state.write().unwrap_or_else(|p| p.into_inner());
            st.volumes.insert(next, vol);
            st.stats.insert(next, VolStats::default());
            st.active = next;
        }
        self.volume = next;
        self.file = file;
        self.idx = idxw;
        self.end = SUPERBLOCK_LEN;
        store.metrics.rollovers.inc();
        // The sealed volume may already hold garbage worth compacting.
        store.poke_compactor();
        Ok(())
    }
}

/// Bytes of a blob as a range of an open volume file ([`Store::extent`]).
#[derive(Clone)]
pub struct Extent {
    /// The volume file.
    pub file: Arc<dyn std::os::fd::AsFd + Send + Sync>,
    /// Offset of the first byte in the file.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

impl std::fmt::Debug for Extent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extent")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

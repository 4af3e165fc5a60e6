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
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{DiskUse, Gauges, StoreMetrics};
use crate::needle;
use crate::needle_map::{Loc, NeedleMap};
use crate::volume::{self, Volume, SUPERBLOCK_LEN};
use crate::{Error, Result};
use recover::{active_reserve, check_meta, new_volume, recover_volume};
use writer::Writer;

mod recover;
mod writer;

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
        store.metrics.torn_bytes.inc_by(report.truncated_bytes);
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
        let cookie = (nanos() as u32) ^ (id as u32).rotate_left(16);
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
        self.metrics.bytes_read.inc_by(n.data.len() as u64);
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
        self.metrics.bytes_read.inc_by(data.len() as u64);
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
        self.metrics.bytes_read.inc_by(end - start);
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

impl Store {
    /// This store's metrics as one collector: its counters, and gauges
    /// read from the store at each scrape.
    pub fn metrics_collector(self: &Arc<Self>) -> prom::Group {
        let store = self.clone();
        self.metrics.collector(move || store.gauges())
    }

    fn gauges(&self) -> Gauges {
        let vols = self.volume_stats();
        Gauges {
            blobs: self.len(),
            map_bytes: self.needle_map_bytes(),
            disk: DiskUse {
                volumes: vols.len(),
                used: vols.values().map(|v| v.total).sum(),
                free: rustix::fs::statvfs(&self.dir)
                    .ok()
                    .map(|s| s.f_bavail.saturating_mul(s.f_frsize)),
            },
        }
    }
}

/// Nanoseconds since the epoch, for cookies.
fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
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

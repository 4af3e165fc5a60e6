//! Online compaction of sealed volumes.
//!
//! The live needles of volume V are copied to `vol-V.dat.tmp` (with the next
//! generation number in its superblock) and its index to `vol-V.idx.tmp`;
//! both are fsynced and renamed over the originals, then the needle map is
//! switched under the state lock. Reads and writes go on meanwhile:
//!
//! - a reader that looked up an old location holds an `Arc` of the old file,
//!   which stays readable after the rename (the inode lives until closed);
//! - a blob deleted while we copy is no longer in the map at swap time, so
//!   its copied needle is left unreferenced (garbage for the next round) and
//!   its tombstone, in the active volume, still deletes it on replay;
//! - a crash between the two renames leaves a new volume with an old index
//!   whose generation does not match, so restart rescans that volume.
//!
//! Tombstones are copied unless the blob they delete was also in V (then
//! both go). A tombstone for a blob in an earlier volume must stay until that
//! volume is compacted, and we do not track that, so such tombstones stay.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::idx::{IdxWriter, Record};
use crate::needle::{self, FLAG_TOMBSTONE};
use crate::needle_map::Loc;
use crate::store::{Store, VolStats};
use crate::volume::{self, Superblock, Volume, SUPERBLOCK_LEN};
use crate::{Error, Result};

/// What one compaction did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    /// Volume compacted.
    pub volume: u16,
    /// File bytes before.
    pub before: u64,
    /// File bytes after.
    pub after: u64,
    /// Live needles copied.
    pub kept: u64,
}

impl Store {
    /// Compacts every sealed volume whose garbage ratio exceeds the
    /// configured threshold.
    pub fn compact_due(&self) -> Result<Vec<CompactReport>> {
        let due: Vec<u16> = {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            st.stats
                .iter()
                .filter(|(v, s)| {
                    **v != st.active && s.garbage_ratio() > self.opts.compact_garbage_ratio
                })
                .map(|(v, _)| *v)
                .collect()
        };
        let mut out = Vec::new();
        for v in due {
            out.push(self.compact_volume(v)?);
        }
        Ok(out)
    }

    /// Rewrites sealed volume `v` with only its live needles.
    pub fn compact_volume(&self, v: u16) -> Result<CompactReport> {
        let _only_one = self.compact_lock.lock().unwrap_or_else(|p| p.into_inner());
        let old: Arc<Volume> = {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            if v == st.active {
                return Err(Error::Format {
                    path: volume::dat_path(&self.dir, v).display().to_string(),
                    reason: "the active volume is not compacted; it is sealed first".into(),
                });
            }
            st.volumes
                .get(&v)
                .cloned()
                .ok_or(Error::NotFound(u64::from(v)))?
        };
        let dat = volume::dat_path(&self.dir, v);
        let idx = volume::idx_path(&self.dir, v);
        let tmp_dat = dat.with_extension("dat.tmp");
        let tmp_idx = idx.with_extension("idx.tmp");
        let before = old
            .file()
            .metadata()
            .map_err(|e| Error::io("stat volume", e))?
            .len();
        let (needles, _, _) = volume::scan(old.file(), SUPERBLOCK_LEN, before)
            .map_err(|e| Error::io(format!("scan {}", dat.display()), e))?;

        let _ = std::fs::remove_file(&tmp_dat);
        let sb = Superblock {
            volume: v,
            generation: old.generation + 1,
        };
        let out = volume::create(&tmp_dat, sb)?;
        let mut put_here: HashSet<u64> = HashSet::new();
        let mut records = Vec::new();
        // (id, old loc, new loc) of data needles, for the swap.
        let mut moved: Vec<(u64, Loc, Loc)> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(8 << 20);
        let mut end = SUPERBLOCK_LEN;
        let mut written = SUPERBLOCK_LEN;
        let mut tomb_bytes = 0;
        for n in &needles {
            let h = n.header;
            let len = h.disk_len();
            let keep = if h.flags & FLAG_TOMBSTONE != 0 {
                !put_here.contains(&h.id)
            } else {
                put_here.insert(h.id);
                let here = Loc {
                    volume: v,
                    offset: n.offset,
                    meta: needle::meta_room(h.meta),
                    size: h.size,
                };
                let st = self.state.read().unwrap_or_else(|p| p.into_inner());
                st.map.get(h.id) == Some(here)
            };
            if !keep {
                continue;
            }
            let raw = old
                .read_at(n.offset, len as usize)
                .map_err(|e| Error::io("read needle", e))?;
            buf.extend_from_slice(&raw);
            records.push(Record {
                id: h.id,
                offset: end,
                size: h.size,
                flags: h.flags,
                meta: h.meta,
            });
            if h.flags & FLAG_TOMBSTONE != 0 {
                tomb_bytes += len;
            } else {
                moved.push((
                    h.id,
                    Loc {
                        volume: v,
                        offset: n.offset,
                        meta: needle::meta_room(h.meta),
                        size: h.size,
                    },
                    Loc {
                        volume: v,
                        offset: end,
                        meta: needle::meta_room(h.meta),
                        size: h.size,
                    },
                ));
            }
            end += len;
            if buf.len() >= 8 << 20 {
                out.write_all_at(&buf, written)
                    .map_err(|e| Error::io("write compacted volume", e))?;
                written += buf.len() as u64;
                buf.clear();
            }
        }
        out.write_all_at(&buf, written)
            .map_err(|e| Error::io("write compacted volume", e))?;
        out.sync_all()
            .map_err(|e| Error::io("fsync compacted volume", e))?;
        IdxWriter::create(&tmp_idx, sb, &records, None)?.sync()?;

        std::fs::rename(&tmp_dat, &dat).map_err(|e| Error::io("swap compacted volume", e))?;
        std::fs::rename(&tmp_idx, &idx).map_err(|e| Error::io("swap compacted index", e))?;
        volume::sync_dir(&self.dir)?;
        let new = Arc::new(Volume::open(&dat, 0)?);

        let mut live = 0;
        {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            for (id, was, now) in &moved {
                // Only blobs still pointing at their old copy move; one
                // deleted meanwhile stays deleted.
                if st.map.get(*id) == Some(*was) {
                    st.map.insert(*id, *now);
                    live += now.needle_len();
                }
            }
            st.volumes.insert(v, new);
            st.stats.insert(
                v,
                VolStats {
                    total: end - SUPERBLOCK_LEN,
                    live,
                    tombstones: tomb_bytes,
                },
            );
        }
        self.metrics.compactions.inc();
        self.metrics
            .compacted_bytes
            .inc_by(before.saturating_sub(end));
        tracing::info!(
            volume = v,
            before,
            after = end,
            kept = moved.len(),
            "compacted volume"
        );
        Ok(CompactReport {
            volume: v,
            before,
            after: end,
            kept: moved.len() as u64,
        })
    }
}

//! Opening a store: each volume's index-file checkpoint loaded, its tail
//! after the checkpoint scanned, and a torn needle at the end cut; new
//! volumes created with their index files.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use storage::Media;

use super::{OpenReport, StoreOptions};
use crate::idx::{self, IdxWriter, Record};
use crate::needle::{self, FLAG_TOMBSTONE};
use crate::needle_map::{Loc, NeedleMap};
use crate::volume::{self, Superblock, Volume, SUPERBLOCK_LEN};
use crate::{Error, Result};

/// Address space mapped for an active volume: it can grow to the roll-over
/// size plus one maximal needle (a needle larger than the remaining room in
/// an empty volume still goes in).
pub(super) fn active_reserve(opts: &StoreOptions) -> u64 {
    SUPERBLOCK_LEN + opts.volume_bytes + needle::needle_len(u16::MAX, needle::MAX_DATA)
}

pub(super) fn new_volume(
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

pub(super) fn apply(map: &mut NeedleMap, tomb: &mut HashMap<u16, u64>, v: u16, r: &Record) {
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
pub(super) fn check_meta(meta: &[u8]) -> Result<()> {
    if meta.len() > needle::MAX_META {
        return Err(Error::MetaTooLarge(meta.len()));
    }
    Ok(())
}

/// Loads one volume's checkpoint, scans its tail and cuts a torn needle.
pub(super) fn recover_volume(
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

//! The one place with `unsafe`: a read-only shared mapping of a volume file.
//!
//! Mapping a file is unsafe in Rust because another process could truncate
//! or rewrite it under us (truncation turns reads of the lost pages into
//! SIGBUS). strata's volumes make that a non-issue in practice:
//!
//! - volumes are append-only; bytes once written are never rewritten;
//! - the only truncation (cutting a torn tail) happens at open, before the
//!   volume is mapped;
//! - compaction writes a new file and renames it over the old one; a mapping
//!   of the old file keeps its (unlinked) inode alive;
//! - readers only ask for ranges the needle map names, which were fsynced
//!   before they were published, so they lie below the file's end even
//!   though an active volume's mapping reaches further (its reserve for
//!   future appends is never read before it is written).
//!
//! What remains is the mmap trade-off every mapped store accepts: a disk
//! error under a mapped page is a SIGBUS, not an `io::Error`.
#![allow(unsafe_code)]

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

/// A read-only mapping of one volume file.
#[derive(Debug)]
pub struct VolumeMap {
    map: Mmap,
}

impl VolumeMap {
    /// Maps `len` bytes of `file` (may exceed its current size).
    pub fn new(file: &File, len: u64) -> std::io::Result<Self> {
        let len =
            usize::try_from(len).map_err(|_| std::io::Error::other("volume too large to map"))?;
        // SAFETY: see the module docs: the file is append-only, never
        // truncated while mapped, and only written ranges are read.
        let map = unsafe { MmapOptions::new().len(len).map(file)? };
        Ok(VolumeMap { map })
    }

    /// Zero-copy bytes `offset..offset+len`, keeping the mapping alive.
    pub fn slice(this: &Arc<Self>, offset: u64, len: usize) -> std::io::Result<Bytes> {
        let start =
            usize::try_from(offset).map_err(|_| std::io::Error::other("offset out of range"))?;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= this.map.len())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "read past the mapped volume",
                )
            })?;
        Ok(Bytes::from_owner(MapSlice {
            map: this.clone(),
            start,
            end,
        }))
    }
}

struct MapSlice {
    map: Arc<VolumeMap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map.map[self.start..self.end]
    }
}

//! Per-volume index files: the needle map's checkpoint.
//!
//! ```text
//! header (32 bytes): "STRATAIX", u8 version (1), 3 reserved,
//!                    u32 volume, u64 volume generation, 8 reserved
//! record (32 bytes): u64 blob id, u64 needle offset, u32 data size,
//!                    u8 flags (1 = tombstone), 1 reserved,
//!                    u16 metadata size (0 before volume format 2),
//!                    u32 crc32c of bytes 0..24, 4 reserved
//! ```
//! Records are appended in volume order, only after the needles they name
//! were fsynced, so every record points at durable data. A missing file, a
//! header whose generation differs from the volume's (a compaction swap cut
//! short), or a torn record just means more of the volume is rescanned.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use storage::{Faults, Media};

use crate::volume::Superblock;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"STRATAIX";
const VERSION: u8 = 1;
const HEADER_LEN: u64 = 32;
/// Bytes per record.
pub const RECORD_LEN: usize = 32;

/// One checkpointed needle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Blob id.
    pub id: u64,
    /// Needle offset in the volume.
    pub offset: u64,
    /// Data size.
    pub size: u32,
    /// Needle flags.
    pub flags: u8,
    /// Metadata size.
    pub meta: u16,
}

impl Record {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&[self.flags, 0]);
        out.extend_from_slice(&self.meta.to_le_bytes());
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let crc = u32::from_le_bytes(b[24..28].try_into().ok()?);
        if crc32c::crc32c(&b[..24]) != crc {
            return None;
        }
        Some(Record {
            id: u64::from_le_bytes(b[0..8].try_into().ok()?),
            offset: u64::from_le_bytes(b[8..16].try_into().ok()?),
            size: u32::from_le_bytes(b[16..20].try_into().ok()?),
            flags: b[20],
            meta: u16::from_le_bytes([b[22], b[23]]),
        })
    }
}

fn header(sb: Superblock) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8] = VERSION;
    h[12..16].copy_from_slice(&u32::from(sb.volume).to_le_bytes());
    h[16..24].copy_from_slice(&sb.generation.to_le_bytes());
    h
}

/// Loads the records of `path` if its header matches `sb`. Returns `None`
/// when the file is missing or belongs to another generation; stops at the
/// first torn or corrupt record.
pub fn load(path: &Path, sb: Superblock) -> Result<Option<Vec<Record>>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
    };
    let mut all = Vec::new();
    f.read_to_end(&mut all)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if all.len() < HEADER_LEN as usize || all[..HEADER_LEN as usize] != header(sb) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity((all.len() - HEADER_LEN as usize) / RECORD_LEN);
    for rec in all[HEADER_LEN as usize..].chunks_exact(RECORD_LEN) {
        match Record::decode(rec) {
            Some(r) => out.push(r),
            None => break,
        }
    }
    Ok(Some(out))
}

/// Appends records to one volume's index file, through the storage seam
/// (under `faults` in tests).
#[derive(Debug)]
pub struct IdxWriter {
    file: Arc<dyn Media>,
    len: u64,
}

impl IdxWriter {
    /// Creates (or replaces) the file with a fresh header and `records`.
    pub fn create(
        path: &Path,
        sb: Superblock,
        records: &[Record],
        faults: Option<&Arc<Faults>>,
    ) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        let file = storage::open(file, faults);
        file.write_at(&header(sb), 0)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        let mut w = IdxWriter {
            file,
            len: HEADER_LEN,
        };
        w.append(records)?;
        Ok(w)
    }

    /// Opens an index whose first `valid` records were loaded, cutting off
    /// anything after them (a torn record) before appending.
    pub fn reopen(path: &Path, valid: usize, faults: Option<&Arc<Faults>>) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let file = storage::open(file, faults);
        let len = HEADER_LEN + (valid * RECORD_LEN) as u64;
        file.set_len(len)
            .map_err(|e| Error::io(format!("truncate {}", path.display()), e))?;
        Ok(IdxWriter { file, len })
    }

    /// Appends records (not fsynced: a lost tail is rebuilt from the volume).
    pub fn append(&mut self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * RECORD_LEN);
        for r in records {
            r.encode(&mut buf);
        }
        self.file
            .write_at(&buf, self.len)
            .map_err(|e| Error::io("append to index file", e))?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// fsyncs the file (used when sealing a volume and at shutdown).
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync()
            .map_err(|e| Error::io("fsync index file", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_torn_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("v.idx");
        let sb = Superblock {
            volume: 3,
            generation: 9,
        };
        let recs: Vec<Record> = (0..10)
            .map(|i| Record {
                id: i,
                offset: 64 + i * 40,
                size: i as u32,
                flags: (i % 2) as u8,
                meta: i as u16 * 3,
            })
            .collect();
        IdxWriter::create(&p, sb, &recs, None).expect("create");
        assert_eq!(load(&p, sb).expect("load"), Some(recs.clone()));
        // Another generation: ignored.
        assert_eq!(
            load(
                &p,
                Superblock {
                    volume: 3,
                    generation: 10
                }
            )
            .expect("load"),
            None
        );
        // Torn last record: the rest still loads.
        let len = std::fs::metadata(&p).expect("meta").len();
        let f = OpenOptions::new().write(true).open(&p).expect("open");
        f.set_len(len - 5).expect("cut");
        assert_eq!(load(&p, sb).expect("load").map(|r| r.len()), Some(9));
        // Reopen cuts the torn bytes and appends cleanly after record 9.
        let mut w = IdxWriter::reopen(&p, 9, None).expect("reopen");
        w.append(&recs[9..]).expect("append");
        assert_eq!(load(&p, sb).expect("load"), Some(recs));
    }
}

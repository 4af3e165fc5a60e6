//! Volume files: a 64-byte superblock followed by needles.
//!
//! ```text
//! 0   [u8; 8] magic "STRATAVL"
//! 8   u8      format version (2: needles carry metadata; 1 is read too)
//! 9   3       reserved
//! 12  u32     volume number
//! 16  u64     generation (bumped by each compaction rewrite)
//! 24  u64     created, Unix seconds
//! 32  32      reserved (zero)
//! 64  needles ...
//! ```

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::needle::{self, Header, Invalid};
use crate::{Error, Result};

/// Volume file magic.
pub const MAGIC: &[u8; 8] = b"STRATAVL";
/// Volume format version written now.
pub const VERSION: u8 = 2;
/// Oldest version still read (its needles have no metadata).
pub const OLDEST_VERSION: u8 = 1;
/// Bytes before the first needle.
pub const SUPERBLOCK_LEN: u64 = 64;

/// `vol-000042.dat`
pub fn dat_path(dir: &Path, volume: u16) -> PathBuf {
    dir.join(format!("vol-{volume:06}.dat"))
}

/// `vol-000042.idx`
pub fn idx_path(dir: &Path, volume: u16) -> PathBuf {
    dir.join(format!("vol-{volume:06}.idx"))
}

/// The superblock fields we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Volume number.
    pub volume: u16,
    /// Compaction generation.
    pub generation: u64,
}

impl Superblock {
    /// Encodes the 64 bytes.
    pub fn encode(&self) -> [u8; SUPERBLOCK_LEN as usize] {
        let mut b = [0u8; SUPERBLOCK_LEN as usize];
        b[..8].copy_from_slice(MAGIC);
        b[8] = VERSION;
        b[12..16].copy_from_slice(&u32::from(self.volume).to_le_bytes());
        b[16..24].copy_from_slice(&self.generation.to_le_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        b[24..32].copy_from_slice(&now.to_le_bytes());
        b
    }

    /// Decodes and checks magic and version.
    pub fn decode(b: &[u8], path: &Path) -> Result<Self> {
        let fmt = |reason: String| Error::Format {
            path: path.display().to_string(),
            reason,
        };
        if b.len() < SUPERBLOCK_LEN as usize || &b[..8] != MAGIC {
            return Err(fmt("not a strata volume (bad magic)".into()));
        }
        if !(OLDEST_VERSION..=VERSION).contains(&b[8]) {
            return Err(fmt(format!("unsupported volume version {}", b[8])));
        }
        let mut v = [0u8; 4];
        v.copy_from_slice(&b[12..16]);
        let mut g = [0u8; 8];
        g.copy_from_slice(&b[16..24]);
        let volume = u16::try_from(u32::from_le_bytes(v))
            .map_err(|_| fmt("volume number out of range".into()))?;
        Ok(Superblock {
            volume,
            generation: u64::from_le_bytes(g),
        })
    }
}

/// A read handle on one volume file. Shared by readers through an `Arc`;
/// compaction swaps in a new one, and readers still holding the old handle
/// keep reading the old (unlinked) inode safely.
///
/// Reads come from a read-only shared mapping of the file, handed out as
/// zero-copy `Bytes`: a GET copies the blob once (into the socket) instead of
/// twice (pread into a buffer, then into the socket).
#[derive(Debug)]
pub struct Volume {
    /// Generation of this file.
    pub generation: u64,
    file: File,
    map: Arc<crate::map::VolumeMap>,
}

impl Volume {
    /// Opens an existing volume for reading and checks its superblock.
    /// `reserve` is the address space to map beyond the current end, so that
    /// an active volume's appends stay readable through the same mapping.
    pub fn open(path: &Path, reserve: u64) -> Result<Self> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let mut sb = [0u8; SUPERBLOCK_LEN as usize];
        file.read_exact_at(&mut sb, 0)
            .map_err(|e| Error::io(format!("read superblock of {}", path.display()), e))?;
        let s = Superblock::decode(&sb, path)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat volume", e))?
            .len();
        let map = crate::map::VolumeMap::new(&file, len.max(reserve))
            .map_err(|e| Error::io(format!("map {}", path.display()), e))?;
        Ok(Volume {
            generation: s.generation,
            file,
            map: Arc::new(map),
        })
    }

    /// The underlying file, for sequential scans.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The `len` bytes at `offset`, without copying. The caller must only
    /// ask for bytes that were durably written (the needle map guarantees
    /// it); see `map.rs` for why that makes the mapping safe.
    pub fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        crate::map::VolumeMap::slice(&self.map, offset, len)
    }
}

impl std::os::fd::AsFd for Volume {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Creates a new, empty volume file and makes it durable (file and dir).
pub fn create(path: &Path, sb: Superblock) -> Result<File> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(ctx("create"), e))?;
    f.write_all_at(&sb.encode(), 0)
        .map_err(|e| Error::io(ctx("write superblock"), e))?;
    f.sync_all().map_err(|e| Error::io(ctx("fsync"), e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(f)
}

/// fsyncs a directory so that a create or rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync dir {}", dir.display()), e))
}

/// One needle found by [`scan`].
#[derive(Debug, Clone, Copy)]
pub struct Scanned {
    /// Its header.
    pub header: Header,
    /// Byte offset of the needle.
    pub offset: u64,
}

/// Reads needles sequentially from `from` until the end of the file or the
/// first needle that fails verification. Returns the needles and the offset
/// where valid data ends (the truncation point for a torn tail), plus why it
/// stopped early, if it did.
pub fn scan(
    file: &File,
    from: u64,
    file_len: u64,
) -> std::io::Result<(Vec<Scanned>, u64, Option<Invalid>)> {
    let mut out = Vec::new();
    let mut off = from;
    while off < file_len {
        let mut head = [0u8; needle::HEADER_LEN as usize];
        if file_len - off < needle::HEADER_LEN {
            return Ok((out, off, Some(Invalid::Truncated)));
        }
        file.read_exact_at(&mut head, off)?;
        let Some(h) = needle::parse_header(&head) else {
            return Ok((out, off, Some(Invalid::Magic)));
        };
        let len = h.disk_len();
        if off + len > file_len {
            return Ok((out, off, Some(Invalid::Truncated)));
        }
        // The whole needle, to verify its CRC.
        let buf = {
            let mut b = BytesMut::zeroed(len as usize);
            file.read_exact_at(&mut b, off)?;
            b.freeze()
        };
        if let Err(why) = needle::decode(&buf) {
            return Ok((out, off, Some(why)));
        }
        out.push(Scanned {
            header: h,
            offset: off,
        });
        off += len;
    }
    Ok((out, off, None))
}

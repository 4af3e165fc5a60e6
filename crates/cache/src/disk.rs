//! A disk tier for a request node's local cache: log-structured, bounded,
//! surviving restarts.
//!
//! Entries are appended to segment files (`seg-NNNNNNNN.log`); an in-memory
//! map points each key at its latest record. When the tier is over its size,
//! the oldest segment is deleted whole (FIFO eviction, no compaction: this
//! is a cache, losing cold entries is the point). On open, segments are
//! scanned oldest first to rebuild the map; a torn record at a tail (a crash
//! mid-append) fails its CRC and the segment is cut there. Nothing is
//! fsynced: a lost entry is only a miss.
//!
//! Record: `u32 magic | u32 crc32c(rest) | u16 key len | u8 kind | u8 0 |
//! u32 exptime | u32 value len | key | value`, kind 0 = value, 1 = tombstone.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

const MAGIC: u32 = 0x4B53_4443; // "CDSK"
const HEADER: usize = 20;

struct Loc {
    seg: u64,
    offset: u64,
    len: u32,
    exptime: u32,
}

struct Inner {
    dir: PathBuf,
    max_bytes: u64,
    seg_bytes: u64,
    /// Segment number -> (read handle, size).
    segs: std::collections::BTreeMap<u64, (File, u64)>,
    writer: File,
    current: u64,
    map: HashMap<Vec<u8>, Loc>,
}

/// The disk tier.
pub struct DiskTier {
    inner: Mutex<Inner>,
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:08}.log"))
}

fn encode(key: &[u8], value: &[u8], exptime: u32, kind: u8) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEADER + key.len() + value.len());
    r.extend_from_slice(&MAGIC.to_le_bytes());
    r.extend_from_slice(&[0; 4]);
    r.extend_from_slice(&(key.len() as u16).to_le_bytes());
    r.push(kind);
    r.push(0);
    r.extend_from_slice(&exptime.to_le_bytes());
    r.extend_from_slice(&(value.len() as u32).to_le_bytes());
    r.extend_from_slice(key);
    r.extend_from_slice(value);
    let crc = crc32c::crc32c(&r[8..]);
    r[4..8].copy_from_slice(&crc.to_le_bytes());
    r
}

impl DiskTier {
    /// Opens (or creates) the tier in `dir`, holding at most `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<DiskTier> {
        std::fs::create_dir_all(dir)?;
        let mut nums: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        nums.sort_unstable();
        let mut map: HashMap<Vec<u8>, Loc> = HashMap::new();
        let mut segs = std::collections::BTreeMap::new();
        for &n in &nums {
            let path = seg_path(dir, n);
            let f = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = f.metadata()?.len();
            let end = scan(&f, len, n, &mut map)?;
            if end < len {
                f.set_len(end)?;
            }
            segs.insert(n, (f, end));
        }
        let current = nums.last().map_or(1, |n| n + 1);
        let writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(seg_path(dir, current))?;
        segs.insert(current, (File::open(seg_path(dir, current))?, 0));
        let inner = Inner {
            dir: dir.to_owned(),
            max_bytes,
            seg_bytes: (max_bytes / 4).max(1 << 20),
            segs,
            writer,
            current,
            map,
        };
        Ok(DiskTier {
            inner: Mutex::new(inner),
        })
    }

    /// The value of `key` if present and not expired at `now`.
    pub fn get(&self, key: &[u8], now: u32) -> Option<(Bytes, u32)> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let loc = g.map.get(key)?;
        if loc.exptime != 0 && loc.exptime <= now {
            return None;
        }
        let (f, _) = g.segs.get(&loc.seg)?;
        let mut buf = vec![0u8; loc.len as usize];
        f.read_exact_at(&mut buf, loc.offset).ok()?;
        let (k, v, _, exptime) = decode(&buf)?;
        (k == key).then(|| (Bytes::copy_from_slice(v), exptime))
    }

    /// Stores `key` (exptime 0 = never).
    pub fn put(&self, key: &[u8], value: &[u8], exptime: u32) {
        self.append(key, value, exptime, 0);
    }

    /// Forgets `key` (survives restart: a tombstone is appended).
    pub fn delete(&self, key: &[u8]) {
        let present = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .contains_key(key);
        if present {
            self.append(key, &[], 0, 1);
        }
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.segs.values().map(|s| s.1).sum()
    }

    /// Entries indexed.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn append(&self, key: &[u8], value: &[u8], exptime: u32, kind: u8) {
        if key.len() > u16::MAX as usize {
            return;
        }
        let rec = encode(key, value, exptime, kind);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if rec.len() as u64 > g.max_bytes / 2 {
            return;
        }
        let cur = g.current;
        let offset = g.segs.get(&cur).map_or(0, |s| s.1);
        if g.writer.write_all(&rec).is_err() {
            return;
        }
        if let Some(s) = g.segs.get_mut(&cur) {
            s.1 += rec.len() as u64;
        }
        if kind == 1 {
            g.map.remove(key);
        } else {
            g.map.insert(
                key.to_vec(),
                Loc {
                    seg: cur,
                    offset,
                    len: rec.len() as u32,
                    exptime,
                },
            );
        }
        let _ = g.roll_and_evict();
    }
}

impl Inner {
    fn roll_and_evict(&mut self) -> std::io::Result<()> {
        let cur_size = self.segs.get(&self.current).map_or(0, |s| s.1);
        if cur_size >= self.seg_bytes {
            self.current += 1;
            let path = seg_path(&self.dir, self.current);
            self.writer = OpenOptions::new().create(true).append(true).open(&path)?;
            self.segs.insert(self.current, (File::open(&path)?, 0));
        }
        while self.segs.values().map(|s| s.1).sum::<u64>() > self.max_bytes && self.segs.len() > 1 {
            let Some((&oldest, _)) = self.segs.iter().next() else {
                break;
            };
            self.segs.remove(&oldest);
            self.map.retain(|_, l| l.seg != oldest);
            std::fs::remove_file(seg_path(&self.dir, oldest))?;
        }
        Ok(())
    }
}

fn decode(r: &[u8]) -> Option<(&[u8], &[u8], u8, u32)> {
    if r.len() < HEADER || u32::from_le_bytes(r[0..4].try_into().ok()?) != MAGIC {
        return None;
    }
    let klen = u16::from_le_bytes(r[8..10].try_into().ok()?) as usize;
    let kind = r[10];
    let exptime = u32::from_le_bytes(r[12..16].try_into().ok()?);
    let vlen = u32::from_le_bytes(r[16..20].try_into().ok()?) as usize;
    let end = HEADER + klen + vlen;
    if r.len() < end || crc32c::crc32c(&r[8..end]) != u32::from_le_bytes(r[4..8].try_into().ok()?) {
        return None;
    }
    Some((
        &r[HEADER..HEADER + klen],
        &r[HEADER + klen..end],
        kind,
        exptime,
    ))
}

/// Replays one segment into `map`; returns where valid records end.
fn scan(f: &File, len: u64, seg: u64, map: &mut HashMap<Vec<u8>, Loc>) -> std::io::Result<u64> {
    let mut all = vec![0u8; len as usize];
    f.read_exact_at(&mut all, 0)?;
    let mut off = 0usize;
    while off + HEADER <= all.len() {
        let klen = u16::from_le_bytes([all[off + 8], all[off + 9]]) as usize;
        let vlen = u32::from_le_bytes([all[off + 16], all[off + 17], all[off + 18], all[off + 19]])
            as usize;
        let end = off + HEADER + klen + vlen;
        if end > all.len() {
            break;
        }
        let Some((k, _, kind, exptime)) = decode(&all[off..end]) else {
            break;
        };
        if kind == 1 {
            map.remove(k);
        } else {
            map.insert(
                k.to_vec(),
                Loc {
                    seg,
                    offset: off as u64,
                    len: (end - off) as u32,
                    exptime,
                },
            );
        }
        off = end;
    }
    Ok(off as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "strata-disk-{}-{}",
            std::process::id(),
            crate::disk::tests::uniq()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn uniq() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn survives_restart_and_tombstones_stick() {
        let d = tmp();
        {
            let t = DiskTier::open(&d, 8 << 20).expect("open");
            t.put(b"a", b"1", 0);
            t.put(b"b", b"2", 0);
            t.put(b"a", b"3", 0);
            t.delete(b"b");
            t.put(b"old", b"x", 100);
        }
        let t = DiskTier::open(&d, 8 << 20).expect("reopen");
        assert_eq!(t.get(b"a", 50).map(|v| v.0), Some(Bytes::from_static(b"3")));
        assert_eq!(t.get(b"b", 50), None);
        assert!(t.get(b"old", 50).is_some());
        assert!(t.get(b"old", 100).is_none(), "expired");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn torn_tail_is_cut() {
        let d = tmp();
        {
            let t = DiskTier::open(&d, 8 << 20).expect("open");
            t.put(b"k1", b"v1", 0);
            t.put(b"k2", b"v2", 0);
        }
        let seg = seg_path(&d, 1);
        let len = std::fs::metadata(&seg).expect("meta").len();
        let f = OpenOptions::new().write(true).open(&seg).expect("open");
        f.set_len(len - 3).expect("cut");
        let t = DiskTier::open(&d, 8 << 20).expect("reopen");
        assert!(t.get(b"k1", 0).is_some());
        assert!(t.get(b"k2", 0).is_none());
        t.put(b"k3", b"v3", 0);
        assert!(t.get(b"k3", 0).is_some());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn stays_within_its_size() {
        let d = tmp();
        let max = 4 << 20;
        let t = DiskTier::open(&d, max).expect("open");
        let v = vec![7u8; 10_000];
        for i in 0..2000u32 {
            t.put(format!("k{i}").as_bytes(), &v, 0);
            assert!(t.bytes() <= max, "{} bytes", t.bytes());
        }
        assert!(t.get(b"k1999", 0).is_some(), "newest kept");
        assert!(t.get(b"k0", 0).is_none(), "oldest evicted");
        let _ = std::fs::remove_dir_all(&d);
    }
}

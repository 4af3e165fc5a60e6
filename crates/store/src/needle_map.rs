//! The in-RAM needle map: blob id -> (volume, offset, metadata and data
//! sizes), 14 bytes a blob.
//!
//! Blob ids come from the index's allocator, so they are dense and mostly
//! increasing. The map keeps them in sorted chunks of at most [`CHUNK`]
//! entries; each chunk stores its ids as deltas from a base id, with the
//! volume (`u16`) and a packed location (`u64`) in parallel arrays:
//! 4 + 2 + 8 = 14 bytes per blob plus a few bytes per chunk. A hash map of
//! the same data would cost 40+ bytes per blob. The key and the rest of
//! the metadata stay on disk, in the needle.
//!
//! Packing: the `u32` holds the id's delta (19 bits: a chunk spans at most
//! 2^19 ids) and the metadata's length in 8-byte words (13 bits: needles
//! pad it to a multiple of 8, so the data offset follows); the `u64` holds
//! `offset / 8` in the high 37 bits (needles are 8-byte aligned, so
//! volumes can reach 1 TiB) and the data size in the low 27 bits.

/// Entries per chunk. Big enough that per-chunk overhead is noise, small
/// enough that an insert in the middle shifts at most ~56 KiB.
pub const CHUNK: usize = 4096;

const SIZE_BITS: u32 = 27;
const SIZE_MASK: u64 = (1 << SIZE_BITS) - 1;
/// Bits of a metadata length in 8-byte words.
const META_BITS: u32 = 13;
/// Largest id delta within a chunk.
const MAX_DELTA: u64 = (1 << (32 - META_BITS)) - 1;
/// Largest addressable volume offset (exclusive).
pub const MAX_OFFSET: u64 = 1 << (64 - SIZE_BITS + 3);

/// Where a needle lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// Volume number.
    pub volume: u16,
    /// Byte offset of the needle in its volume (multiple of 8).
    pub offset: u64,
    /// Metadata bytes, rounded up to a multiple of 8 (0 in format 1).
    pub meta: u16,
    /// Data bytes (not the needle length).
    pub size: u32,
}

impl Loc {
    fn pack(self) -> u64 {
        debug_assert!(self.offset % 8 == 0 && self.offset < MAX_OFFSET);
        debug_assert!(u64::from(self.size) <= SIZE_MASK);
        ((self.offset >> 3) << SIZE_BITS) | u64::from(self.size)
    }
    fn unpack(volume: u16, packed: u64) -> Self {
        Loc {
            volume,
            offset: (packed >> SIZE_BITS) << 3,
            size: (packed & SIZE_MASK) as u32,
            meta: 0,
        }
    }

    /// The needle's length on disk.
    pub fn needle_len(&self) -> u64 {
        crate::needle::needle_len(self.meta, u64::from(self.size))
    }

    /// Where the data starts in the volume.
    pub fn data_offset(&self) -> u64 {
        self.offset + crate::needle::HEADER_LEN + u64::from(self.meta)
    }
}

/// A delta and a metadata length in one `u32`.
fn key(delta: u32, meta: u16) -> u32 {
    debug_assert!(u64::from(delta) <= MAX_DELTA && meta % 8 == 0);
    delta << META_BITS | u32::from(meta / 8)
}

fn delta_of(k: u32) -> u32 {
    k >> META_BITS
}

fn meta_of(k: u32) -> u16 {
    ((k & ((1 << META_BITS) - 1)) * 8) as u16
}

struct Chunk {
    base: u64,
    /// Delta and metadata words, see [`key`].
    deltas: Vec<u32>,
    vols: Vec<u16>,
    locs: Vec<u64>,
}

impl Chunk {
    fn new(base: u64) -> Self {
        Chunk {
            base,
            deltas: Vec::new(),
            vols: Vec::new(),
            locs: Vec::new(),
        }
    }
    fn len(&self) -> usize {
        self.deltas.len()
    }
    fn search(&self, id: u64) -> Result<usize, usize> {
        let d = (id - self.base) as u32;
        self.deltas.binary_search_by_key(&d, |k| delta_of(*k))
    }
    fn insert_at(&mut self, at: usize, id: u64, loc: Loc) {
        self.deltas
            .insert(at, key((id - self.base) as u32, loc.meta));
        self.vols.insert(at, loc.volume);
        self.locs.insert(at, loc.pack());
    }
    fn remove_at(&mut self, at: usize) {
        self.deltas.remove(at);
        self.vols.remove(at);
        self.locs.remove(at);
    }
    fn id_at(&self, at: usize) -> u64 {
        self.base + u64::from(delta_of(self.deltas[at]))
    }
    fn loc_at(&self, at: usize) -> Loc {
        Loc {
            meta: meta_of(self.deltas[at]),
            ..Loc::unpack(self.vols[at], self.locs[at])
        }
    }
    /// Moves the upper half into a new chunk based at its first id.
    fn split_off(&mut self) -> Chunk {
        let mid = self.len() / 2;
        let base = self.id_at(mid);
        let shift = (base - self.base) as u32;
        let deltas = self
            .deltas
            .split_off(mid)
            .into_iter()
            .map(|k| key(delta_of(k) - shift, meta_of(k)))
            .collect();
        let vols = self.vols.split_off(mid);
        let locs = self.locs.split_off(mid);
        Chunk {
            base,
            deltas,
            vols,
            locs,
        }
    }
    fn heap_bytes(&self) -> usize {
        self.deltas.capacity() * 4 + self.vols.capacity() * 2 + self.locs.capacity() * 8
    }
}

/// Sorted, chunked map from blob id to [`Loc`].
#[derive(Default)]
pub struct NeedleMap {
    /// Sorted by base; chunk i holds ids in `[base_i, base_{i+1})`, all within
    /// [`MAX_DELTA`] of `base_i`.
    chunks: Vec<Chunk>,
    len: usize,
}

impl NeedleMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live blobs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Index of the chunk whose range would hold `id`, if any.
    fn chunk_for(&self, id: u64) -> Option<usize> {
        let i = self.chunks.partition_point(|c| c.base <= id);
        i.checked_sub(1)
    }

    /// The location of `id`.
    pub fn get(&self, id: u64) -> Option<Loc> {
        let c = &self.chunks[self.chunk_for(id)?];
        if id - c.base > MAX_DELTA {
            return None;
        }
        let at = c.search(id).ok()?;
        Some(c.loc_at(at))
    }

    /// Inserts or replaces; returns the previous location.
    pub fn insert(&mut self, id: u64, loc: Loc) -> Option<Loc> {
        let ci = match self.chunk_for(id) {
            Some(ci) if id - self.chunks[ci].base <= MAX_DELTA => ci,
            // Below every chunk, or beyond the delta reach of its chunk:
            // start a chunk based at this id (it still sorts correctly,
            // because the next chunk's base is above `id`).
            found => {
                let at = found.map_or(0, |c| c + 1);
                self.chunks.insert(at, Chunk::new(id));
                at
            }
        };
        let c = &mut self.chunks[ci];
        let at = match c.search(id) {
            Ok(at) => {
                let old = c.loc_at(at);
                c.deltas[at] = key(delta_of(c.deltas[at]), loc.meta);
                c.vols[at] = loc.volume;
                c.locs[at] = loc.pack();
                return Some(old);
            }
            Err(at) => at,
        };
        if c.len() < CHUNK {
            c.insert_at(at, id, loc);
        } else if at == c.len() {
            // Appending past a full chunk (the common, increasing-id case):
            // open a new chunk instead of splitting, so chunks stay full.
            let mut n = Chunk::new(id);
            n.deltas.reserve_exact(CHUNK);
            n.vols.reserve_exact(CHUNK);
            n.locs.reserve_exact(CHUNK);
            n.insert_at(0, id, loc);
            self.chunks.insert(ci + 1, n);
        } else {
            let upper = c.split_off();
            if id >= upper.base {
                let mut upper = upper;
                let at = upper.search(id).unwrap_or_else(|e| e);
                upper.insert_at(at, id, loc);
                self.chunks.insert(ci + 1, upper);
            } else {
                c.insert_at(at, id, loc);
                self.chunks.insert(ci + 1, upper);
            }
        }
        self.len += 1;
        None
    }

    /// Removes `id`; returns where it was.
    pub fn remove(&mut self, id: u64) -> Option<Loc> {
        let ci = self.chunk_for(id)?;
        let c = &mut self.chunks[ci];
        if id - c.base > MAX_DELTA {
            return None;
        }
        let at = c.search(id).ok()?;
        let old = c.loc_at(at);
        c.remove_at(at);
        if c.len() == 0 {
            self.chunks.remove(ci);
        }
        self.len -= 1;
        Some(old)
    }

    /// Every entry in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Loc)> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| (0..c.len()).map(move |i| (c.id_at(i), c.loc_at(i))))
    }

    /// Heap bytes held by the map, capacity included (what RAM it costs).
    pub fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Chunk>()
            + self.chunks.iter().map(Chunk::heap_bytes).sum::<usize>()
    }

    /// Returns spare capacity to the allocator (after a bulk load).
    pub fn shrink(&mut self) {
        for c in &mut self.chunks {
            c.deltas.shrink_to_fit();
            c.vols.shrink_to_fit();
            c.locs.shrink_to_fit();
        }
        self.chunks.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn loc(i: u64) -> Loc {
        Loc {
            volume: (i % 7) as u16,
            meta: ((i % 300) * 8) as u16,
            offset: (i % (MAX_OFFSET / 8)) * 8,
            size: (i % 1000) as u32,
        }
    }

    /// Model-based: the map must agree with a BTreeMap under a random mix of
    /// sequential, random, far-apart inserts and removes.
    #[test]
    fn agrees_with_btreemap() {
        let mut m = NeedleMap::new();
        let mut model = BTreeMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..60_000u64 {
            let r = next();
            let id = match r % 10 {
                0..=4 => step,                    // increasing
                5..=6 => r % 20_000,              // dense random
                7 => r >> 8,                      // far apart
                _ => (r % 3) << 33 | (r % 5_000), // beyond a chunk's deltas
            };
            if r % 13 == 0 {
                assert_eq!(m.remove(id), model.remove(&id), "remove {id}");
            } else {
                let l = loc(r);
                assert_eq!(m.insert(id, l), model.insert(id, l), "insert {id}");
            }
            assert_eq!(m.len(), model.len());
        }
        for (id, l) in &model {
            assert_eq!(m.get(*id), Some(*l));
        }
        let all: Vec<_> = m.iter().collect();
        let want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(all, want);
        assert_eq!(m.get(u64::MAX), None);
    }

    #[test]
    fn packs_large_offsets_and_sizes() {
        let mut m = NeedleMap::new();
        let l = Loc {
            volume: 65535,
            meta: 65528,
            offset: 40 << 30,
            size: (1 << 27) - 1,
        };
        m.insert(5, l);
        assert_eq!(m.get(5), Some(l));
    }

    #[test]
    fn costs_under_16_bytes_per_blob_at_1m() {
        let mut m = NeedleMap::new();
        for id in 0..1_000_000u64 {
            m.insert(id * 3 + 1, loc(id));
        }
        let per = m.heap_bytes() as f64 / m.len() as f64;
        assert!(per <= 16.0, "{per} bytes per blob");
    }
}

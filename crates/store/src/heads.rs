//! Needle heads: what a store holds, read without reading the data.
//!
//! Each needle's header and metadata name the blob (its key, version and
//! record, written by the node) or, for a tombstone, why it was deleted.
//! `recover-index` rebuilds the name index from the heads of every store,
//! and garbage collection compares them with the index. Heads are read
//! from the volume mappings while the store serves; only needles that are
//! durable (published after their fsync) are reported.
//!
//! Wire form of a page (`GET /heads`), per head:
//!
//! ```text
//! u64 blob id | u8 flags (1 tombstone, 2 live) | u32 data size |
//! u16 metadata size | metadata
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::needle::{self, HEADER_LEN};
use crate::{Error, Result, Store};

/// One needle as [`Store::heads`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Blob id.
    pub id: u64,
    /// A tombstone (its metadata says why the blob was deleted).
    pub tombstone: bool,
    /// A data needle the store still serves (not deleted or replaced by a
    /// later copy of the same id).
    pub live: bool,
    /// Data bytes.
    pub size: u32,
    /// The metadata (empty for needles written before volume format 2).
    pub meta: Bytes,
}

/// One page of a volume's heads.
#[derive(Debug, Clone)]
pub struct HeadPage {
    /// The needles, in volume order.
    pub heads: Vec<Head>,
    /// Pass as `from` for the next page; `None` at the volume's end.
    pub next: Option<u64>,
    /// The volume's generation: a later page asked with another one is
    /// refused ([`Error::Moved`]), since compaction moved the needles.
    pub generation: u64,
}

const FLAG_TOMB: u8 = 1;
const FLAG_LIVE: u8 = 2;

/// Encodes heads for the wire.
pub fn encode(heads: &[Head]) -> Bytes {
    let mut out = BytesMut::with_capacity(heads.iter().map(|h| 15 + h.meta.len()).sum());
    for h in heads {
        out.put_u64_le(h.id);
        out.put_u8((u8::from(h.tombstone) * FLAG_TOMB) | (u8::from(h.live) * FLAG_LIVE));
        out.put_u32_le(h.size);
        out.put_u16_le(h.meta.len() as u16);
        out.put_slice(&h.meta);
    }
    out.freeze()
}

/// Decodes what [`encode`] made; `None` if it is cut short.
pub fn decode(mut b: Bytes) -> Option<Vec<Head>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 15 {
            return None;
        }
        let id = u64::from_le_bytes(b[..8].try_into().ok()?);
        let flags = b[8];
        let size = u32::from_le_bytes(b[9..13].try_into().ok()?);
        let m = usize::from(u16::from_le_bytes([b[13], b[14]]));
        if b.len() < 15 + m {
            return None;
        }
        let meta = b.slice(15..15 + m);
        out.push(Head {
            id,
            tombstone: flags & FLAG_TOMB != 0,
            live: flags & FLAG_LIVE != 0,
            size,
            meta,
        });
        b = b.slice(15 + m..);
    }
    Some(out)
}

impl Store {
    /// The metadata of live blob `id` (empty for a format 1 needle).
    pub fn meta(&self, id: u64) -> Result<Bytes> {
        let (loc, vol) = self.locate(id)?;
        let io = |e| Error::io(format!("read volume {}", loc.volume), e);
        let raw = vol.read_at(loc.offset, HEADER_LEN as usize).map_err(io)?;
        let h = needle::parse_header(&raw)
            .filter(|h| h.id == id)
            .ok_or(Error::Corrupt {
                id,
                volume: loc.volume,
                offset: loc.offset,
                reason: "needle names another blob",
            })?;
        vol.read_at(loc.offset + HEADER_LEN, usize::from(h.meta))
            .map_err(io)
    }

    /// Every volume and its generation, in order.
    pub fn volumes(&self) -> Vec<(u16, u64)> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        st.volumes
            .iter()
            .map(|(v, vol)| (*v, vol.generation))
            .collect()
    }

    /// Up to `limit` needle heads of volume `v` from byte `from` (0: the
    /// start). `generation`, when given, must still be the volume's.
    pub fn heads(
        &self,
        v: u16,
        from: u64,
        generation: Option<u64>,
        limit: usize,
    ) -> Result<HeadPage> {
        let (vol, end) = {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            let vol = st.volumes.get(&v).cloned().ok_or(Error::NoVolume(v))?;
            // Stats count published (durable) needles only.
            let end = crate::SUPERBLOCK_LEN + st.stats.get(&v).map_or(0, |s| s.total);
            (vol, end)
        };
        if generation.is_some_and(|g| g != vol.generation) {
            return Err(Error::Moved { volume: v });
        }
        let io = |e| Error::io(format!("read heads of volume {v}"), e);
        let mut at = from.max(crate::SUPERBLOCK_LEN);
        let mut found = Vec::new();
        while at < end && found.len() < limit {
            let raw = vol.read_at(at, HEADER_LEN as usize).map_err(io)?;
            let h = needle::parse_header(&raw).ok_or(Error::Corrupt {
                id: 0,
                volume: v,
                offset: at,
                reason: "bad magic",
            })?;
            let meta = vol
                .read_at(at + HEADER_LEN, usize::from(h.meta))
                .map_err(io)?;
            found.push((at, h, meta));
            at += h.disk_len();
        }
        // Liveness in one pass under the lock, after the reads.
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let heads = found
            .into_iter()
            .map(|(offset, h, meta)| Head {
                id: h.id,
                tombstone: h.is_tombstone(),
                live: !h.is_tombstone()
                    && st
                        .map
                        .get(h.id)
                        .is_some_and(|l| l.volume == v && l.offset == offset),
                size: h.size,
                // Copied out of the mapping: a page of heads kept by a
                // slow reader must not keep a compacted volume's file
                // mapped (metadata is a few hundred bytes a needle).
                meta: Bytes::copy_from_slice(&meta),
            })
            .collect();
        Ok(HeadPage {
            heads,
            next: (at < end).then_some(at),
            generation: vol.generation,
        })
    }
}

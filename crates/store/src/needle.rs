//! The needle: one blob (or tombstone) as it sits in a volume file.
//!
//! ```text
//! 0   u32 magic   0x4E44_5453 ("STDN" little-endian)
//! 4   u32 cookie  write time mixed with the id; not secret and not
//!                 checked by reads (covered by the CRC)
//! 8   u64 blob id
//! 16  u8  flags   0 = data, 1 = tombstone
//! 17  1   reserved (zero)
//! 18  u16 meta    metadata bytes (format 2; zero in format 1)
//! 20  u32 size    data bytes
//! 24  metadata    `meta` bytes, opaque here: the node's record of the
//!                 key (see `index::NeedleMeta`), then zeros to a multiple
//!                 of 8 (so the needle map keeps its length in 13 bits and
//!                 the data starts 8-byte aligned)
//! ..  data        `size` bytes
//! ..  u32 crc32c  over bytes 4 .. end of data (cookie, header, metadata,
//!                 data)
//! ..  u32 footer  0x5354_444E
//! ..  zero padding to a multiple of 8
//! ```
//! All integers are little-endian. Format 1 needles are format 2 needles
//! with no metadata (the two bytes were reserved and zero), so one parser
//! reads both. The total length is a function of the metadata and data
//! sizes ([`needle_len`]), which is all the needle map keeps.

use bytes::{BufMut, Bytes, BytesMut};

/// First four bytes of every needle.
pub const MAGIC: u32 = 0x4E44_5453;
/// Four bytes after the CRC.
pub const FOOTER: u32 = 0x5354_444E;
/// Bytes before the data.
pub const HEADER_LEN: u64 = 24;
/// CRC and footer.
pub const TRAILER_LEN: u64 = 8;
/// Flag: this needle deletes the blob id it names.
pub const FLAG_TOMBSTONE: u8 = 1;
/// Largest data size: sizes live in 27 bits of the needle map.
pub const MAX_DATA: u64 = (1 << 27) - 1;
/// Largest metadata size (a multiple of 8 that fits 16 bits).
pub const MAX_META: usize = 65_528;

/// Bytes the metadata takes on disk: rounded up to a multiple of 8.
pub fn meta_room(meta: u16) -> u16 {
    ((u32::from(meta) + 7) & !7).min(MAX_META as u32) as u16
}

/// On-disk length of a needle holding `meta` metadata and `size` data
/// bytes, padding included.
pub fn needle_len(meta: u16, size: u64) -> u64 {
    (HEADER_LEN + u64::from(meta_room(meta)) + size + TRAILER_LEN + 7) & !7
}

/// A needle's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Random per write.
    pub cookie: u32,
    /// The blob id.
    pub id: u64,
    /// [`FLAG_TOMBSTONE`] or 0.
    pub flags: u8,
    /// Metadata bytes that follow the header.
    pub meta: u16,
    /// Data bytes that follow the metadata.
    pub size: u32,
}

impl Header {
    /// True for a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }

    /// The whole needle's length on disk.
    pub fn disk_len(&self) -> u64 {
        needle_len(self.meta, u64::from(self.size))
    }

    /// Offset of the data from the needle's start.
    pub fn data_offset(&self) -> u64 {
        HEADER_LEN + u64::from(meta_room(self.meta))
    }
}

/// Appends the encoded needle to `out`.
pub fn encode_into(out: &mut BytesMut, h: &Header, meta: &[u8], data: &[u8]) {
    debug_assert_eq!(h.size as usize, data.len());
    debug_assert_eq!(h.meta as usize, meta.len());
    let start = out.len();
    out.reserve(h.disk_len() as usize);
    out.put_u32_le(MAGIC);
    out.put_u32_le(h.cookie);
    out.put_u64_le(h.id);
    out.put_u8(h.flags);
    out.put_u8(0);
    out.put_u16_le(h.meta);
    out.put_u32_le(h.size);
    out.put_slice(meta);
    out.put_bytes(0, usize::from(meta_room(h.meta)) - meta.len());
    out.put_slice(data);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out.put_u32_le(crc);
    out.put_u32_le(FOOTER);
    let pad = h.disk_len() as usize - (out.len() - start);
    out.put_bytes(0, pad);
}

/// Parses a header from the first 24 bytes; `None` if the magic is wrong.
pub fn parse_header(buf: &[u8]) -> Option<Header> {
    if buf.len() < HEADER_LEN as usize || le32(buf, 0) != MAGIC {
        return None;
    }
    Some(Header {
        cookie: le32(buf, 4),
        id: le64(buf, 8),
        flags: buf[16],
        meta: u16::from_le_bytes([buf[18], buf[19]]),
        size: le32(buf, 20),
    })
}

/// Why a full needle failed to verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Shorter than its header says.
    Truncated,
    /// Wrong leading magic.
    Magic,
    /// Wrong trailing magic.
    Footer,
    /// Data does not match its CRC.
    Crc,
}

impl Invalid {
    /// Human-readable reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Truncated => "truncated",
            Invalid::Magic => "bad magic",
            Invalid::Footer => "bad footer",
            Invalid::Crc => "crc mismatch",
        }
    }
}

/// A verified needle: header, metadata and data (zero-copy slices).
#[derive(Debug, Clone)]
pub struct Needle {
    /// Its header.
    pub header: Header,
    /// Its metadata (empty in format 1).
    pub meta: Bytes,
    /// Its data.
    pub data: Bytes,
}

/// Verifies a whole needle (`buf` = exactly its on-disk bytes or more).
pub fn decode(buf: &Bytes) -> Result<Needle, Invalid> {
    let h = parse_header(buf).ok_or(if buf.len() < HEADER_LEN as usize {
        Invalid::Truncated
    } else {
        Invalid::Magic
    })?;
    let data_at = h.data_offset() as usize;
    let end = data_at + h.size as usize;
    if buf.len() < end + TRAILER_LEN as usize {
        return Err(Invalid::Truncated);
    }
    if le32(buf, end + 4) != FOOTER {
        return Err(Invalid::Footer);
    }
    if crc32c::crc32c(&buf[4..end]) != le32(buf, end) {
        return Err(Invalid::Crc);
    }
    Ok(Needle {
        header: h,
        meta: buf.slice(HEADER_LEN as usize..HEADER_LEN as usize + usize::from(h.meta)),
        data: buf.slice(data_at..end),
    })
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_padding() {
        for (meta, size) in [
            (0usize, 0usize),
            (0, 1),
            (3, 7),
            (0, 8),
            (9, 9),
            (40, 100),
            (1, 4096),
        ] {
            let data: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let m: Vec<u8> = (0..meta).map(|i| 200 - i as u8).collect();
            let h = Header {
                cookie: 7,
                id: 99,
                flags: 0,
                meta: meta as u16,
                size: size as u32,
            };
            let mut b = BytesMut::new();
            encode_into(&mut b, &h, &m, &data);
            assert_eq!(b.len() as u64, needle_len(meta as u16, size as u64));
            assert_eq!(b.len() % 8, 0);
            let n = decode(&b.freeze()).expect("decode");
            assert_eq!(n.header, h);
            assert_eq!(&n.meta[..], &m[..]);
            assert_eq!(&n.data[..], &data[..]);
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let h = Header {
            cookie: 1,
            id: 2,
            flags: 0,
            meta: 3,
            size: 5,
        };
        let mut b = BytesMut::new();
        encode_into(&mut b, &h, b"key", b"hello");
        let len = HEADER_LEN as usize + 8 + TRAILER_LEN as usize;
        for byte in 0..len {
            for bit in 0..8 {
                let mut c = b.clone();
                c[byte] ^= 1 << bit;
                assert!(decode(&c.freeze()).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn truncation_is_caught() {
        let h = Header {
            cookie: 1,
            id: 2,
            flags: 0,
            meta: 0,
            size: 100,
        };
        let mut b = BytesMut::new();
        encode_into(&mut b, &h, &[], &[9u8; 100]);
        let full = b.freeze();
        for cut in 0..(HEADER_LEN as usize + 100 + TRAILER_LEN as usize) {
            assert!(decode(&full.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}

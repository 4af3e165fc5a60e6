//! [`NeedleMeta`]: what a node writes into every needle besides the data,
//! so that the name index can be rebuilt from the stores alone
//! (`strata recover-index`): the key and its record for a blob, and for a
//! tombstone why the copy went away.
//!
//! Binary, little-endian, every string a `u16` length then UTF-8 bytes
//! (docs/formats.md):
//!
//! ```text
//! u8  format (2; 1 is read too: it ends after the page)
//! u8  kind: 0 blob, 1 deleted (the key was deleted), 2 dropped (this copy
//!     was removed: replaced by a newer put, or a stray)
//! u64 commit number (0: not known when written)
//! u64 created, Unix ms
//! str key
//! blob only:
//!   str content type | str etag | u16 tag count, str per tag |
//!   u8 page: 0 none; 1 then str book, u64 page number; 2 the same and
//!     str text key (the blob holding the page's words)
//!   format 2 only:
//!   u16 header count, str name and str value per header |
//!   u8 1 when the blob's data is a chunked object's manifest (JSON list
//!     of `{"key", "size"}`), else 0
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::meta::{BlobMeta, PageRef};

const FORMAT: u8 = 2;
/// The format before response headers and manifests.
const FORMAT_1: u8 = 1;

/// Why a needle exists, as its metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A blob under the key (its record, replicas aside), and whether its
    /// data is a chunked object's manifest.
    Blob(Box<BlobMeta>, bool),
    /// A tombstone: the key was deleted.
    Deleted,
    /// A tombstone: this copy went away, the key stays (a newer put
    /// replaced it, or it was a stray copy).
    Dropped,
}

/// The metadata of one needle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedleMeta {
    /// The key.
    pub key: String,
    /// The commit number of the change that wrote the needle.
    pub version: u64,
    /// When it was written, Unix ms.
    pub created_ms: u64,
    /// What the needle is.
    pub kind: Kind,
}

fn put_str(out: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.put_u16_le(b.len() as u16);
    out.put_slice(b);
}

fn get_str(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = usize::from(b.get_u16_le());
    if b.remaining() < n {
        return None;
    }
    String::from_utf8(b.split_to(n).to_vec()).ok()
}

impl NeedleMeta {
    /// The metadata of a blob's needle.
    pub fn blob(key: &str, meta: &BlobMeta) -> NeedleMeta {
        NeedleMeta {
            key: key.to_owned(),
            version: meta.version,
            created_ms: meta.created_ms,
            kind: Kind::Blob(Box::new(meta.clone()), !meta.chunks.is_empty()),
        }
    }

    /// Encodes it for the needle.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + self.key.len());
        out.put_u8(FORMAT);
        out.put_u8(match self.kind {
            Kind::Blob(..) => 0,
            Kind::Deleted => 1,
            Kind::Dropped => 2,
        });
        out.put_u64_le(self.version);
        out.put_u64_le(self.created_ms);
        put_str(&mut out, &self.key);
        if let Kind::Blob(m, _) = &self.kind {
            put_str(&mut out, &m.content_type);
            put_str(&mut out, &m.etag);
            out.put_u16_le(m.tags.len() as u16);
            for t in &m.tags {
                put_str(&mut out, t);
            }
            match &m.page {
                None => out.put_u8(0),
                Some(p) => {
                    out.put_u8(if p.text_key.is_some() { 2 } else { 1 });
                    put_str(&mut out, &p.book);
                    out.put_u64_le(p.page);
                    if let Some(k) = &p.text_key {
                        put_str(&mut out, k);
                    }
                }
            }
            out.put_u16_le(m.headers.len() as u16);
            for (name, value) in &m.headers {
                put_str(&mut out, name);
                put_str(&mut out, value);
            }
            out.put_u8(u8::from(!m.chunks.is_empty()));
        }
        out.freeze()
    }

    /// Decodes a needle's metadata of blob `id` holding `size` bytes;
    /// `None` when it is empty (a needle of volume format 1) or not ours.
    pub fn decode(raw: &Bytes, id: u64, size: u64) -> Option<NeedleMeta> {
        let mut b = raw.clone();
        if b.remaining() < 18 {
            return None;
        }
        let format = b.get_u8();
        if format != FORMAT && format != FORMAT_1 {
            return None;
        }
        let kind = b.get_u8();
        let version = b.get_u64_le();
        let created_ms = b.get_u64_le();
        let key = get_str(&mut b)?;
        let kind = match kind {
            0 => {
                let content_type = get_str(&mut b)?;
                let etag = get_str(&mut b)?;
                if b.remaining() < 2 {
                    return None;
                }
                let n = b.get_u16_le();
                let tags = (0..n)
                    .map(|_| get_str(&mut b))
                    .collect::<Option<Vec<_>>>()?;
                if b.remaining() < 1 {
                    return None;
                }
                let page = match b.get_u8() {
                    0 => None,
                    with @ (1 | 2) => {
                        let book = get_str(&mut b)?;
                        if b.remaining() < 8 {
                            return None;
                        }
                        let page = b.get_u64_le();
                        let text_key = match with {
                            2 => Some(get_str(&mut b)?),
                            _ => None,
                        };
                        Some(PageRef {
                            book,
                            page,
                            text_key,
                        })
                    }
                    _ => return None,
                };
                let mut headers = Vec::new();
                let mut chunked = false;
                if format == FORMAT {
                    if b.remaining() < 2 {
                        return None;
                    }
                    let n = b.get_u16_le();
                    for _ in 0..n {
                        headers.push((get_str(&mut b)?, get_str(&mut b)?));
                    }
                    // A manifest's chunks are in the needle's data, which
                    // the caller reads; the list is left empty here.
                    if b.remaining() < 1 {
                        return None;
                    }
                    chunked = b.get_u8() == 1;
                }
                Kind::Blob(
                    Box::new(BlobMeta {
                        id,
                        size,
                        etag,
                        content_type,
                        created_ms,
                        replicas: Vec::new(),
                        tags,
                        version,
                        page,
                        headers,
                        chunks: Vec::new(),
                    }),
                    chunked,
                )
            }
            1 => Kind::Deleted,
            2 => Kind::Dropped,
            _ => return None,
        };
        Some(NeedleMeta {
            key,
            version,
            created_ms,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_and_tombstone_metadata_round_trip() {
        let m = BlobMeta {
            id: 42,
            size: 1234,
            etag: "\"00ff\"".into(),
            content_type: "image/png".into(),
            created_ms: 1_700_000_000_000,
            replicas: Vec::new(),
            tags: vec!["cats".into(), "ünïcode".into()],
            version: 77,
            headers: vec![
                ("x-amz-meta-owner".into(), "José".into()),
                ("cache-control".into(), "max-age=60".into()),
            ],
            page: Some(PageRef {
                book: "moby".into(),
                page: 3,
                text_key: Some(".strata/text/photos/ç/1.png".into()),
            }),
            ..Default::default()
        };
        let n = NeedleMeta::blob("photos/ç/1.png", &m);
        let raw = n.encode();
        assert_eq!(NeedleMeta::decode(&raw, 42, 1234), Some(n));
        // A page written before its text was stored has no text key.
        let mut old = m.clone();
        old.page.as_mut().unwrap().text_key = None;
        let n = NeedleMeta::blob("p.png", &old);
        assert_eq!(NeedleMeta::decode(&n.encode(), 42, 1234), Some(n));
        for kind in [Kind::Deleted, Kind::Dropped] {
            let t = NeedleMeta {
                key: "k".into(),
                version: 9,
                created_ms: 5,
                kind,
            };
            assert_eq!(NeedleMeta::decode(&t.encode(), 1, 0), Some(t));
        }
        // Format 1 needles carry nothing; cut or foreign bytes are refused.
        assert_eq!(NeedleMeta::decode(&Bytes::new(), 1, 0), None);
        for cut in 0..raw.len() {
            assert_eq!(
                NeedleMeta::decode(&raw.slice(..cut), 42, 1234),
                None,
                "cut {cut}"
            );
        }
    }
}

//! GET and HEAD of a blob as a value: status, header lines, body.
//!
//! One implementation of the read answer (304, 206, 416, 404, the body) for
//! two callers: the HTTP API renders an [`Answer`] through axum, and a
//! caller in the same process (`serve`'s gateway) writes it to its client
//! socket as it is — no request or response objects, no header map.
//!
//! The fast case is [`Node::get_now`]: the key is in the ready set
//! ([`crate::ready`]) and its bytes are in a store of this process, so the
//! answer is a lookup and a slice of the volume's mapping, without waiting
//! (`serve`'s gateway asks it first). [`Node::get`] is the general case:
//! the lookup when the key is not ready, and the bytes through the cache
//! tiers, collapsed with concurrent reads of the same blob.
//!
//! CRC policy: a whole-blob read from a store verifies the needle's CRC.
//! Once a blob was read whole through its ready entry (verified by the
//! store, then or when it entered the cache), [`Node::get_now`] sends the
//! mapped bytes unverified. What that
//! trades: a bit flipped on disk after the first read is sent until the
//! entry leaves the set or the scrub (which re-reads every needle on its
//! schedule) finds it, instead of being caught per read — for not reading
//! every byte twice (the CRC pass was ~2.5% of a read's CPU). Range reads
//! were never verified (the CRC covers the whole needle).

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use store::range::{parse_range, RangeAsk};

use crate::keys::{percent_decode, validate_key};
use crate::ready::Ready;
use crate::{Error, Node};

/// What a GET or HEAD asks beyond the key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    /// HEAD: the same answer without a body.
    pub head: bool,
    /// The `If-None-Match` header.
    pub if_none_match: Option<&'a str>,
    /// The `Range` header.
    pub range: Option<&'a str>,
    /// The caller can send a streamed body ([`Answer::Stream`]): big blobs
    /// of remote stores start going out before they have all arrived.
    pub stream: bool,
    /// The caller can send a range of a volume file ([`Answer::Extent`],
    /// with `sendfile`) rather than bytes.
    pub extent: bool,
    /// Read a store in this process straight from its mapping, and take
    /// metadata from the index itself when the ready set is there to keep
    /// it: no cache fill, no collapsing (`serve`'s gateway: for a mapped
    /// store and an embedded index both cost more than they save; the
    /// node's HTTP API keeps the tiers, which remote stores need).
    pub mapped: bool,
}

/// The answer to a GET or HEAD.
pub enum Answer {
    /// 200, 206 or 304 for a blob.
    Blob {
        /// The status.
        status: u16,
        /// The key's metadata and header lines.
        entry: Arc<Ready>,
        /// The bytes sent of a 206.
        range: Option<(u64, u64)>,
        /// The body (empty for HEAD and 304).
        body: Bytes,
    },
    /// A 200 or 206 whose body is a range of a volume file in this process.
    Extent {
        /// The status.
        status: u16,
        /// The key's metadata and header lines.
        entry: Arc<Ready>,
        /// The bytes sent of a 206.
        range: Option<(u64, u64)>,
        /// Where the body lies.
        extent: store::Extent,
    },
    /// A 200 or 206 whose body arrives while it is sent (a big blob of a
    /// remote store, an object stored in chunks).
    Stream {
        /// The status.
        status: u16,
        /// The key's metadata and header lines.
        entry: Arc<Ready>,
        /// The bytes sent of a 206.
        range: Option<(u64, u64)>,
        /// The body.
        body: crate::StreamBody,
    },
    /// An error, sent as JSON `{error, detail}`.
    Error {
        /// The status.
        status: u16,
        /// The `error` field.
        code: &'static str,
        /// The `detail` field.
        detail: String,
        /// The blob's size, for a 416's `Content-Range: bytes */size`.
        size: Option<u64>,
    },
}

const JSON_LINES: &[u8] = b"content-type: application/json\r\n";

impl Answer {
    fn error(status: u16, code: &'static str, detail: impl Into<String>) -> Answer {
        Answer::Error {
            status,
            code,
            detail: detail.into(),
            size: None,
        }
    }

    fn from_tier(e: Error) -> Answer {
        match e {
            Error::NotFound => Answer::error(404, "not_found", "no such blob"),
            Error::Rejected { .. } => Answer::error(400, "rejected", e.to_string()),
            Error::Incomplete(_) => Answer::error(400, "incomplete_body", e.to_string()),
            Error::NotEnoughStores { .. }
            | Error::Unavailable { .. }
            | Error::Full { .. }
            | Error::Corrupt { .. } => Answer::error(503, "unavailable", e.to_string()),
        }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Blob { status, .. }
            | Answer::Extent { status, .. }
            | Answer::Stream { status, .. }
            | Answer::Error { status, .. } => *status,
        }
    }

    /// Header lines, each `name: value\r\n`: neither `Content-Length` nor
    /// `Content-Range` (see [`Answer::content_range`]).
    pub fn lines(&self) -> Bytes {
        match self {
            Answer::Blob {
                status: 304, entry, ..
            } => entry.validator_lines(),
            Answer::Blob { entry, .. }
            | Answer::Extent { entry, .. }
            | Answer::Stream { entry, .. } => entry.lines(),
            Answer::Error { .. } => Bytes::from_static(JSON_LINES),
        }
    }

    /// The `Content-Range` value of a 206 or 416.
    pub fn content_range(&self) -> Option<String> {
        match self {
            Answer::Blob {
                range: Some((a, z)),
                entry,
                ..
            }
            | Answer::Extent {
                range: Some((a, z)),
                entry,
                ..
            }
            | Answer::Stream {
                range: Some((a, z)),
                entry,
                ..
            } => Some(format!("bytes {a}-{}/{}", z - 1, entry.meta.size)),
            Answer::Error {
                size: Some(size), ..
            } => Some(format!("bytes */{size}")),
            _ => None,
        }
    }

    /// The `Content-Length` to send (`None` for a 304).
    pub fn length(&self) -> Option<u64> {
        match self {
            Answer::Blob { status: 304, .. } => None,
            Answer::Blob {
                range: Some((a, z)),
                ..
            }
            | Answer::Extent {
                range: Some((a, z)),
                ..
            }
            | Answer::Stream {
                range: Some((a, z)),
                ..
            } => Some(z - a),
            Answer::Blob { entry, .. }
            | Answer::Extent { entry, .. }
            | Answer::Stream { entry, .. } => Some(entry.meta.size),
            Answer::Error { .. } => Some(self.error_body().len() as u64),
        }
    }

    fn error_body(&self) -> Bytes {
        match self {
            Answer::Error { code, detail, .. } => {
                Bytes::from(serde_json::json!({ "error": code, "detail": detail }).to_string())
            }
            _ => Bytes::new(),
        }
    }

    /// Where the body lies, for an [`Answer::Extent`].
    pub fn extent(&self) -> Option<&store::Extent> {
        match self {
            Answer::Extent { extent, .. } => Some(extent),
            _ => None,
        }
    }

    /// The body (empty for HEAD and 304, for a stream and an extent).
    pub fn body(&self) -> Bytes {
        match self {
            Answer::Blob { body, .. } => body.clone(),
            Answer::Stream { .. } | Answer::Extent { .. } => Bytes::new(),
            Answer::Error { .. } => self.error_body(),
        }
    }
}

/// The key a blob path names (`/v1/blobs/{key}`, percent-encoded, with an
/// optional `?w=` thumbnail width); `Err` is the 400 to answer.
pub fn blob_key<'a>(path: &'a str, query: Option<&str>) -> Result<Cow<'a, str>, Answer> {
    let raw = path.strip_prefix("/v1/blobs/").unwrap_or_default();
    let key: Cow<'a, str> = if raw.contains('%') {
        match percent_decode(raw)
            .and_then(|b| String::from_utf8(b).map_err(|_| "key is not UTF-8".to_string()))
        {
            Ok(k) => Cow::Owned(k),
            Err(d) => return Err(Answer::error(400, "bad_key", d)),
        }
    } else {
        Cow::Borrowed(raw)
    };
    // `?w=128`: the thumbnail of that width, once a worker made it.
    let width = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("w=")));
    Ok(match width.map(str::parse::<u32>) {
        None => key,
        Some(Ok(w)) if w > 0 => Cow::Owned(crate::thumbs::thumb_key(&key, w)),
        Some(_) => {
            return Err(Answer::error(
                400,
                "bad_width",
                "w must be a positive integer",
            ))
        }
    })
}

fn etag_matches(header_value: &str, etag: &str) -> bool {
    header_value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

/// What to send of a blob, before its bytes are read.
enum Plan {
    Done(Answer),
    Read {
        status: u16,
        range: Option<(u64, u64)>,
    },
}

fn plan(entry: &Arc<Ready>, ask: &Ask<'_>) -> Plan {
    let meta = &entry.meta;
    if ask
        .if_none_match
        .is_some_and(|inm| etag_matches(inm, &meta.etag))
    {
        return Plan::Done(Answer::Blob {
            status: 304,
            entry: entry.clone(),
            range: None,
            body: Bytes::new(),
        });
    }
    let (status, range) = match parse_range(ask.range, meta.size) {
        RangeAsk::Full => (200, None),
        RangeAsk::Part(a, b) => (206, Some((a, b))),
        RangeAsk::Unsatisfiable => {
            return Plan::Done(Answer::Error {
                status: 416,
                code: "bad_range",
                detail: format!("blob is {} bytes", meta.size),
                size: Some(meta.size),
            })
        }
    };
    if ask.head {
        return Plan::Done(Answer::Blob {
            status,
            entry: entry.clone(),
            range,
            body: Bytes::new(),
        });
    }
    Plan::Read { status, range }
}

impl Node {
    /// The answer to a GET or HEAD of `key` when it needs no waiting: the
    /// key is in the ready set and its first healthy replica is a store in
    /// this process (or no bytes are needed). `None`: ask [`Node::get`].
    pub fn get_now(&self, key: &str, ask: &Ask<'_>) -> Option<Answer> {
        let entry = self.caching.as_ref()?.ready.as_ref()?.get(key)?;
        let answer = match plan(&entry, ask) {
            Plan::Done(a) => a,
            // An object in chunks is read chunk by chunk: `get`.
            Plan::Read { .. } if !entry.meta.chunks.is_empty() => return None,
            Plan::Read { status, range }
                if ask.extent && entry.verified.load(Ordering::Relaxed) =>
            {
                let extent = self.extent_of(&entry, range)?;
                self.metrics
                    .bytes_out
                    .fetch_add(extent.len, Ordering::Relaxed);
                Answer::Extent {
                    status,
                    entry,
                    range,
                    extent,
                }
            }
            Plan::Read { status, range } => {
                let body = self.read_mapped(&entry, range)?.ok()?;
                self.metrics
                    .bytes_out
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                Answer::Blob {
                    status,
                    entry,
                    range,
                    body,
                }
            }
        };
        self.metrics.gets.fetch_add(1, Ordering::Relaxed);
        Some(answer)
    }

    /// Reads from the blob's first replica if it is a healthy store in this
    /// process; `None` otherwise. Verifies the CRC on the first whole read
    /// through this entry (see the module doc).
    fn read_mapped(
        &self,
        entry: &Ready,
        range: Option<(u64, u64)>,
    ) -> Option<crate::Result<Bytes>> {
        let meta = &entry.meta;
        let i = self.first_up(entry)?;
        let verify = range.is_none() && !entry.verified.load(Ordering::Relaxed);
        let r = self.stores[i].handle.get_mapped(
            &self.stores[i].name,
            meta.id,
            range.unwrap_or((0, meta.size)),
            verify,
        )?;
        if verify && r.is_ok() {
            entry.verified.store(true, Ordering::Relaxed);
        }
        Some(r)
    }

    /// Where the whole blob lies in its first replica, when that is a
    /// healthy store in this process; verifies the CRC when this entry has
    /// not been read whole yet. `None` (also on a failed check): read it
    /// the general way, which fails over.
    fn whole_extent(&self, entry: &Ready) -> Option<store::Extent> {
        if entry.verified.load(Ordering::Relaxed) {
            return self.extent_of(entry, None);
        }
        let i = self.first_up(entry)?;
        let extent = self.stores[i]
            .handle
            .verified_extent(&self.stores[i].name, entry.meta.id)?
            .ok()?;
        entry.verified.store(true, Ordering::Relaxed);
        Some(extent)
    }

    /// Where `range` (or the whole blob) of the entry's first replica lies,
    /// when that is a healthy store in this process; unverified.
    fn extent_of(&self, entry: &Ready, range: Option<(u64, u64)>) -> Option<store::Extent> {
        let i = self.first_up(entry)?;
        let meta = &entry.meta;
        self.stores[i]
            .handle
            .extent(
                &self.stores[i].name,
                meta.id,
                range.unwrap_or((0, meta.size)),
            )?
            .ok()
    }

    /// The blob's first replica if that store is up (in this process or
    /// not: the caller's read tells).
    fn first_up(&self, entry: &Ready) -> Option<usize> {
        let first = entry.meta.replicas.first()?;
        let i = self.stores.iter().position(|s| &s.name == first)?;
        self.health.is_up(i).then_some(i)
    }

    /// The answer to a GET or HEAD of `key` (validated here).
    pub async fn get(self: &Arc<Self>, key: &str, ask: &Ask<'_>) -> Answer {
        if let Err(d) = validate_key(key) {
            return Answer::error(400, "bad_key", d);
        }
        self.metrics.gets.fetch_add(1, Ordering::Relaxed);
        let mut fresh = false;
        loop {
            let entry = match self.ready_entry(key, fresh, ask.mapped).await {
                Ok(Some(h)) => h,
                Ok(None) => return Answer::error(404, "not_found", format!("no blob {key:?}")),
                Err(e) => return Answer::from_tier(e),
            };
            let (status, range) = match plan(&entry, ask) {
                Plan::Done(a) => return a,
                Plan::Read { status, range } => (status, range),
            };
            if !entry.meta.chunks.is_empty() {
                // Too big for one blob: streamed chunk by chunk whatever
                // the caller asked (both callers can send a stream).
                let (a, z) = range.unwrap_or((0, entry.meta.size));
                let pieces = self.read_object(entry.meta.clone(), a, z);
                self.metrics.bytes_out.fetch_add(z - a, Ordering::Relaxed);
                return Answer::Stream {
                    status,
                    entry,
                    range,
                    body: crate::StreamBody::from_pieces(pieces, z - a),
                };
            }
            if ask.stream && range.is_none() {
                match self.read_streaming(&entry.meta).await {
                    Some(Ok(body)) => {
                        return Answer::Stream {
                            status,
                            entry,
                            range,
                            body,
                        }
                    }
                    Some(Err(e)) => return Answer::from_tier(e),
                    None => {}
                }
            }
            if ask.mapped && ask.extent && range.is_none() {
                // The whole blob from a store in this process: verified
                // once (reading the mapped bytes), then sent by the kernel
                // like every later read (`get_now`); copying it through
                // user space cost a first read about a fifth of its time.
                if let Some(extent) = self.whole_extent(&entry) {
                    self.metrics
                        .bytes_out
                        .fetch_add(extent.len, Ordering::Relaxed);
                    return Answer::Extent {
                        status,
                        entry,
                        range,
                        extent,
                    };
                }
            }
            let mapped = if ask.mapped {
                // A failed mapped read (gone, corrupt) falls back to the
                // tiers, which fail over to other replicas.
                self.read_mapped(&entry, range).and_then(Result::ok)
            } else {
                None
            };
            let read = match mapped {
                Some(body) => Ok(body),
                // Through the cache tiers, collapsed with concurrent reads
                // of the same blob, failing over between replicas.
                None => self.read(&entry.meta, range).await,
            };
            match read {
                Ok(body) => {
                    if range.is_none() {
                        // Verified by the store when read whole (now, or
                        // when it entered the cache).
                        entry.verified.store(true, Ordering::Relaxed);
                    }
                    self.metrics
                        .bytes_out
                        .fetch_add(body.len() as u64, Ordering::Relaxed);
                    return Answer::Blob {
                        status,
                        entry,
                        range,
                        body,
                    };
                }
                Err(e) => {
                    // A cached copy of the metadata may name a blob an
                    // overwrite elsewhere already removed: if the index now
                    // says otherwise, answer again from scratch (once).
                    if !fresh && self.caching.is_some() {
                        if let Ok(now) = self.relookup(key).await {
                            if now.as_ref().map(|m| m.id) != Some(entry.meta.id) {
                                fresh = true;
                                continue;
                            }
                        }
                    }
                    return Answer::from_tier(e);
                }
            }
        }
    }

    /// `key`'s ready entry: from the ready set (unless `fresh`), or looked
    /// up and kept there. `direct`: look up in the index itself when the
    /// ready set exists, not through the cache tiers.
    async fn ready_entry(
        &self,
        key: &str,
        fresh: bool,
        direct: bool,
    ) -> crate::Result<Option<Arc<Ready>>> {
        let set = self.caching.as_ref().and_then(|c| c.ready.as_deref());
        if let (Some(set), false) = (set, fresh) {
            if let Some(h) = set.get(key) {
                return Ok(Some(h));
            }
        }
        let stamp = set.map(|s| s.stamp(key));
        let meta = if fresh || (direct && set.is_some()) {
            self.index.get(key).await?
        } else {
            self.lookup(key).await?
        };
        Ok(meta.map(|m| {
            let entry = Arc::new(Ready::new(m, &self.opts.cache_control));
            if let (Some(set), Some(stamp)) = (set, stamp) {
                set.put(key, entry.clone(), stamp);
            }
            entry
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_path_decoded_and_thumbnails_from_w() {
        assert!(matches!(
            blob_key("/v1/blobs/a/b.jpg", None),
            Ok(Cow::Borrowed("a/b.jpg"))
        ));
        assert_eq!(blob_key("/v1/blobs/a%20b", None).ok().unwrap(), "a b");
        assert_eq!(
            blob_key("/v1/blobs/a.jpg", Some("x=1&w=64")).ok().unwrap(),
            "_thumbs/64/a.jpg"
        );
        for (p, q) in [
            ("/v1/blobs/%zz", None),
            ("/v1/blobs/a", Some("w=0")),
            ("/v1/blobs/%ff", None),
        ] {
            match blob_key(p, q) {
                Err(a) => assert_eq!(a.status(), 400, "{p}"),
                Ok(k) => panic!("{p}: {k}"),
            }
        }
    }
}

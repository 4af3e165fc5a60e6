//! Objects stored in chunks ([`BlobMeta::chunks`]), for the native API and
//! the S3 API alike: uploads that write every `chunk` bytes as a chunk blob
//! as they arrive ([`Node::receive`], then [`Node::commit_object`]), and
//! reads that stream the chunks a range covers ([`Node::read_object`]).
//!
//! A chunk is a blob under its own key (`_chunks/...`, or a multipart
//! upload's part); it may itself be chunked (a part larger than a chunk),
//! so a read walks the manifest tree in order. Each piece is read whole or
//! by range through [`Node::read`] (the cache tiers, failover), one piece
//! ahead of the sender: memory stays at about two chunks per reader.

use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use index::{BlobMeta, Chunk};
use md5::{Digest, Md5};

use crate::{Error, Node, WriteSpec};

/// Key of chunk `n` of an upload; `group` is a fresh blob id, so chunks of
/// two writes of one key never share a name.
pub fn chunk_key(group: u64, n: usize) -> String {
    format!("{CHUNKS}{group:016x}/{n:06}")
}

/// Prefix of every chunk key.
pub const CHUNKS: &str = "_chunks/";

pub use crate::jobs::CHUNK_DROPS;

/// Index entries listed per round trip by [`sweep_orphans`].
const PAGE: usize = 1000;

/// What [`Node::receive`] made of a body.
pub struct Received {
    /// The body when it fit in one chunk.
    pub whole: Option<Bytes>,
    /// The chunks written, when it did not.
    pub chunks: Vec<Chunk>,
    /// Bytes received.
    pub size: u64,
    /// MD5 of the body (the S3 API's ETag), when asked for.
    pub md5: Option<[u8; 16]>,
    /// XXH3-128 of the body (the native API's ETag), for a body that went
    /// to chunks (a whole one is hashed by its write).
    pub xxh3: Option<u128>,
}

impl Received {
    /// Forgets the chunks written (deleted in the background): the upload
    /// was refused after its body arrived.
    pub fn discard(self, node: &Arc<Node>) {
        node.drop_keys(self.chunks.into_iter().map(|c| c.key).collect());
    }
}

pub use crate::streaming::Pieces;

type Sender = tokio::sync::mpsc::Sender<Result<Bytes, Error>>;

impl Node {
    /// Reads `body` to its end. Up to `chunk` bytes stay in memory and come
    /// back whole; past that, every `chunk` bytes are written as a chunk
    /// blob as they arrive, so memory stays at one chunk whatever the
    /// size. A body that fails, or ends before `expected` bytes, leaves no
    /// chunk behind ([`Error::Incomplete`]).
    pub async fn receive<S, E>(
        self: &Arc<Self>,
        mut body: S,
        chunk: usize,
        expected: Option<u64>,
        md5: bool,
    ) -> Result<Received, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let chunk = chunk.max(1);
        let mut sum = md5.then(Md5::new);
        // The whole object's XXH3 (its native ETag) is needed only when it
        // goes to chunks: a body kept whole is hashed once, by the write.
        // Chunks leave in order, so hashing each as it leaves is the same
        // digest as hashing the stream.
        let mut xxh = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = BytesMut::new();
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut group = None;
        let mut size = 0u64;
        let result: Result<(), Error> = async {
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(|e| Error::Incomplete(e.to_string()))?;
                size += piece.len() as u64;
                if expected.is_some_and(|n| size > n) {
                    return Err(Error::Incomplete(format!(
                        "the body is longer than the {} bytes declared",
                        expected.unwrap_or_default()
                    )));
                }
                if let Some(m) = &mut sum {
                    m.update(&piece);
                }
                buf.extend_from_slice(&piece);
                while buf.len() > chunk {
                    let g = match group {
                        Some(g) => g,
                        None => *group.insert(self.next_id().await?),
                    };
                    let data = buf.split_to(chunk).freeze();
                    xxh.update(&data);
                    chunks.push(self.write_chunk(g, chunks.len(), data).await?);
                }
            }
            if let Some(n) = expected.filter(|&n| n != size) {
                return Err(Error::Incomplete(format!(
                    "the body ended after {size} of {n} bytes"
                )));
            }
            if let (Some(g), false) = (group, buf.is_empty()) {
                let data = std::mem::take(&mut buf).freeze();
                xxh.update(&data);
                chunks.push(self.write_chunk(g, chunks.len(), data).await?);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            self.drop_keys(chunks.into_iter().map(|c| c.key).collect());
            return Err(e);
        }
        Ok(Received {
            whole: chunks.is_empty().then(|| buf.freeze()),
            size,
            md5: sum.map(|m| m.finalize().into()),
            xxh3: (!chunks.is_empty()).then(|| xxh.digest128()),
            chunks,
        })
    }

    async fn write_chunk(
        self: &Arc<Self>,
        group: u64,
        n: usize,
        data: Bytes,
    ) -> Result<Chunk, Error> {
        let key = chunk_key(group, n);
        let size = data.len() as u64;
        let spec = WriteSpec {
            content_type: "application/octet-stream".into(),
            ..WriteSpec::default()
        };
        self.write_with(&key, data, spec).await?;
        Ok(Chunk { key, size })
    }

    /// Writes `key` from what [`Node::receive`] got: one blob, or the
    /// record of an object in chunks (`spec.chunks` set from `got`). The
    /// entity tag is the caller's, else the body's XXH3.
    pub async fn commit_object(
        self: &Arc<Self>,
        key: &str,
        got: Received,
        mut spec: WriteSpec,
    ) -> Result<BlobMeta, Error> {
        match got.whole {
            Some(body) => self.write_with(key, body, spec).await,
            None => {
                if let (None, Some(h)) = (&spec.etag, got.xxh3) {
                    spec.etag = Some(format!("\"{h:032x}\""));
                }
                spec.chunks = got.chunks;
                self.commit_manifest(key, spec).await
            }
        }
    }

    /// Writes the record of an object stored as `spec.chunks`: its own blob
    /// is the manifest (JSON), so `recover-index` can rebuild the list from
    /// the stores. Failing, the chunks are deleted.
    pub async fn commit_manifest(
        self: &Arc<Self>,
        key: &str,
        spec: WriteSpec,
    ) -> Result<BlobMeta, Error> {
        let manifest = serde_json::to_vec(&spec.chunks).unwrap_or_default();
        let chunks: Vec<String> = spec.chunks.iter().map(|c| c.key.clone()).collect();
        let written = self.write_with(key, manifest.into(), spec).await;
        if written.is_err() {
            self.drop_keys(chunks);
        }
        written
    }

    /// Bytes `start..end` of the object `meta` names (chunked or not), as
    /// they are read.
    pub fn read_object(self: &Arc<Self>, meta: BlobMeta, start: u64, end: u64) -> Pieces {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let node = self.clone();
        tokio::spawn(async move {
            send_range(&node, &meta, start, end, &tx).await;
        });
        Pieces(rx)
    }
}

/// Runs one [`CHUNK_DROPS`] job: a JSON array of keys to delete.
pub(crate) async fn run_drops(node: &Arc<Node>, payload: &Bytes) -> Result<Bytes, String> {
    let keys: Vec<String> =
        serde_json::from_slice(payload).map_err(|e| format!("bad chunk-drop job: {e}"))?;
    node.delete_keys(&keys).await.map_err(|e| e.to_string())?;
    Ok(Bytes::from(format!("{{\"deleted\":{}}}", keys.len())))
}

/// Deletes the keys under `prefixes` (chunk and part keys) that no
/// record's chunk list names and that were written more than `max_age_ms`
/// before `now_ms`: what a crash between a commit and its
/// [`CHUNK_DROPS`] job left, or an upload cut off with its process.
/// Returns how many went.
///
/// Candidates are listed first, then every record is read once for the
/// chunk lists, so a record committed meanwhile can only keep a
/// candidate. An upload still running after `max_age_ms` would lose its
/// early chunks: the age is the limit of how long one upload may take
/// (`s3.abandoned_upload_secs`, a day). A multipart upload's part is never
/// older than its upload, so a live upload's parts are younger too.
pub async fn sweep_orphans(
    node: &Arc<Node>,
    prefixes: &[&str],
    now_ms: u64,
    max_age_ms: u64,
) -> Result<usize, Error> {
    let mut candidates = Vec::new();
    for p in prefixes {
        let mut after: Option<String> = None;
        loop {
            let page = node.index.list(p, None, after.as_deref(), PAGE).await?;
            for e in page.items {
                if e.meta.created_ms.saturating_add(max_age_ms) <= now_ms {
                    candidates.push(e.key);
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    if candidates.is_empty() {
        return Ok(0);
    }
    let mut named = std::collections::HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = node.index.list("", None, after.as_deref(), PAGE).await?;
        for e in page.items {
            named.extend(e.meta.chunks.into_iter().map(|c| c.key));
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let orphans: Vec<String> = candidates
        .into_iter()
        .filter(|k| !named.contains(k))
        .collect();
    node.delete_keys(&orphans).await?;
    Ok(orphans.len())
}

/// Sweeps orphaned chunks ([`sweep_orphans`]) under `prefixes` every
/// quarter of `max_age` (at least a second) until `stop`: each pass reads
/// every record, so with the default day a node does it four times a day,
/// and a key is gone at most a quarter past its age. Every node sweeps;
/// deleting a key twice is harmless.
pub fn spawn_orphan_sweeper(
    node: &Arc<Node>,
    prefixes: Vec<String>,
    max_age: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = (max_age / 4).max(std::time::Duration::from_secs(1));
    let weak = Arc::downgrade(node);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let Some(node) = weak.upgrade() else { return };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let p: Vec<&str> = prefixes.iter().map(String::as_str).collect();
            match sweep_orphans(&node, &p, now, max_age.as_millis() as u64).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(keys = n, "orphaned chunks deleted"),
                Err(e) => tracing::warn!(error = %e, "sweeping orphaned chunks failed"),
            }
        }
    });
}

/// Sends `start..end` of `meta`; false once the reader went away or a
/// read failed (the error was sent).
fn send_range<'a>(
    node: &'a Arc<Node>,
    meta: &'a BlobMeta,
    start: u64,
    end: u64,
    tx: &'a Sender,
) -> Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
    Box::pin(async move {
        if end <= start {
            return true;
        }
        if meta.chunks.is_empty() {
            let whole = start == 0 && end == meta.size;
            let piece = node.read(meta, (!whole).then_some((start, end))).await;
            let ok = piece.is_ok();
            return tx.send(piece).await.is_ok() && ok;
        }
        let mut at = 0u64;
        for c in &meta.chunks {
            let (a, b) = (at, at + c.size);
            at = b;
            if b <= start || a >= end {
                continue;
            }
            // A chunk missing or not the size the manifest says: the object
            // cannot be read whole; the reader gets an error.
            let m = match node.lookup(&c.key).await {
                Ok(Some(m)) if m.size == c.size => m,
                Ok(_) => {
                    let _ = tx.send(Err(Error::NotFound)).await;
                    return false;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return false;
                }
            };
            if !send_range(node, &m, start.max(a) - a, end.min(b) - a, tx).await {
                return false;
            }
        }
        true
    })
}

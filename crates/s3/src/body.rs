//! Object bodies in and out: one blob up to a chunk, chunks plus a manifest
//! above it; reads that stream the chunks a range covers.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use index::{BlobMeta, Chunk};
use md5::{Digest, Md5};
use node::{Node, WriteSpec};
use s3s::dto::StreamingBlob;
use s3s::{s3_error, S3Error, S3Result};

use crate::names::chunk_key;

/// Maps a node error onto S3's codes.
pub fn node_error(e: node::Error) -> S3Error {
    match e {
        node::Error::NotFound => s3_error!(NoSuchKey),
        node::Error::Rejected { .. } | node::Error::Full { .. } => {
            s3_error!(e, InternalError, "the stores refused the write")
        }
        e @ (node::Error::NotEnoughStores { .. } | node::Error::Unavailable { .. }) => {
            s3_error!(e, ServiceUnavailable)
        }
        e => s3_error!(e, InternalError),
    }
}

/// The quoted hex MD5 S3 clients expect as a single-part object's ETag.
pub fn md5_etag(digest: &[u8]) -> String {
    format!("\"{}\"", hex::encode(digest))
}

/// What [`read_into_chunks`] made of a body.
pub struct Received {
    /// The body when it fit in one chunk.
    pub whole: Option<Bytes>,
    /// The chunks written, when it did not.
    pub chunks: Vec<Chunk>,
    /// MD5 of the whole body.
    pub md5: [u8; 16],
    /// Bytes received.
    pub size: u64,
}

/// Reads `body` to its end. Up to `chunk_size` bytes stay in memory and
/// come back whole; past that, every `chunk_size` bytes are written as a
/// chunk blob (`_chunks/{group}/{n}`) as they arrive, so memory stays at
/// one chunk whatever the object's size. A body that ends early or fails
/// leaves no chunk behind.
pub async fn read_into_chunks(
    node: &Arc<Node>,
    mut body: StreamingBlob,
    chunk_size: usize,
    expected: Option<u64>,
) -> S3Result<Received> {
    let mut md5 = Md5::new();
    let mut buf = BytesMut::new();
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut group = None;
    let mut size = 0u64;
    let result: S3Result<()> = async {
        while let Some(piece) = body.next().await {
            let piece =
                piece.map_err(|e| s3_error!(IncompleteBody, "the body could not be read: {e}"))?;
            size += piece.len() as u64;
            md5.update(&piece);
            buf.extend_from_slice(&piece);
            while buf.len() > chunk_size {
                let g = match group {
                    Some(g) => g,
                    None => *group.insert(node.next_id().await.map_err(node_error)?),
                };
                let data = buf.split_to(chunk_size).freeze();
                chunks.push(write_chunk(node, g, chunks.len(), data).await?);
            }
        }
        if let Some(n) = expected {
            if n != size {
                return Err(s3_error!(
                    IncompleteBody,
                    "the body ended after {size} of {n} bytes"
                ));
            }
        }
        if !chunks.is_empty() && !buf.is_empty() {
            let g = group.unwrap_or_default();
            let data = std::mem::take(&mut buf).freeze();
            chunks.push(write_chunk(node, g, chunks.len(), data).await?);
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        drop_keys(node, chunks.into_iter().map(|c| c.key).collect());
        return Err(e);
    }
    Ok(Received {
        whole: chunks.is_empty().then(|| buf.freeze()),
        chunks,
        md5: md5.finalize().into(),
        size,
    })
}

async fn write_chunk(node: &Arc<Node>, group: u64, n: usize, data: Bytes) -> S3Result<Chunk> {
    let key = chunk_key(group, n);
    let size = data.len() as u64;
    let spec = WriteSpec {
        content_type: "application/octet-stream".into(),
        ..WriteSpec::default()
    };
    node.write_with(&key, data, spec)
        .await
        .map_err(node_error)?;
    Ok(Chunk { key, size })
}

/// Deletes blobs nothing will name (chunks of a failed write, parts of an
/// aborted upload), in the background.
pub fn drop_keys(node: &Arc<Node>, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    let node = node.clone();
    tokio::spawn(async move {
        for k in keys {
            if let Err(e) = node.delete_blob(&k).await {
                tracing::warn!(key = %k, error = %e, "could not delete an unused chunk");
            }
        }
    });
}

/// Writes an object from what [`read_into_chunks`] received.
pub async fn commit(
    node: &Arc<Node>,
    key: &str,
    got: Received,
    mut spec: WriteSpec,
) -> S3Result<BlobMeta> {
    match got.whole {
        Some(body) => node.write_with(key, body, spec).await.map_err(node_error),
        None => {
            spec.chunks = got.chunks;
            commit_manifest(node, key, spec).await
        }
    }
}

/// Writes the record of an object stored as `spec.chunks`: its own blob is
/// the manifest, so `recover-index` can rebuild the list from the stores.
pub async fn commit_manifest(node: &Arc<Node>, key: &str, spec: WriteSpec) -> S3Result<BlobMeta> {
    let manifest = serde_json::to_vec(&spec.chunks).map_err(|e| s3_error!(e, InternalError))?;
    let chunks: Vec<String> = spec.chunks.iter().map(|c| c.key.clone()).collect();
    match node.write_with(key, manifest.into(), spec).await {
        Ok(m) => Ok(m),
        Err(e) => {
            drop_keys(node, chunks);
            Err(node_error(e))
        }
    }
}

/// Bytes `start..end` of the object `meta` names, as a body stream
/// ([`Node::read_object`]: chunk by chunk for an object in chunks).
pub fn read_range(node: Arc<Node>, meta: BlobMeta, start: u64, end: u64) -> ObjectStream {
    ObjectStream(node.read_object(meta, start, end))
}

/// [`node::objects::Pieces`] as a `Stream`, which `s3s` bodies are.
pub struct ObjectStream(node::objects::Pieces);

impl Stream for ObjectStream {
    type Item = Result<Bytes, node::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_next(cx)
    }
}

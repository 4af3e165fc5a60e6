//! Object bodies as `s3s` takes and gives them, over the node's object
//! path ([`node::objects`]: one blob up to a chunk, chunks and a manifest
//! above it), and node errors as S3 error codes.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use index::BlobMeta;
use node::Node;
use s3s::{s3_error, S3Error};

/// Maps a node error onto S3's codes.
pub fn node_error(e: node::Error) -> S3Error {
    match e {
        node::Error::NotFound => s3_error!(NoSuchKey),
        node::Error::Incomplete(d) => s3_error!(IncompleteBody, "{d}"),
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

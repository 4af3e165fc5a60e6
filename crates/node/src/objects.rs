//! Objects stored in chunks ([`BlobMeta::chunks`]): reads that stream the
//! chunks a range covers, for the native API and the S3 API alike.
//!
//! A chunk is a blob under its own key (`_chunks/...`, or a multipart
//! upload's part); it may itself be chunked (a part larger than a chunk),
//! so a read walks the manifest tree in order. Each piece is read whole or
//! by range through [`Node::read`] (the cache tiers, failover), one piece
//! ahead of the sender: memory stays at about two chunks per reader.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use index::BlobMeta;

use crate::{Error, Node};

/// The pieces of an object being read ([`Node::read_object`]), in order.
/// An error ends it: the reader never gets wrong or missing bytes as if
/// they were the object.
pub struct Pieces(tokio::sync::mpsc::Receiver<Result<Bytes, Error>>);

impl Pieces {
    /// The next piece; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Bytes, Error>> {
        self.0.recv().await
    }

    /// Polls for the next piece.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        self.0.poll_recv(cx)
    }
}

type Sender = tokio::sync::mpsc::Sender<Result<Bytes, Error>>;

impl Node {
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

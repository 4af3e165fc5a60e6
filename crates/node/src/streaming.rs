//! Streaming big blobs to many clients from one store read.
//!
//! A full GET of a blob that is not cached whole (bigger than the cache's
//! item limit, or no cache) from a remote store is streamed: the first
//! request opens the store's response and pumps it into a
//! [`collapse::SharedBody`]; every concurrent request for the same blob reads
//! that body from its first byte as the bytes arrive. The open is collapsed
//! (one store request while headers are awaited) and the open body is kept
//! in a table until it ends, so requests arriving mid-transfer join it
//! instead of reading the store again.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use collapse::{SharedBody, SharedReader};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use index::BlobMeta;

use crate::tiers::StoreMember;
use crate::{Error, Result};

/// Blobs up to this size are never streamed.
const STREAM_MIN: u64 = 256 << 10;

/// Open bodies by blob id, and the collapser for opening them.
pub(crate) struct Streams {
    open: Mutex<HashMap<u64, Arc<SharedBody>>>,
    collapser: Arc<collapse::Collapser<u64, Arc<SharedBody>, Error>>,
}

impl Streams {
    pub(crate) fn new(opts: collapse::CollapseOptions) -> Arc<Streams> {
        Arc::new(Streams {
            open: Mutex::new(HashMap::new()),
            collapser: collapse::Collapser::new(opts),
        })
    }
}

/// The pieces of an object being read (`Node::read_object`), in order.
/// An error ends it: the reader never gets wrong or missing bytes as if
/// they were the object.
pub struct Pieces(pub(crate) tokio::sync::mpsc::Receiver<Result<Bytes>>);

impl Pieces {
    /// Polls for the next piece.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        self.0.poll_recv(cx)
    }
}

/// A response body reading a shared stream. A failed origin read ends it
/// with an error, so the client sees a cut-off transfer, never a short
/// body presented as complete.
pub struct StreamBody {
    from: From,
    remaining: u64,
}

enum From {
    Shared(SharedReader),
    Pieces(Pieces),
}

impl StreamBody {
    /// A body of `size` bytes read from `reader`.
    pub fn from_reader(reader: SharedReader, size: u64) -> StreamBody {
        StreamBody {
            from: From::Shared(reader),
            remaining: size,
        }
    }

    /// A body of `size` bytes: an object's pieces as they are read.
    pub fn from_pieces(pieces: Pieces, size: u64) -> StreamBody {
        StreamBody {
            from: From::Pieces(pieces),
            remaining: size,
        }
    }
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let polled = match &mut self.from {
            From::Shared(r) => match r.poll_chunk(cx) {
                Poll::Ready(Some(Err(why))) => Poll::Ready(Some(Err(std::io::Error::other(why)))),
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(b))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            From::Pieces(p) => match p.poll_next(cx) {
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(b))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        };
        match polled {
            Poll::Ready(Some(Ok(b))) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Streams {
    /// A streamed body for a full GET of `meta` from `stores` (the node's),
    /// or `None` when streaming does not apply: a blob up to `floor` bytes
    /// (read whole, and cached or batched), or one on an in-process store.
    pub(crate) async fn read(
        self: &Arc<Self>,
        meta: &BlobMeta,
        stores: &[StoreMember],
        floor: u64,
    ) -> Option<Result<StreamBody>> {
        // Streaming is for bodies worth starting to send before they have
        // all arrived.
        if meta.size <= floor.max(STREAM_MIN) {
            return None;
        }
        let first = meta
            .replicas
            .first()
            .and_then(|n| stores.iter().find(|s| &s.name == n))?;
        if matches!(first.handle, crate::StoreHandle::Local(_)) {
            return None;
        }
        let open = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&meta.id)
            .cloned();
        let shared = match open {
            Some(s) => {
                self.collapser
                    .metrics
                    .collapsed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                s
            }
            None => {
                // The replicas, in the blob's order, for the leader's task.
                let replicas: Vec<StoreMember> = meta
                    .replicas
                    .iter()
                    .filter_map(|n| stores.iter().find(|s| &s.name == n).cloned())
                    .collect();
                let (me, m) = (self.clone(), meta.clone());
                match self
                    .collapser
                    .get(meta.id, move || async move {
                        me.open_shared(&m, &replicas).await
                    })
                    .await
                {
                    Ok(s) => s,
                    Err(collapse::Error::Origin(e)) => return Some(Err(e)),
                    Err(e) => {
                        return Some(Err(Error::Unavailable {
                            tier: "store".into(),
                            detail: e.to_string(),
                        }))
                    }
                }
            }
        };
        Some(Ok(StreamBody::from_reader(shared.reader(), meta.size)))
    }

    /// Opens the blob on the first of `replicas` that answers and starts
    /// pumping its body into a shared stream.
    async fn open_shared(
        self: &Arc<Self>,
        meta: &BlobMeta,
        replicas: &[StoreMember],
    ) -> Result<Arc<SharedBody>> {
        // A request that saw no open stream may reach here just after
        // another leader opened one and left the collapser: join that
        // stream rather than reading the store a second time.
        if let Some(open) = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&meta.id)
        {
            return Ok(open.clone());
        }
        let mut last = Error::Unavailable {
            tier: "store".into(),
            detail: "no replica".into(),
        };
        for m in replicas {
            let (body, timeout) = match m.handle.open_stream(&m.name, meta.id).await {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    last = e;
                    continue;
                }
                None => continue,
            };
            let shared = SharedBody::new();
            self.open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(meta.id, shared.clone());
            let (me, sh, id, size) = (Arc::downgrade(self), shared.clone(), meta.id, meta.size);
            tokio::spawn(async move {
                pump(body, &sh, size, timeout).await;
                if let Some(me) = me.upgrade() {
                    let mut open = me.open.lock().unwrap_or_else(|p| p.into_inner());
                    if open.get(&id).is_some_and(|x| Arc::ptr_eq(x, &sh)) {
                        open.remove(&id);
                    }
                }
            });
            return Ok(shared);
        }
        Err(last)
    }
}

/// Copies the store's body into `shared`, failing it on an error, a stall
/// longer than `timeout`, or a length other than `size`.
async fn pump(
    mut body: hyper::body::Incoming,
    shared: &SharedBody,
    size: u64,
    timeout: std::time::Duration,
) {
    let mut got = 0u64;
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return shared.fail(format!("store stalled for {timeout:?}")),
            Ok(None) => break,
            Ok(Some(Err(e))) => return shared.fail(format!("store body: {e}")),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    got += d.len() as u64;
                    shared.push(d);
                }
            }
        }
    }
    if got == size {
        shared.finish();
    } else {
        shared.fail(format!("store sent {got} of {size} bytes"));
    }
}

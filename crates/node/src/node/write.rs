//! The write path: a blob to R stores picked by rendezvous hashing over
//! the healthy ones (hedged when one is slow), then the index commit (the
//! commit point); what an overwrite or delete leaves (old copies, chunks,
//! page text) is dropped afterwards with tombstones.

use std::sync::Arc;

use bytes::Bytes;
use index::needle_meta::{Kind, NeedleMeta};
use index::BlobMeta;

use super::{sleep_until, Node};
use crate::search::PageText;
use crate::{Error, Result};

impl Node {
    /// Writes `body` to R stores, then commits `key` in the index. Returns
    /// the new record; the one it replaced has its blob deleted from its
    /// stores in the background.
    pub async fn write_blob(
        self: &Arc<Self>,
        key: &str,
        body: Bytes,
        content_type: String,
        tags: Vec<String>,
    ) -> Result<BlobMeta> {
        let spec = WriteSpec {
            content_type,
            tags,
            ..WriteSpec::default()
        };
        Ok(self.write_one(key, body, spec, None).await?.0)
    }

    /// [`Node::write_blob`] with response headers, a given entity tag, or
    /// (for an object stored in chunks) its chunk list: see [`WriteSpec`].
    pub async fn write_with(
        self: &Arc<Self>,
        key: &str,
        body: Bytes,
        spec: WriteSpec,
    ) -> Result<BlobMeta> {
        Ok(self.write_one(key, body, spec, None).await?.0)
    }

    /// [`Node::write_blob`] of an image that may be a book page: once the
    /// index has committed, the search change is queued (also when the key
    /// was a page and no longer is). Returns the record and the indexing
    /// job, if one was queued.
    ///
    /// A page's words are always kept in a blob, so that a search shard can
    /// be rebuilt from the stores: text given inline is written first as
    /// the JSON blob `_text/{key}` (committed before the page names it);
    /// text in a sidecar the client stored is named as it is.
    pub async fn write_page(
        self: &Arc<Self>,
        key: &str,
        body: Bytes,
        content_type: String,
        tags: Vec<String>,
        mut page: Option<crate::search::PageUpload>,
    ) -> Result<(BlobMeta, Option<u64>)> {
        if let Some(p) = &mut page {
            p.at.text_key = Some(match &p.text {
                PageText::Inline(t) => {
                    let tk = text_key(key);
                    let json = serde_json::json!({ "text": t }).to_string();
                    let spec = WriteSpec {
                        content_type: "application/json".into(),
                        ..WriteSpec::default()
                    };
                    self.write_one(&tk, json.into(), spec, None).await?;
                    tk
                }
                PageText::Sidecar(k) => k.clone(),
            });
        }
        let spec = WriteSpec {
            content_type,
            tags,
            ..WriteSpec::default()
        };
        self.write_one(key, body, spec, page).await
    }

    async fn write_one(
        self: &Arc<Self>,
        key: &str,
        body: Bytes,
        spec: WriteSpec,
        page: Option<crate::search::PageUpload>,
    ) -> Result<(BlobMeta, Option<u64>)> {
        // The commit number is taken first: the needles carry it, so the
        // index can be rebuilt from the stores (`recover-index`).
        let (id, version) = tokio::try_join!(self.next_id(), self.index.next_version())?;
        let size = if spec.chunks.is_empty() {
            body.len() as u64
        } else {
            spec.chunks.iter().map(|c| c.size).sum()
        };
        let mut meta = BlobMeta {
            id,
            size,
            etag: spec
                .etag
                .unwrap_or_else(|| format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(&body))),
            content_type: spec.content_type,
            created_ms: now_ms(),
            replicas: Vec::new(),
            tags: spec.tags,
            version,
            page: page.as_ref().map(|p| p.at.clone()),
            headers: spec.headers,
            chunks: spec.chunks,
        };
        let head = NeedleMeta::blob(key, &meta).encode();
        let dropped = Dropped {
            key: key.to_owned(),
            version,
        };
        let names: Vec<&str> = self.stores.iter().map(|s| s.name.as_str()).collect();
        let ranked: Vec<usize> = cluster::rendezvous(&names, id)
            .into_iter()
            .filter_map(|n| names.iter().position(|x| *x == n))
            .collect();
        let need = self.opts.replicas.min(self.stores.len()).max(1);
        // Healthy stores first, in rendezvous order; stores marked down come
        // last, so a store that just came back (before the prober noticed)
        // is still tried rather than failing the write.
        let mut candidates = ranked
            .iter()
            .copied()
            .filter(|&i| self.health.is_up(i))
            .chain(ranked.iter().copied().filter(|&i| !self.health.is_up(i)))
            .collect::<Vec<_>>()
            .into_iter();
        let mut written: Vec<usize> = Vec::with_capacity(need);
        let mut launched: Vec<usize> = Vec::with_capacity(need + 1);

        // Write to R candidates at once; replace each failure with the next
        // healthy store in rendezvous order until R copies exist. A store
        // that neither answers nor fails (hung, partitioned) is hedged: past
        // the hedge delay one more candidate starts, so a write waits for
        // the R fastest stores, not for a timeout.
        let mut set = tokio::task::JoinSet::new();
        let mut spawn_put = |set: &mut tokio::task::JoinSet<(usize, Result<()>)>, i: usize| {
            let m = self.stores[i].clone();
            let (body, head) = (body.clone(), head.clone());
            launched.push(i);
            set.spawn(async move { (i, m.handle.put(&m.name, id, head, body).await) });
        };
        for _ in 0..need {
            match candidates.next() {
                Some(i) => spawn_put(&mut set, i),
                None => break,
            }
        }
        let hedge = self.hedge_after(body.len() as u64);
        let mut hedge_at = hedge.map(|h| tokio::time::Instant::now() + h);
        while written.len() < need {
            let joined = tokio::select! {
                j = set.join_next() => match j {
                    Some(j) => j,
                    None => break,
                },
                _ = sleep_until(hedge_at) => {
                    if let Some(next) = candidates.next() {
                        spawn_put(&mut set, next);
                    }
                    hedge_at = hedge.map(|h| tokio::time::Instant::now() + h);
                    continue;
                }
            };
            let Ok((i, res)) = joined else { continue };
            match res {
                Ok(()) => {
                    self.health.set(i, true);
                    written.push(i);
                }
                Err(e @ Error::Rejected { .. }) => {
                    self.cleanup(&dropped, id, &launched);
                    return Err(e);
                }
                Err(e) => {
                    // A full store still serves reads: skip it for this
                    // write without marking it down.
                    if !matches!(e, Error::Full { .. }) {
                        self.mark_down(i, &e);
                    }
                    if let Some(next) = candidates.next() {
                        spawn_put(&mut set, next);
                    }
                }
            }
        }
        // Puts still in flight are dropped; a store that took the body
        // anyway holds a copy nobody names: delete it in the background.
        drop(set);
        let stray: Vec<usize> = launched
            .iter()
            .copied()
            .filter(|i| !written.contains(i))
            .collect();
        if written.len() < need {
            self.cleanup(&dropped, id, &launched);
            return Err(Error::NotEnoughStores {
                need,
                have: written.len(),
            });
        }
        if !stray.is_empty() {
            self.cleanup(&dropped, id, &stray);
        }
        // Keep the replica list in rendezvous order: readers try it in order.
        written.sort_by_key(|i| ranked.iter().position(|r| r == i));
        meta.replicas = written
            .iter()
            .map(|&i| self.stores[i].name.clone())
            .collect();
        let committed = self.index.put(key, &meta).await;
        if committed.is_ok() {
            if let Some(c) = &self.caching {
                c.invalidate(key).await;
            }
        }
        let previous = match committed {
            // A change numbered after this put holds the key already: this
            // put is ordered just before it, and its copies are garbage.
            // Its page is still handed to search, which keeps the newest
            // version (this one is older), so every page upload has a job
            // to wait on.
            Ok(c) if c.superseded => {
                self.cleanup(&dropped, id, &written);
                let job = self.after_change(key, meta.version, page, None).await;
                return Ok((meta, job?));
            }
            Ok(c) => {
                meta.version = c.version;
                c.previous
            }
            Err(e) => {
                // Not committed: the copies are unreachable garbage; drop them.
                self.cleanup(&dropped, id, &written);
                return Err(e);
            }
        };
        let inline_text = page
            .as_ref()
            .is_some_and(|p| matches!(p.text, PageText::Inline(_)));
        let job = self
            .after_change(key, meta.version, page, previous.as_ref())
            .await;
        if let Some(prev) = previous {
            if !inline_text {
                self.drop_own_text(key, &prev);
            }
            self.drop_chunks(&prev);
            self.delete_copies(&dropped, prev);
        }
        Ok((meta, job?))
    }

    /// Deletes `_text/{key}` when `prev` (the record of `key` just replaced
    /// or deleted) named it: the page's words went with the page. In the
    /// background; a failure leaves a text blob that nothing names, which
    /// costs space and nothing else.
    fn drop_own_text(self: &Arc<Self>, key: &str, prev: &BlobMeta) {
        let own = text_key(key);
        if prev.page.as_ref().and_then(|p| p.text_key.as_ref()) != Some(&own) {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            if let Err(e) = node.delete_blob(&own).await {
                tracing::warn!(key = %own, error = %e, "could not delete a page's text");
            }
        });
    }

    /// Deletes the chunks of `prev` (a record just replaced or deleted)
    /// when it was an object stored in chunks. In the background; a chunk
    /// left by a crash is a blob nothing names (see the ARCHITECTURE's
    /// limits).
    fn drop_chunks(self: &Arc<Self>, prev: &BlobMeta) {
        self.drop_keys(prev.chunks.iter().map(|c| c.key.clone()).collect());
    }

    fn cleanup(self: &Arc<Self>, why: &Dropped, id: u64, written: &[usize]) {
        let names = written
            .iter()
            .map(|&i| self.stores[i].name.clone())
            .collect();
        self.delete_copies_of(why.tombstone(Kind::Dropped), id, names);
    }

    /// Deletes a replaced blob from its stores, in the background. A store
    /// that is down keeps its copy as unreachable garbage.
    fn delete_copies(self: &Arc<Self>, why: &Dropped, meta: BlobMeta) {
        self.delete_copies_of(why.tombstone(Kind::Dropped), meta.id, meta.replicas);
    }

    fn delete_copies_of(self: &Arc<Self>, tombstone: Bytes, id: u64, replicas: Vec<String>) {
        let node = self.clone();
        tokio::spawn(async move {
            for name in replicas {
                if let Some(m) = node.stores.iter().find(|s| s.name == name) {
                    if let Err(e) = m.handle.delete(&m.name, id, tombstone.clone()).await {
                        if !matches!(e, Error::NotFound) {
                            tracing::warn!(store = %name, id, error = %e, "could not delete old copy");
                        }
                    }
                }
            }
        });
    }

    /// Removes `key`; `None` if it did not exist. Store copies are deleted in
    /// the background once the index no longer names them.
    pub async fn delete_blob(self: &Arc<Self>, key: &str) -> Result<Option<BlobMeta>> {
        let committed = self.index.delete(key).await?;
        let prev = committed.previous;
        if let Some(c) = &self.caching {
            c.invalidate(key).await;
        }
        if let Err(e) = self
            .after_change(key, committed.version, None, prev.as_ref())
            .await
        {
            // The blob is gone; its page stays findable until the next
            // change of the key (the queue was unreachable).
            tracing::error!(key, error = %e, "deleted page could not be removed from search");
        }
        if let Some(p) = &prev {
            let why = Dropped {
                key: key.to_owned(),
                version: committed.version,
            };
            self.delete_copies_of(why.tombstone(Kind::Deleted), p.id, p.replicas.clone());
            self.drop_own_text(key, p);
            self.drop_chunks(p);
        }
        Ok(prev)
    }
}

/// What a write records besides the bytes.
#[derive(Debug, Clone, Default)]
pub struct WriteSpec {
    /// Content-Type.
    pub content_type: String,
    /// Tags (`X-Strata-Tags`).
    pub tags: Vec<String>,
    /// Response headers to keep with the blob ([`BlobMeta::headers`]).
    pub headers: Vec<(String, String)>,
    /// The entity tag, quoted; by default a hash of the body. The S3 API
    /// gives the body's MD5, which is what its clients check.
    pub etag: Option<String>,
    /// An object stored in chunks: the chunks, already written; the body
    /// is then the manifest ([`BlobMeta::chunks`]).
    pub chunks: Vec<index::Chunk>,
}

/// Where the words of page `key` given inline are kept.
pub fn text_key(key: &str) -> String {
    format!("_text/{key}")
}

/// The key and commit number a tombstone names.
struct Dropped {
    key: String,
    version: u64,
}

impl Dropped {
    /// A tombstone's metadata: the key was deleted, or just this copy.
    fn tombstone(&self, kind: Kind) -> Bytes {
        NeedleMeta {
            key: self.key.clone(),
            version: self.version,
            created_ms: now_ms(),
            kind,
        }
        .encode()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

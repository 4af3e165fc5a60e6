//! Search from the node's side: placing pages on shards, indexing them
//! through the queue, and scatter-gather of queries.
//!
//! A page image uploaded with `X-Strata-Book` / `X-Strata-Page` and its
//! text (`X-Strata-Text`, percent-encoded UTF-8, or `X-Strata-Text-Key`
//! naming a stored JSON sidecar `{"text": "..."}` for long text) is written
//! like any blob; the index commit gives the change a version, and a job on
//! the `search` queue carries {key, book, page, text, version} to the shard
//! that owns the book (the ring over search members). Replacing or
//! deleting the image queues the matching change, so the shard ends with
//! the newest version whatever order jobs run in (see `search::Shard`).
//!
//! A query goes to every shard at once (or, with `book=`, only to the
//! book's shard); each answers its best books, merged here by score. A
//! shard that fails or is later than the timeout is left out and the answer
//! is marked `partial`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use index::{BlobMeta, PageRef};
use search::{Applied, PageOp, Query, Results};
use serde::{Deserialize, Serialize};

use crate::http::{check, encode_query, HttpClient};
use crate::{Error, Node, Result};

/// The queue of indexing jobs.
pub const SEARCH_JOBS: &str = "search";

/// Longest page text accepted inline or in a sidecar, bytes.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// Where one shard is.
pub enum ShardHandle {
    /// Same process (`strata serve`).
    Local(Arc<search::Shard>),
    /// A search member over HTTP.
    Remote {
        /// `http://host:port`.
        base: String,
        /// Client.
        http: HttpClient,
    },
}

/// A search shard as the node knows it.
pub struct ShardMember {
    /// Cluster-file name (its place on the ring).
    pub name: String,
    /// How to reach it.
    pub handle: ShardHandle,
}

/// The search shards and how pages are placed on them.
pub struct SearchTier {
    shards: Vec<ShardMember>,
    ring: cluster::Ring,
    timeout: Duration,
}

/// Where a page's text comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageText {
    /// Given with the upload.
    Inline(String),
    /// In a stored JSON blob `{"text": "..."}` under this key.
    Sidecar(String),
}

/// A page image's place and text, as uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageUpload {
    /// Book and page number.
    pub at: PageRef,
    /// The words on it.
    pub text: PageText,
}

/// What an indexing job carries.
#[derive(Debug, Serialize, Deserialize)]
struct IndexJob {
    key: String,
    version: u64,
    /// The page now, or `None` when the key no longer is a page.
    page: Option<PageUpload>,
    /// The book the key was a page of before, if another one: its shard
    /// must drop the page.
    old_book: Option<String>,
}

fn search_err(e: search::Error) -> Error {
    match e {
        search::Error::BadQuery(_) | search::Error::Invalid(_) => Error::Rejected {
            tier: "search".into(),
            detail: e.to_string(),
        },
        _ => Error::Unavailable {
            tier: "search".into(),
            detail: e.to_string(),
        },
    }
}

impl ShardHandle {
    async fn apply(&self, ops: Vec<PageOp>) -> Result<Vec<Applied>> {
        match self {
            ShardHandle::Local(s) => s.apply(ops).await.map_err(search_err),
            ShardHandle::Remote { base, http } => {
                let body = serde_json::to_vec(&ops).map_err(|e| Error::Rejected {
                    tier: "search".into(),
                    detail: e.to_string(),
                })?;
                let r = http
                    .send(
                        "search",
                        Method::POST,
                        &format!("{base}/pages"),
                        &[("content-type", "application/json".into())],
                        body.into(),
                    )
                    .await?;
                check("search", &r)?;
                #[derive(Deserialize)]
                struct A {
                    applied: Vec<Applied>,
                }
                serde_json::from_slice::<A>(&r.body)
                    .map(|a| a.applied)
                    .map_err(|e| Error::Unavailable {
                        tier: "search".into(),
                        detail: format!("bad JSON: {e}"),
                    })
            }
        }
    }

    async fn search(&self, q: &Query) -> Result<Results> {
        match self {
            ShardHandle::Local(s) => {
                // The blocking pool, not this task: the shards of one query
                // are polled by one task and must run side by side.
                let (s, q) = (s.clone(), q.clone());
                tokio::task::spawn_blocking(move || s.search(&q))
                    .await
                    .map_err(|e| Error::Unavailable {
                        tier: "search".into(),
                        detail: e.to_string(),
                    })?
                    .map_err(search_err)
            }
            ShardHandle::Remote { base, http } => {
                let mut url = format!(
                    "{base}/search?q={}&limit={}&pages={}",
                    encode_query(&q.q),
                    q.limit,
                    q.pages
                );
                if let Some(b) = &q.book {
                    url.push_str(&format!("&book={}", encode_query(b)));
                }
                let r = http
                    .send("search", Method::GET, &url, &[], Bytes::new())
                    .await?;
                check("search", &r)?;
                serde_json::from_slice(&r.body).map_err(|e| Error::Unavailable {
                    tier: "search".into(),
                    detail: format!("bad JSON: {e}"),
                })
            }
        }
    }
}

impl SearchTier {
    /// Shards in cluster-file order; a shard slower than `timeout` is left
    /// out of an answer (which is then partial).
    pub fn new(shards: Vec<ShardMember>, timeout: Duration) -> SearchTier {
        let names: Vec<&str> = shards.iter().map(|s| s.name.as_str()).collect();
        SearchTier {
            ring: cluster::Ring::new(&names, 160),
            shards,
            timeout,
        }
    }

    /// The shard that holds `book`'s pages.
    pub fn owner(&self, book: &str) -> usize {
        self.ring.owner(book.as_bytes()).unwrap_or(0)
    }

    /// Applies `ops` on the shard of `book`.
    pub async fn apply(&self, book: &str, ops: Vec<PageOp>) -> Result<Vec<Applied>> {
        let s = self
            .shards
            .get(self.owner(book))
            .ok_or(Error::Unavailable {
                tier: "search".into(),
                detail: "no search shards".into(),
            })?;
        s.handle.apply(ops).await
    }

    /// Runs `q` on every shard that can hold matches and merges the
    /// answers. A bad query is an error; a shard that is down or late makes
    /// the answer partial.
    pub async fn search(&self, q: Query) -> Result<Results> {
        q.check().map_err(search_err)?;
        let t0 = Instant::now();
        let targets: Vec<usize> = match &q.book {
            Some(b) => vec![self.owner(b)],
            None => (0..self.shards.len()).collect(),
        };
        let asks = targets.iter().map(|&i| {
            let q = &q;
            async move {
                match tokio::time::timeout(self.timeout, self.shards[i].handle.search(q)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::Unavailable {
                        tier: "search".into(),
                        detail: format!("shard {} did not answer in time", self.shards[i].name),
                    }),
                }
            }
        });
        let answers = futures_join_all(asks).await;
        let mut parts = Vec::with_capacity(answers.len());
        let mut partial = false;
        for (i, a) in targets.iter().zip(answers) {
            match a {
                Ok(r) => parts.push(r),
                Err(e @ Error::Rejected { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(shard = %self.shards[*i].name, error = %e, "search shard left out");
                    partial = true;
                }
            }
        }
        let mut out = Results::merge(parts, q.limit);
        out.partial |= partial;
        out.took_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(out)
    }
}

/// Awaits every future, concurrently, in order.
async fn futures_join_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let fs: Vec<_> = fs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = fs.iter().map(|_| None).collect();
    let mut fs: Vec<Option<_>> = fs.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in fs.iter_mut().zip(out.iter_mut()) {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *o = Some(v);
                        *f = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// After a write or delete of `key` committed as `version`: queues the
/// search change if the key is, or was, a page. Returns the job id (`None`
/// when nothing was queued, or when there is no queue and the change was
/// applied at once).
pub(crate) async fn after_change(
    node: &Arc<Node>,
    key: &str,
    version: u64,
    page: Option<PageUpload>,
    previous: Option<&BlobMeta>,
) -> Result<Option<u64>> {
    let old_book = previous
        .and_then(|p| p.page.as_ref())
        .map(|p| p.book.clone());
    if page.is_none() && old_book.is_none() {
        return Ok(None);
    }
    if node.search().is_none() {
        return Ok(None);
    }
    let old_book = old_book.filter(|b| Some(b) != page.as_ref().map(|p| &p.at.book));
    let job = IndexJob {
        key: key.to_owned(),
        version,
        page,
        old_book,
    };
    match node.queue() {
        Some(q) => {
            let payload = serde_json::to_vec(&job).map_err(|e| Error::Rejected {
                tier: "search".into(),
                detail: e.to_string(),
            })?;
            // The version makes a retried write queue its change once.
            let id = q
                .put_job(
                    SEARCH_JOBS,
                    payload,
                    Some(format!("search:{key}:{version}")),
                    node.opts.upload_attempts,
                )
                .await?;
            Ok(Some(id))
        }
        None => {
            run_job(node, job).await?;
            Ok(None)
        }
    }
}

/// Runs one indexing job from the queue.
pub(crate) async fn run_index(
    node: &Arc<Node>,
    payload: &Bytes,
) -> std::result::Result<Bytes, String> {
    let job: IndexJob =
        serde_json::from_slice(payload).map_err(|e| format!("bad search job: {e}"))?;
    let applied = run_job(node, job).await.map_err(|e| e.to_string())?;
    Ok(Bytes::from(
        serde_json::json!({ "applied": applied }).to_string(),
    ))
}

async fn run_job(node: &Arc<Node>, job: IndexJob) -> Result<Vec<Applied>> {
    let tier = node.search().ok_or(Error::Unavailable {
        tier: "search".into(),
        detail: "this node has no search shards".into(),
    })?;
    let mut applied = Vec::new();
    if let Some(old) = &job.old_book {
        let op = PageOp::Delete {
            key: job.key.clone(),
            version: job.version,
        };
        applied.extend(tier.apply(old, vec![op]).await?);
    }
    if let Some(p) = job.page {
        let text = match p.text {
            PageText::Inline(t) => t,
            PageText::Sidecar(k) => read_sidecar(node, &k).await?,
        };
        let op = PageOp::Upsert {
            key: job.key.clone(),
            book: p.at.book.clone(),
            page: p.at.page,
            text,
            version: job.version,
        };
        applied.extend(tier.apply(&p.at.book, vec![op]).await?);
    }
    Ok(applied)
}

/// Reads a JSON sidecar `{"text": "..."}`.
async fn read_sidecar(node: &Arc<Node>, key: &str) -> Result<String> {
    let bad = |detail: String| Error::Rejected {
        tier: "search".into(),
        detail,
    };
    let meta = node
        .lookup(key)
        .await?
        .ok_or_else(|| bad(format!("text sidecar {key:?} does not exist")))?;
    if meta.size as usize > MAX_TEXT_BYTES + 1024 {
        return Err(bad(format!(
            "text sidecar {key:?} is over {MAX_TEXT_BYTES} bytes"
        )));
    }
    let raw = node.read_blob(&meta, None).await?;
    #[derive(Deserialize)]
    struct Sidecar {
        text: String,
    }
    serde_json::from_slice::<Sidecar>(&raw)
        .map(|s| s.text)
        .map_err(|e| {
            bad(format!(
                "text sidecar {key:?} is not {{\"text\": ...}}: {e}"
            ))
        })
}

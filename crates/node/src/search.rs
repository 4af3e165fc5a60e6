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

/// Longest page text in a sidecar, bytes.
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
    shards: Vec<Arc<ShardMember>>,
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

fn rejected(detail: impl ToString) -> Error {
    Error::Rejected {
        tier: "search".into(),
        detail: detail.to_string(),
    }
}

fn unavailable(detail: impl ToString) -> Error {
    Error::Unavailable {
        tier: "search".into(),
        detail: detail.to_string(),
    }
}

fn search_err(e: search::Error) -> Error {
    match e {
        search::Error::BadQuery(_) | search::Error::Invalid(_) => rejected(e),
        _ => unavailable(e),
    }
}

/// Runs shard work on the blocking pool: the shards of one query are
/// polled by one task and must run side by side.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> search::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(unavailable)?
        .map_err(search_err)
}

/// Sends a JSON body (or none) to a shard and decodes its JSON answer.
async fn call<T: serde::de::DeserializeOwned>(
    http: &HttpClient,
    method: Method,
    url: &str,
    body: Option<Vec<u8>>,
) -> Result<T> {
    let headers = match body {
        Some(_) => vec![("content-type", "application/json".to_owned())],
        None => Vec::new(),
    };
    let r = http
        .send(
            "search",
            method,
            url,
            &headers,
            body.unwrap_or_default().into(),
        )
        .await?;
    check("search", &r)?;
    serde_json::from_slice(&r.body).map_err(|e| unavailable(format!("bad JSON: {e}")))
}

impl ShardHandle {
    async fn apply(&self, ops: Vec<PageOp>) -> Result<Vec<Applied>> {
        match self {
            ShardHandle::Local(s) => s.apply(ops).await.map_err(search_err),
            ShardHandle::Remote { base, http } => {
                #[derive(Deserialize)]
                struct A {
                    applied: Vec<Applied>,
                }
                let body = serde_json::to_vec(&ops).map_err(rejected)?;
                let a: A = call(http, Method::POST, &format!("{base}/pages"), Some(body)).await?;
                Ok(a.applied)
            }
        }
    }

    async fn search(&self, q: &Query) -> Result<Results> {
        match self {
            ShardHandle::Local(s) => {
                let (s, q) = (s.clone(), q.clone());
                blocking(move || s.search(&q)).await
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
                call(http, Method::GET, &url, None).await
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
            shards: shards.into_iter().map(Arc::new).collect(),
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
            .ok_or_else(|| unavailable("no search shards"))?;
        s.handle.apply(ops).await
    }

    /// Runs `q` on every shard that can hold matches, all at once, and
    /// merges the answers (the merge orders them, so arrival order does not
    /// matter). A bad query is an error; a shard that is down, late or
    /// whose task failed makes the answer partial.
    pub async fn search(&self, q: Query) -> Result<Results> {
        q.check().map_err(search_err)?;
        if self.shards.is_empty() {
            return Err(unavailable("no search shards"));
        }
        let t0 = Instant::now();
        let targets: Vec<usize> = match &q.book {
            Some(b) => vec![self.owner(b)],
            None => (0..self.shards.len()).collect(),
        };
        let mut set = tokio::task::JoinSet::new();
        for i in targets {
            let (m, q, limit) = (self.shards[i].clone(), q.clone(), self.timeout);
            set.spawn(async move {
                let r = tokio::time::timeout(limit, m.handle.search(&q))
                    .await
                    .unwrap_or_else(|_| Err(unavailable("no answer in time")));
                (m, r)
            });
        }
        let mut parts = Vec::with_capacity(set.len());
        let mut partial = false;
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((_, Ok(r))) => parts.push(r),
                Ok((_, Err(e @ Error::Rejected { .. }))) => return Err(e),
                Ok((m, Err(e))) => {
                    tracing::warn!(shard = %m.name, error = %e, "search shard left out");
                    partial = true;
                }
                Err(e) => {
                    tracing::error!(error = %e, "search shard task failed");
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

/// After a write or delete of `key` committed as `version`: queues the
/// search change if the key is, or was, a page. Returns the job id (`None`
/// when nothing was queued). Search members need a queue member (the
/// cluster file is refused otherwise), so a node with search has a queue.
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
    let q = node
        .queue()
        .ok_or_else(|| unavailable("search needs a queue; this node has none"))?;
    let payload = serde_json::to_vec(&job).map_err(rejected)?;
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
    let tier = node
        .search()
        .ok_or_else(|| unavailable("this node has no search shards"))?;
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

/// Reads a JSON sidecar `{"text": "..."}`. The blob may be up to twice
/// the text limit (JSON escapes); the text itself at most the limit.
async fn read_sidecar(node: &Arc<Node>, key: &str) -> Result<String> {
    let meta = node
        .lookup(key)
        .await?
        .ok_or_else(|| rejected(format!("text sidecar {key:?} does not exist")))?;
    let too_big = || {
        rejected(format!(
            "text sidecar {key:?} is over {MAX_TEXT_BYTES} bytes"
        ))
    };
    if meta.size > 2 * MAX_TEXT_BYTES as u64 {
        return Err(too_big());
    }
    let raw = node.read_blob(&meta, None).await?;
    #[derive(Deserialize)]
    struct Sidecar {
        text: String,
    }
    let text = serde_json::from_slice::<Sidecar>(&raw)
        .map(|s| s.text)
        .map_err(|e| {
            rejected(format!(
                "text sidecar {key:?} is not {{\"text\": ...}}: {e}"
            ))
        })?;
    if text.len() > MAX_TEXT_BYTES {
        return Err(too_big());
    }
    Ok(text)
}

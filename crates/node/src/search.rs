//! Search from the node's side: placing pages on shards, indexing them
//! through the queue, and scatter-gather of queries.
//!
//! A page image uploaded with `X-Strata-Book` / `X-Strata-Page` and its
//! text (`X-Strata-Text`, percent-encoded UTF-8, or `X-Strata-Text-Key`
//! naming a stored JSON sidecar `{"text": "..."}` for long text) is written
//! like any blob (inline text is kept as the blob `_text/{key}` first, see
//! `Node::write_page`); the index commit gives the change a version, and a
//! job on the `search` queue carries {key, book, page, text, version} to
//! the members that hold the book: its R replicas on the ring over search
//! members. The job succeeds once one replica applied the change; a
//! replica that could not be reached gets a catch-up job of its own.
//! Replacing or deleting the image queues the matching change, so every
//! replica ends with the newest version whatever order jobs run in (see
//! `search::Shard`).
//!
//! A query goes to every shard at once (or, with `book=`, to the book's
//! replicas in turn until one answers); each answers its best books,
//! merged here by score with one copy of each book. A shard that fails or
//! is later than the timeout is left out; the answer is marked `partial`
//! only when all replicas of some books were left out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use index::{BlobMeta, PageRef};
use search::{Applied, PageOp, Query, Results};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Longest page text in a sidecar, bytes.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// Where one shard is.
pub enum ShardHandle {
    /// Same process (`strata serve`).
    Local(Arc<search::Shard>),
    /// A search member over HTTP, through the client beside its server.
    Remote(search::client::ShardClient),
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
    /// Members each book is indexed on.
    replicas: usize,
    /// Every set of members that together hold some books (sorted): an
    /// answer is partial only when every member of one set failed.
    replica_sets: Vec<Vec<usize>>,
}

/// What applying one book's changes on its replicas did.
pub struct Replicated {
    /// The outcome, from the first replica that applied it.
    pub applied: Vec<Applied>,
    /// Members that could not be reached: they must be sent the changes
    /// again later.
    pub missed: Vec<String>,
}

/// Attempts of a catch-up job for a member that was away (about two hours
/// of backoff; a member away longer is rebuilt with `strata reindex`).
pub(crate) const CATCH_UP_ATTEMPTS: u32 = 30;

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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IndexJob {
    pub(crate) key: String,
    pub(crate) version: u64,
    /// The page now, or `None` when the key no longer is a page.
    pub(crate) page: Option<PageUpload>,
    /// The book the key was a page of before, if another one: its shard
    /// must drop the page.
    pub(crate) old_book: Option<String>,
    /// Only this member: a catch-up job for a replica that could not be
    /// reached when the change was first applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) only: Option<String>,
}

pub(crate) fn rejected(detail: impl ToString) -> Error {
    Error::Rejected {
        tier: "search".into(),
        detail: detail.to_string(),
    }
}

pub(crate) fn unavailable(detail: impl ToString) -> Error {
    Error::Unavailable {
        tier: "search".into(),
        detail: detail.to_string(),
    }
}

fn search_err(e: search::Error) -> Error {
    match e {
        search::Error::BadQuery(_) | search::Error::Invalid(_) => rejected(e),
        search::Error::Answered { status, .. } if (400..500).contains(&status) => rejected(e),
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

impl ShardHandle {
    async fn apply(&self, ops: Vec<PageOp>) -> Result<Vec<Applied>> {
        match self {
            ShardHandle::Local(s) => s.apply(ops).await.map_err(search_err),
            ShardHandle::Remote(c) => c.apply(&ops).await.map_err(search_err),
        }
    }

    async fn search(&self, q: &Query) -> Result<Results> {
        match self {
            ShardHandle::Local(s) => {
                let (s, q) = (s.clone(), q.clone());
                blocking(move || s.search(&q)).await
            }
            ShardHandle::Remote(c) => c.search(q).await.map_err(search_err),
        }
    }
}

impl SearchTier {
    /// Shards in cluster-file order, each book on `replicas` of them (at
    /// least 1, at most all); a shard slower than `timeout` is left out of
    /// an answer.
    pub fn new(shards: Vec<ShardMember>, timeout: Duration, replicas: usize) -> SearchTier {
        let names: Vec<&str> = shards.iter().map(|s| s.name.as_str()).collect();
        let ring = cluster::Ring::new(&names, cluster::DEFAULT_POINTS);
        let replicas = replicas.clamp(1, shards.len().max(1));
        SearchTier {
            replica_sets: ring.replica_sets(replicas),
            ring,
            shards: shards.into_iter().map(Arc::new).collect(),
            timeout,
            replicas,
        }
    }

    /// The shards that hold `book`'s pages, the owner first.
    pub fn owners(&self, book: &str) -> Vec<usize> {
        self.ring.owners(book.as_bytes(), self.replicas)
    }

    /// Whether member `name` is one of `book`'s replicas.
    pub fn holds(&self, name: &str, book: &str) -> bool {
        self.owners(book)
            .iter()
            .any(|&i| self.shards[i].name == name)
    }

    /// The shards' member names, in cluster-file order.
    pub fn names(&self) -> Vec<String> {
        self.shards.iter().map(|s| s.name.clone()).collect()
    }

    /// Applies `ops` on member `name` only (a catch-up, or a rebuild).
    pub async fn apply_on(&self, name: &str, ops: Vec<PageOp>) -> Result<Vec<Applied>> {
        let s = self
            .shards
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| rejected(format!("no search member {name:?}")))?;
        s.handle.apply(ops).await
    }

    /// Applies `ops` on every replica of `book` at once. It is applied if
    /// one replica applied it; replicas that could not be reached are
    /// named in `missed`. A refusal (bad change) is an error.
    pub async fn apply(&self, book: &str, ops: Vec<PageOp>) -> Result<Replicated> {
        let owners = self.owners(book);
        if owners.is_empty() {
            return Err(unavailable("no search shards"));
        }
        let mut set = tokio::task::JoinSet::new();
        for i in owners {
            let (m, ops) = (self.shards[i].clone(), ops.clone());
            set.spawn(async move {
                let r = m.handle.apply(ops).await;
                (m, r)
            });
        }
        let mut out = Replicated {
            applied: Vec::new(),
            missed: Vec::new(),
        };
        let mut any = false;
        let mut last = None;
        while let Some(joined) = set.join_next().await {
            let (m, r) = joined.map_err(unavailable)?;
            match r {
                Ok(a) => {
                    if !any {
                        out.applied = a;
                        any = true;
                    }
                }
                Err(e @ Error::Rejected { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(shard = %m.name, error = %e, "search replica missed a change");
                    out.missed.push(m.name.clone());
                    last = Some(e);
                }
            }
        }
        match (any, last) {
            (false, Some(e)) => Err(e),
            _ => Ok(out),
        }
    }

    /// Runs `q` on the shards that can hold matches, all at once, and
    /// merges the answers (the merge orders them, so arrival order does not
    /// matter; a book two replicas answered is kept once). A bad query is
    /// an error. The answer is partial only when every replica of some
    /// books was down, late or failed.
    pub async fn search(&self, q: Query) -> Result<Results> {
        q.check().map_err(search_err)?;
        if self.shards.is_empty() {
            return Err(unavailable("no search shards"));
        }
        let t0 = Instant::now();
        let mut out = match &q.book {
            Some(b) => self.search_book(&q, self.owners(b)).await?,
            None => self.search_all(&q).await?,
        };
        out.took_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(out)
    }

    /// Asks one shard, within the timeout.
    async fn ask(m: Arc<ShardMember>, q: Query, limit: Duration) -> Result<Results> {
        let r = tokio::time::timeout(limit, m.handle.search(&q))
            .await
            .unwrap_or_else(|_| Err(unavailable("no answer in time")));
        if let Err(e) = &r {
            if !matches!(e, Error::Rejected { .. }) {
                tracing::warn!(shard = %m.name, error = %e, "search shard left out");
            }
        }
        r
    }

    /// One book lives on its replicas: the first that answers does.
    async fn search_book(&self, q: &Query, owners: Vec<usize>) -> Result<Results> {
        for i in owners {
            match Self::ask(self.shards[i].clone(), q.clone(), self.timeout).await {
                Ok(r) => return Ok(Results::merge(vec![r], q.limit)),
                Err(e @ Error::Rejected { .. }) => return Err(e),
                Err(_) => continue,
            }
        }
        Ok(Results {
            partial: true,
            ..Results::default()
        })
    }

    /// Every shard at once: each answers for the books it holds, and the
    /// replicas of a failed shard's books answer for them.
    async fn search_all(&self, q: &Query) -> Result<Results> {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..self.shards.len() {
            let ask = Self::ask(self.shards[i].clone(), q.clone(), self.timeout);
            set.spawn(async move { (i, ask.await) });
        }
        let mut parts = Vec::with_capacity(set.len());
        let mut failed = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.map_err(unavailable)?;
            match r {
                Ok(r) => parts.push(r),
                Err(e @ Error::Rejected { .. }) => return Err(e),
                Err(_) => failed.push(i),
            }
        }
        let mut out = Results::merge(parts, q.limit);
        out.partial |= self
            .replica_sets
            .iter()
            .any(|set| set.iter().all(|i| failed.contains(i)));
        Ok(out)
    }
}

/// The indexing job a write or delete of `key`, committed as `version`,
/// makes when the key is, or was, a page: its payload and its
/// idempotency key (the version makes a retried write queue its change
/// once). `None` when there is nothing to index.
pub(crate) fn change_job(
    key: &str,
    version: u64,
    page: Option<PageUpload>,
    previous: Option<&BlobMeta>,
) -> Result<Option<(Vec<u8>, String)>> {
    let old_book = previous
        .and_then(|p| p.page.as_ref())
        .map(|p| p.book.clone());
    if page.is_none() && old_book.is_none() {
        return Ok(None);
    }
    let old_book = old_book.filter(|b| Some(b) != page.as_ref().map(|p| &p.at.book));
    let job = IndexJob {
        key: key.to_owned(),
        version,
        page,
        old_book,
        only: None,
    };
    let payload = serde_json::to_vec(&job).map_err(rejected)?;
    Ok(Some((payload, format!("search:{key}:{version}"))))
}

//! What goes in and out of a shard: page operations, queries, nested hits.

use serde::{Deserialize, Serialize};

/// One change to the pages of a shard. `version` orders changes of the same
/// key: a shard applies a change only if its version is higher than the
/// last one it applied (or deleted) for that key, so changes that arrive
/// out of order — two workers, a retried job — end with the newest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PageOp {
    /// Adds or replaces the page whose image is blob `key`.
    Upsert {
        /// Key of the page image (the page's identity).
        key: String,
        /// Book the page belongs to.
        book: String,
        /// Page number in the book.
        page: u64,
        /// The words on the page.
        text: String,
        /// Order of this change among the key's changes.
        version: u64,
    },
    /// Removes the page whose image is blob `key`.
    Delete {
        /// Key of the page image.
        key: String,
        /// Order of this change among the key's changes.
        version: u64,
    },
}

impl PageOp {
    /// The page image's key.
    pub fn key(&self) -> &str {
        match self {
            PageOp::Upsert { key, .. } | PageOp::Delete { key, .. } => key,
        }
    }

    /// The change's version.
    pub fn version(&self) -> u64 {
        match self {
            PageOp::Upsert { version, .. } | PageOp::Delete { version, .. } => *version,
        }
    }
}

/// What became of one [`PageOp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Applied {
    /// Applied and committed: visible to searches.
    Applied,
    /// A newer change of the key was already applied; this one was dropped.
    Stale,
}

/// A query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// Query text: words (all must match), `"a phrase"`, `-excluded`, `a OR b`.
    pub q: String,
    /// Only this book, if set.
    #[serde(default)]
    pub book: Option<String>,
    /// Books to return.
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Best pages shown per book.
    #[serde(default = "default_pages")]
    pub pages: usize,
}

fn default_limit() -> usize {
    10
}

fn default_pages() -> usize {
    3
}

/// Most books one query returns.
pub const MAX_LIMIT: usize = 100;
/// Most pages shown per book.
pub const MAX_PAGES: usize = 20;
/// Longest query text, bytes.
pub const MAX_QUERY_BYTES: usize = 1024;

impl Query {
    /// A query for `q` with the default limits.
    pub fn new(q: impl Into<String>) -> Query {
        Query {
            q: q.into(),
            book: None,
            limit: default_limit(),
            pages: default_pages(),
        }
    }

    /// Refuses what no shard should run.
    pub fn check(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Invalid(m));
        if self.q.trim().is_empty() {
            return bad("q must not be empty".into());
        }
        if self.q.len() > MAX_QUERY_BYTES {
            return bad(format!("q is longer than {MAX_QUERY_BYTES} bytes"));
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return bad(format!("limit must be 1..={MAX_LIMIT}"));
        }
        if self.pages == 0 || self.pages > MAX_PAGES {
            return bad(format!("pages must be 1..={MAX_PAGES}"));
        }
        Ok(())
    }
}

/// A matching page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageHit {
    /// Page number.
    pub page: u64,
    /// Key of the page image.
    pub key: String,
    /// BM25 score of the page.
    pub score: f32,
    /// Part of the page's text around the matches, HTML-escaped, matches
    /// in `<b>`.
    pub snippet: String,
}

/// A matching book: its score is its best page's, its pages best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookHit {
    /// Book name.
    pub book: String,
    /// Best page score.
    pub score: f32,
    /// Best pages, best first.
    pub pages: Vec<PageHit>,
}

/// Answer of one shard, or the merge of several.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Books, best first.
    pub books: Vec<BookHit>,
    /// True when a shard did not answer: books on it are missing.
    pub partial: bool,
    /// Time spent, milliseconds.
    pub took_ms: f64,
}

impl Results {
    /// Merges shard answers: books by score (ties by name, so the order is
    /// stable), cut to `limit`. A book answered by two replicas is kept
    /// once, with its better score (each shard scores by its own word
    /// statistics, so replicas may differ a little).
    pub fn merge(parts: Vec<Results>, limit: usize) -> Results {
        let mut out = Results::default();
        for p in parts {
            out.partial |= p.partial;
            out.books.extend(p.books);
        }
        out.books.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.book.cmp(&b.book))
        });
        let mut seen = std::collections::HashSet::new();
        out.books.retain(|b| seen.insert(b.book.clone()));
        out.books.truncate(limit);
        out
    }
}

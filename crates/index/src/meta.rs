//! The record kept per key, and listing pages.

use serde::{Deserialize, Serialize};

/// Largest page a listing returns.
pub const MAX_LIST_LIMIT: usize = 1000;

/// What the index knows about one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BlobMeta {
    /// Blob id: the key's bytes in every store replica.
    pub id: u64,
    /// Size in bytes.
    pub size: u64,
    /// Strong entity tag, quoted, e.g. `"1f2e3d4c5b6a7988"`.
    pub etag: String,
    /// Content-Type given at upload.
    pub content_type: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
    /// Names of the stores that hold a copy, best first.
    pub replicas: Vec<String>,
    /// Tags given at upload (`X-Strata-Tags`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Commit number the index gave this record: it grows with every put
    /// and delete, so it orders the changes of a key (search uses it to
    /// keep the newest version of a page).
    #[serde(default)]
    pub version: u64,
    /// The book page this blob is an image of, if uploaded as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<PageRef>,
    /// Response headers given at upload and sent back with the blob, names
    /// lower-case: the S3 API's `x-amz-meta-*` user metadata,
    /// `cache-control`, `content-disposition`, `content-encoding`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// An object stored in chunks: each chunk is a blob of its own under
    /// its own key, and this record's own blob holds only the manifest
    /// (this list, so `recover-index` can rebuild it). `size` is the sum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Chunk>,
}

/// One chunk of an object stored in chunks, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The chunk blob's key (`_chunks/...`, or a multipart upload's part).
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A book page: which book, which page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRef {
    /// Book name.
    pub book: String,
    /// Page number.
    pub page: u64,
    /// The key of the stored JSON blob `{"text": ...}` holding the page's
    /// words, from which a search shard can be rebuilt (`strata reindex`).
    /// `None` for pages uploaded before page text was always stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_key: Option<String>,
}

/// What a put or delete committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Committed {
    /// The change's commit number (for a delete of an absent key: 0).
    pub version: u64,
    /// The record replaced or removed.
    pub previous: Option<BlobMeta>,
    /// A put that changed nothing: the key already holds a change with a
    /// higher commit number (a concurrent put that took its number later,
    /// or a delete). The put is ordered before that change, as if
    /// overwritten at once; its copies are garbage.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
}

/// One listed key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Its metadata.
    #[serde(flatten)]
    pub meta: BlobMeta,
}

/// One page of a listing, sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Listing {
    /// The entries.
    pub items: Vec<Entry>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub next: Option<String>,
}

/// Checks an id lease's size, the same for every backend.
pub(crate) fn check_count(count: u64) -> crate::Result<()> {
    if count == 0 || count > 1 << 20 {
        return Err(crate::Error::Invalid(format!(
            "count must be 1..=1048576, got {count}"
        )));
    }
    Ok(())
}

//! Read-through: on a miss the cache server fetches the value from the
//! origin itself, and concurrent misses of one key share one fetch through
//! the proxy crate's collapsed forwarding, so a cold key costs one origin
//! read however many clients ask at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use collapse::{CollapseOptions, Collapser};

use crate::engine::{Cache, StoreMode};

/// Where values come from on a miss.
pub trait Origin: Send + Sync {
    /// The value for `key`, or `None` if the origin has none (or the key is
    /// not one it serves).
    fn fetch<'a>(
        &'a self,
        key: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Option<Bytes>> + Send + 'a>>;
}

/// An origin fetch that cannot fail (a missing value is `None`).
type Never = std::convert::Infallible;

/// Misses collapsed per cache key.
type MissCollapser = Collapser<Vec<u8>, Option<Bytes>, Never>;

/// The collapsed-forwarding front of an [`Origin`].
pub struct ReadThrough {
    origin: Arc<dyn Origin>,
    /// `None`: every miss reads the origin itself (collapsing switched off
    /// for the cache tier).
    collapser: Option<Arc<MissCollapser>>,
}

impl ReadThrough {
    /// Wraps `origin`.
    pub fn new(origin: Arc<dyn Origin>) -> Self {
        Self::with_collapsing(origin, true)
    }

    /// Wraps `origin`, collapsing concurrent misses or not.
    pub fn with_collapsing(origin: Arc<dyn Origin>, collapse: bool) -> Self {
        ReadThrough {
            origin,
            collapser: collapse.then(|| Collapser::new(CollapseOptions::default())),
        }
    }

    /// Misses of `key` waiting on the origin read in flight for it.
    pub fn waiting(&self, key: &[u8]) -> u64 {
        self.collapser
            .as_ref()
            .map_or(0, |c| c.followers(&key.to_vec()))
    }

    /// Reads `key` from the origin after a miss, joining a fetch already in
    /// flight for it, and fills `cache` with the answer.
    pub async fn load(&self, cache: &Arc<Cache>, key: &[u8]) -> Option<Bytes> {
        let (origin, cache2, k) = (self.origin.clone(), cache.clone(), key.to_vec());
        let fetch = move || async move {
            // A fetch that finished between our miss and this one filled
            // the cache: use that rather than reading the origin again.
            if let Some(it) = cache2.peek(&k) {
                return Ok::<_, Never>(Some(it.value));
            }
            let v = origin.fetch(&k).await;
            if let Some(v) = &v {
                cache2.store(StoreMode::Set, &k, v.clone(), 0, 0);
            }
            Ok(v)
        };
        match &self.collapser {
            Some(c) => c.get(key.to_vec(), fetch).await.ok().flatten(),
            None => fetch().await.ok().flatten(),
        }
    }
}

//! Read-through: on a miss the cache server fetches the value from the
//! origin itself, and concurrent misses of one key share one fetch
//! (single-flight), so a cold key costs one origin read however many
//! clients ask at once.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use crate::engine::{Cache, StoreMode};

/// Where values come from on a miss.
pub trait Origin: Send + Sync {
    /// The value for `key`, or `None` if the origin has none (or the key is
    /// not one it serves). Called at most once at a time per key.
    fn fetch<'a>(
        &'a self,
        key: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Option<Bytes>> + Send + 'a>>;
}

/// One fetch in flight: every waiter awaits the same cell.
type Flight = Arc<OnceCell<Option<Bytes>>>;

/// The single-flight table in front of an [`Origin`].
pub struct ReadThrough {
    origin: Arc<dyn Origin>,
    inflight: Mutex<HashMap<Vec<u8>, Flight>>,
    /// Origin fetches made (one per collapsed group of misses).
    pub fetches: std::sync::atomic::AtomicU64,
}

impl ReadThrough {
    /// Wraps `origin`.
    pub fn new(origin: Arc<dyn Origin>) -> Self {
        ReadThrough {
            origin,
            inflight: Mutex::new(HashMap::new()),
            fetches: Default::default(),
        }
    }

    /// Reads `key` from the origin after a miss, joining a fetch already in
    /// flight for it, and fills `cache` with the answer.
    pub async fn load(&self, cache: &Cache, key: &[u8]) -> Option<Bytes> {
        let cell = {
            let mut m = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(key.to_vec())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        let v = cell
            .get_or_init(|| async {
                // Another fetch may have filled the cache between our miss
                // and taking the cell: check before going to the origin.
                if let Some(it) = cache.peek(key) {
                    return Some(it.value);
                }
                self.fetches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let v = self.origin.fetch(key).await;
                if let Some(v) = &v {
                    cache.store(StoreMode::Set, key, v.clone(), 0, 0);
                }
                v
            })
            .await
            .clone();
        // The first one out removes the cell; later misses start afresh
        // (and will find the value in the cache).
        let mut m = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            m.remove(key);
        }
        v
    }
}

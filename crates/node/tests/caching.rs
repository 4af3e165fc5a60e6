//! The node's cache tiers without HTTP: local memory over a disk tier that
//! survives a restart, and invalidation reaching both.

use std::sync::Arc;

use bytes::Bytes;
use cache::{Cache, CacheConfig, ManualClock, Policy};
use index::BlobMeta;
use node::{Caching, CachingOptions, GlobalCache};

fn tiers(dir: &std::path::Path, clock: Arc<ManualClock>) -> Caching {
    let local = Arc::new(Cache::new(
        CacheConfig {
            max_bytes: 4 << 20,
            item_max: 1 << 20,
            policy: Policy::S3Fifo,
        },
        clock,
    ));
    let opts = CachingOptions {
        meta_ttl_secs: 2,
        hot_threshold: 1000,
        item_max: 1 << 20,
        through: false,
    };
    Caching::new(Some(local), GlobalCache::None, opts)
        .with_disk(cache::disk::DiskTier::open(dir, 16 << 20).expect("disk tier"))
}

fn meta(id: u64) -> BlobMeta {
    BlobMeta {
        id,
        size: 3,
        etag: "\"e\"".into(),
        content_type: "text/plain".into(),
        created_ms: 0,
        replicas: vec!["s".into()],
        tags: vec![],
        version: 0,
        page: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn disk_tier_survives_restart_and_honours_ttl_and_invalidation() {
    let dir = tempfile::tempdir().expect("tmp");
    let clock = Arc::new(ManualClock::new(1_900_000_000));
    {
        let c = tiers(dir.path(), clock.clone());
        c.put_data(7, Bytes::from_static(b"abc")).await;
        c.put_meta("k", &meta(7)).await;
        c.put_meta("gone", &meta(8)).await;
        c.invalidate("gone").await;
    }
    // A new process: empty memory, the disk tier answers and promotes.
    let c = tiers(dir.path(), clock.clone());
    assert_eq!(c.get_data(7).await.as_deref(), Some(&b"abc"[..]));
    assert_eq!(c.get_meta("k").await, Some(meta(7)));
    assert_eq!(
        c.get_meta("gone").await,
        None,
        "invalidated before the restart"
    );
    assert_eq!(
        c.disk_counters
            .hits
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // Metadata copies expire after meta_ttl_secs in every local tier;
    // blob bytes (immutable) do not.
    clock.advance(2);
    let c = tiers(dir.path(), clock.clone());
    assert_eq!(c.get_meta("k").await, None);
    assert_eq!(c.get_data(7).await.as_deref(), Some(&b"abc"[..]));
}

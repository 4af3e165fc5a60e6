//! A store member's garbage collector: deletes the live copies no index
//! entry names — a store that was dead while its blobs got new homes and
//! came back, hedged writes whose extra copy was not cleaned up, failed
//! overwrites — on a schedule (`store.gc_interval_secs`) and on
//! `POST /admin/gc`.
//!
//! A copy is collected only when, in this pass, the index entry of the
//! key its needle names (it carries the key: volume format 2) does not
//! name this blob on this store, its needle was written at least
//! `gc_grace_secs` ago, and an earlier pass at least that long ago found
//! it unnamed too. So a write whose needles are on disk but whose index
//! commit is still on its way (a PostgreSQL failover can hold it for a
//! minute), or a repair copy about to be recorded, is never touched.
//! Needles of volume format 1 carry no key and are left alone. An index
//! that cannot be asked ends the pass: no copy is deleted unless the index
//! just answered that it names it nowhere here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use cluster::ClusterConfig;
use index::needle_meta::{Kind, NeedleMeta};
use index::Index;
use tokio::sync::watch;

/// Collects one store's orphaned copies.
pub(crate) struct Collector {
    name: String,
    store: Arc<store::Store>,
    cfg: Arc<ClusterConfig>,
    /// Opened on the first pass: a store starts whether or not the index
    /// answers.
    index: tokio::sync::OnceCell<Arc<dyn Index>>,
    grace: Duration,
    every: Option<Duration>,
    /// Blob id -> when a pass first found it unnamed.
    unnamed: tokio::sync::Mutex<HashMap<u64, Instant>>,
}

/// What one pass did.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct GcReport {
    /// Live copies looked at.
    checked: u64,
    /// Copies written less than the grace period ago (not judged).
    young: u64,
    /// Copies no index entry names, kept until a later pass.
    unnamed: u64,
    /// Copies deleted.
    reclaimed: u64,
    /// Their data bytes.
    reclaimed_bytes: u64,
    /// Copies whose needle names no key (volume format 1), left alone.
    unkeyed: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Collector {
    pub(crate) fn new(cfg: Arc<ClusterConfig>, name: &str, store: Arc<store::Store>) -> Collector {
        Collector {
            name: name.to_owned(),
            store,
            grace: Duration::from_secs(cfg.store.gc_grace_secs),
            every: (cfg.store.gc_interval_secs > 0)
                .then(|| Duration::from_secs(cfg.store.gc_interval_secs)),
            cfg,
            index: tokio::sync::OnceCell::new(),
            unnamed: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Runs a pass every interval until `stop`.
    pub(crate) fn spawn(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(every) = self.every else { return };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
                match self.pass().await {
                    Ok(r) => tracing::info!(store = %self.name, ?r, "garbage collection done"),
                    Err(e) => {
                        tracing::warn!(store = %self.name, error = %e, "garbage collection stopped")
                    }
                }
            }
        });
    }

    /// `POST /admin/gc` (behind the admin token).
    pub(crate) fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/admin/gc", post(gc_now))
            .with_state(self)
    }

    async fn index(&self) -> anyhow::Result<&Arc<dyn Index>> {
        self.index
            .get_or_try_init(|| crate::cluster_index_backend(&self.cfg))
            .await
    }

    /// One pass over every live copy (one at a time: the lock).
    pub(crate) async fn pass(&self) -> anyhow::Result<GcReport> {
        let mut unnamed = self.unnamed.lock().await;
        let index = self.index().await?.clone();
        let grace_ms = self.grace.as_millis() as u64;
        let mut seen = HashMap::new();
        let mut r = GcReport::default();
        for (v, _) in self.store.volumes() {
            let mut from = 0;
            loop {
                let page = match self.store.heads(v, from, None, 4096) {
                    Ok(p) => p,
                    // Compacted away meanwhile: its copies moved to a
                    // volume read later, or were gone anyway.
                    Err(store::Error::NoVolume(_)) => break,
                    Err(e) => return Err(e.into()),
                };
                for h in page.heads.iter().filter(|h| h.live) {
                    r.checked += 1;
                    let Some(m) = NeedleMeta::decode(&h.meta, h.id, u64::from(h.size)) else {
                        r.unkeyed += 1;
                        continue;
                    };
                    if now_ms().saturating_sub(m.created_ms) < grace_ms {
                        r.young += 1;
                        continue;
                    }
                    let named = index
                        .get(&m.key)
                        .await?
                        .is_some_and(|e| e.id == h.id && e.replicas.contains(&self.name));
                    if named {
                        continue;
                    }
                    let first = unnamed.get(&h.id).copied().unwrap_or_else(Instant::now);
                    if first.elapsed() < self.grace {
                        r.unnamed += 1;
                        seen.insert(h.id, first);
                        continue;
                    }
                    let why = NeedleMeta {
                        kind: Kind::Dropped,
                        created_ms: now_ms(),
                        ..m
                    };
                    match self.store.delete(h.id, why.encode()).await {
                        Ok(()) | Err(store::Error::NotFound(_)) => {
                            r.reclaimed += 1;
                            r.reclaimed_bytes += u64::from(h.size);
                            tracing::info!(store = %self.name, blob = h.id, key = %why.key, "orphaned copy collected");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                match page.next {
                    Some(n) => from = n,
                    None => break,
                }
            }
        }
        // Only what is still unnamed carries its first sighting forward.
        *unnamed = seen;
        Ok(r)
    }
}

async fn gc_now(State(c): State<Arc<Collector>>) -> Response {
    match c.pass().await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": "gc", "detail": e.to_string() })),
        )
            .into_response(),
    }
}

//! A store member's scrubber: reads back every blob on a schedule (and on
//! `POST /admin/scrub`), and queues the repair of each bad needle from a
//! good replica for the nodes' repair workers.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use cluster::{ClusterConfig, Member, Role};
use node::jobs::QueueHandle;
use tokio::sync::watch;

/// Scrubs one store.
pub(crate) struct Scrubber {
    name: String,
    store: Arc<store::Store>,
    queue: Option<QueueHandle>,
    every: Option<Duration>,
    attempts: u32,
    /// One pass at a time.
    running: tokio::sync::Mutex<()>,
}

impl Scrubber {
    pub(crate) fn new(cfg: &ClusterConfig, me: &Member, store: Arc<store::Store>) -> Scrubber {
        Scrubber {
            name: me.name.clone(),
            store,
            queue: cfg
                .members_with(Role::Queue)
                .next()
                .map(|q| crate::queue_handle(cfg, q)),
            every: (cfg.store.scrub_interval_secs > 0)
                .then(|| Duration::from_secs(cfg.store.scrub_interval_secs)),
            attempts: cfg.queue.attempts,
            running: tokio::sync::Mutex::new(()),
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
                let report = self.pass().await;
                tracing::info!(store = %self.name, ?report, "scheduled scrub done");
            }
        });
    }

    /// `POST /admin/scrub` (behind the admin token).
    pub(crate) fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/admin/scrub", post(scrub_now))
            .with_state(self)
    }

    /// One pass: the store's report plus how many repairs were queued.
    async fn pass(&self) -> serde_json::Value {
        let _one = self.running.lock().await;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let store = self.store.clone();
        let report = match tokio::task::spawn_blocking(move || store.scrub()).await {
            Ok(r) => r,
            Err(e) => return serde_json::json!({ "error": e.to_string() }),
        };
        let mut queued = 0;
        let mut unqueued = Vec::new();
        for &id in &report.corrupt {
            let Some(q) = &self.queue else {
                unqueued.push(id);
                continue;
            };
            let (payload, key) = node::repair::corrupt_job(id, &self.name, started);
            match q
                .put_job(node::repair::REPAIRS, payload, Some(key), self.attempts)
                .await
            {
                Ok(_) => queued += 1,
                Err(e) => {
                    tracing::warn!(blob = id, error = %e, "scrub: could not queue the repair");
                    unqueued.push(id);
                }
            }
        }
        serde_json::json!({
            "checked": report.checked,
            "bytes": report.bytes,
            "corrupt": report.corrupt,
            "repairs_queued": queued,
            "not_queued": unqueued,
        })
    }
}

async fn scrub_now(State(s): State<Arc<Scrubber>>) -> Response {
    axum::Json(s.pass().await).into_response()
}

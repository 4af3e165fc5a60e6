//! Node counters, kept as relaxed atomics on the request path and read
//! into the node's registry at each scrape (`Node::new` registers them).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one node.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Blob GET/HEAD requests.
    pub gets: AtomicU64,
    /// Blob PUT requests.
    pub puts: AtomicU64,
    /// Blob DELETE requests.
    pub deletes: AtomicU64,
    /// Listing requests.
    pub lists: AtomicU64,
    /// Responses with a 4xx status.
    pub client_errors: AtomicU64,
    /// Responses with a 5xx status.
    pub server_errors: AtomicU64,
    /// Body bytes received in PUTs.
    pub bytes_in: AtomicU64,
    /// Body bytes sent in GETs.
    pub bytes_out: AtomicU64,
    /// Reads that moved on to another replica after a failure.
    pub failovers: AtomicU64,
    /// Store requests that failed (store marked down).
    pub store_errors: AtomicU64,
    /// Range requests served from aligned slices.
    pub sliced_requests: AtomicU64,
    /// Slices read from a store (the rest came from the cache or another
    /// request's read).
    pub slice_reads: AtomicU64,
    /// Blob requests being served right now (reported on `/load`).
    pub in_flight: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl NodeMetrics {
    /// Counts an answer's status among client or server errors.
    pub fn count_status(&self, status: u16) {
        match status {
            400..=499 => inc(&self.client_errors),
            500..=599 => inc(&self.server_errors),
            _ => {}
        }
    }

    /// The node's own families. `batched`: the batcher's counts of
    /// multi-gets and the reads they carried (the batcher keeps them; zero
    /// with batching off).
    pub fn families(&self, healthy_stores: usize, batched: (u64, u64)) -> Vec<prom::Family> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out: Vec<prom::Family> = [
            (
                "strata_node_gets_total",
                "Blob GET and HEAD requests.",
                l(&self.gets),
            ),
            (
                "strata_node_puts_total",
                "Blob PUT requests.",
                l(&self.puts),
            ),
            (
                "strata_node_deletes_total",
                "Blob DELETE requests.",
                l(&self.deletes),
            ),
            (
                "strata_node_lists_total",
                "Listing requests.",
                l(&self.lists),
            ),
            (
                "strata_node_client_errors_total",
                "Responses with a 4xx status.",
                l(&self.client_errors),
            ),
            (
                "strata_node_server_errors_total",
                "Responses with a 5xx status.",
                l(&self.server_errors),
            ),
            (
                "strata_node_received_bytes_total",
                "Upload body bytes.",
                l(&self.bytes_in),
            ),
            (
                "strata_node_sent_bytes_total",
                "Blob body bytes sent.",
                l(&self.bytes_out),
            ),
            (
                "strata_node_failovers_total",
                "Reads served by a later replica.",
                l(&self.failovers),
            ),
            (
                "strata_node_store_errors_total",
                "Failed store requests.",
                l(&self.store_errors),
            ),
            (
                "strata_proxy_sliced_requests_total",
                "Range requests served from aligned slices.",
                l(&self.sliced_requests),
            ),
            (
                "strata_proxy_slice_reads_total",
                "Slices this node asked a store for.",
                l(&self.slice_reads),
            ),
            (
                "strata_proxy_batches_total",
                "Multi-gets sent to stores.",
                batched.0,
            ),
            (
                "strata_proxy_batched_reads_total",
                "Reads sent inside a multi-get.",
                batched.1,
            ),
        ]
        .into_iter()
        .map(|(name, help, v)| prom::Family::counter(name, help).with(v as f64))
        .collect();
        out.push(
            prom::Family::gauge("strata_node_healthy_stores", "Stores currently marked up.")
                .with(healthy_stores as f64),
        );
        out
    }
}

/// Hit/miss counters of one cache tier.
#[derive(Debug, Default)]
pub struct TierCounters {
    /// Found.
    pub hits: AtomicU64,
    /// Not found.
    pub misses: AtomicU64,
}

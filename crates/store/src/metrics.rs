//! Store counters (the `prometheus` library's own) and the gauges read at
//! scrape time, as one collector for whichever registry shows them: the
//! store server's `/metrics`, or the node page of `strata serve`.

use prom::{counter, Family, Group, IntCounter, Section};

/// Counters of one store. Each store owns its own (no global registry), so
/// several stores in one test process report separately.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Needle reads (whole or ranged).
    pub reads: IntCounter,
    /// Data bytes returned by reads.
    pub bytes_read: IntCounter,
    /// Data needles appended.
    pub writes: IntCounter,
    /// Data bytes appended.
    pub bytes_written: IntCounter,
    /// Tombstones appended.
    pub deletes: IntCounter,
    /// Group commits (one fsync each).
    pub fsync_batches: IntCounter,
    /// Volumes sealed and replaced by a new active one.
    pub rollovers: IntCounter,
    /// Volumes compacted.
    pub compactions: IntCounter,
    /// Bytes reclaimed by compaction.
    pub compacted_bytes: IntCounter,
    /// Bytes cut off torn tails at open.
    pub torn_bytes: IntCounter,
    /// Multi-get requests (batched small reads from nodes).
    pub mgets: IntCounter,
    /// Blobs read back by scrubs.
    pub scrubbed: IntCounter,
    /// Bad needles scrubs found.
    pub scrub_corrupt: IntCounter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            reads: counter("strata_store_reads_total", "Needle reads served."),
            bytes_read: counter("strata_store_read_bytes_total", "Data bytes read."),
            writes: counter("strata_store_writes_total", "Needles appended."),
            bytes_written: counter("strata_store_written_bytes_total", "Data bytes appended."),
            deletes: counter("strata_store_deletes_total", "Tombstones appended."),
            fsync_batches: counter(
                "strata_store_fsync_batches_total",
                "Group commits, one fsync each.",
            ),
            rollovers: counter("strata_store_rollovers_total", "Volumes sealed."),
            compactions: counter("strata_store_compactions_total", "Volumes compacted."),
            compacted_bytes: counter(
                "strata_store_compacted_bytes_total",
                "Bytes reclaimed by compaction.",
            ),
            torn_bytes: counter(
                "strata_store_torn_bytes_total",
                "Bytes cut off torn volume tails at open.",
            ),
            mgets: counter(
                "strata_store_mgets_total",
                "Multi-get requests (batched reads).",
            ),
            scrubbed: counter(
                "strata_store_scrubbed_total",
                "Blobs read back and verified by scrubs.",
            ),
            scrub_corrupt: counter(
                "strata_store_scrub_corrupt_total",
                "Bad needles found by scrubs.",
            ),
        }
    }
}

impl StoreMetrics {
    /// The counters plus the gauges `read` gives at each scrape.
    pub fn collector(&self, read: impl Fn() -> Gauges + Send + Sync + 'static) -> Group {
        Group::new()
            .with_counters([
                &self.reads,
                &self.bytes_read,
                &self.writes,
                &self.bytes_written,
                &self.deletes,
                &self.fsync_batches,
                &self.rollovers,
                &self.compactions,
                &self.compacted_bytes,
                &self.torn_bytes,
                &self.mgets,
                &self.scrubbed,
                &self.scrub_corrupt,
            ])
            .with(Section::new(move || read().families()))
    }
}

/// What a store measures at scrape time rather than counts.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Live blobs.
    pub blobs: usize,
    /// Heap bytes of the needle map.
    pub map_bytes: usize,
    /// The store's share of its disk.
    pub disk: DiskUse,
}

impl Gauges {
    fn families(&self) -> Vec<Family> {
        let mut free = Family::gauge(
            "strata_store_disk_free_bytes",
            "Bytes free to unprivileged writers on the volumes' file system.",
        );
        if let Some(f) = self.disk.free {
            free.add(&[], f as f64);
        }
        vec![
            Family::gauge("strata_store_blobs", "Live blobs.").with(self.blobs as f64),
            Family::gauge(
                "strata_store_needle_map_bytes",
                "Heap bytes of the needle map.",
            )
            .with(self.map_bytes as f64),
            Family::gauge("strata_store_volumes", "Volume files.").with(self.disk.volumes as f64),
            Family::gauge(
                "strata_store_disk_used_bytes",
                "Bytes of needles in the volume files.",
            )
            .with(self.disk.used as f64),
            free,
        ]
    }
}

/// The store's share of its disk, for the metrics page.
#[derive(Debug, Clone, Copy)]
pub struct DiskUse {
    /// Volume files.
    pub volumes: usize,
    /// Needle bytes in them.
    pub used: u64,
    /// Free bytes on their file system; `None` when it cannot be read.
    pub free: Option<u64>,
}

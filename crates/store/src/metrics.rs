//! Store counters, rendered as Prometheus text by the server.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one store. Each store owns its own (no global registry), so
/// several stores in one test process report separately.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Needle reads (whole or ranged).
    pub reads: Counter,
    /// Data bytes returned by reads.
    pub bytes_read: Counter,
    /// Data needles appended.
    pub writes: Counter,
    /// Data bytes appended.
    pub bytes_written: Counter,
    /// Tombstones appended.
    pub deletes: Counter,
    /// Group commits (one fsync each).
    pub fsync_batches: Counter,
    /// Volumes sealed and replaced by a new active one.
    pub rollovers: Counter,
    /// Volumes compacted.
    pub compactions: Counter,
    /// Bytes reclaimed by compaction.
    pub compacted_bytes: Counter,
    /// Bytes cut off torn tails at open.
    pub torn_bytes: Counter,
    /// Multi-get requests (batched small reads from nodes).
    pub mgets: Counter,
    /// Blobs read back by scrubs.
    pub scrubbed: Counter,
    /// Bad needles scrubs found.
    pub scrub_corrupt: Counter,
}

impl StoreMetrics {
    /// Appends Prometheus text for these counters plus the given gauges.
    pub fn render(&self, out: &mut String, blobs: usize, map_bytes: usize, disk: DiskUse) {
        let c = [
            (
                "strata_store_reads_total",
                "Needle reads served.",
                self.reads.get(),
            ),
            (
                "strata_store_read_bytes_total",
                "Data bytes read.",
                self.bytes_read.get(),
            ),
            (
                "strata_store_writes_total",
                "Needles appended.",
                self.writes.get(),
            ),
            (
                "strata_store_written_bytes_total",
                "Data bytes appended.",
                self.bytes_written.get(),
            ),
            (
                "strata_store_deletes_total",
                "Tombstones appended.",
                self.deletes.get(),
            ),
            (
                "strata_store_fsync_batches_total",
                "Group commits, one fsync each.",
                self.fsync_batches.get(),
            ),
            (
                "strata_store_rollovers_total",
                "Volumes sealed.",
                self.rollovers.get(),
            ),
            (
                "strata_store_compactions_total",
                "Volumes compacted.",
                self.compactions.get(),
            ),
            (
                "strata_store_compacted_bytes_total",
                "Bytes reclaimed by compaction.",
                self.compacted_bytes.get(),
            ),
            (
                "strata_store_torn_bytes_total",
                "Bytes cut off torn volume tails at open.",
                self.torn_bytes.get(),
            ),
            (
                "strata_store_mgets_total",
                "Multi-get requests (batched reads).",
                self.mgets.get(),
            ),
            (
                "strata_store_scrubbed_total",
                "Blobs read back and verified by scrubs.",
                self.scrubbed.get(),
            ),
            (
                "strata_store_scrub_corrupt_total",
                "Bad needles found by scrubs.",
                self.scrub_corrupt.get(),
            ),
        ];
        for (name, help, v) in c {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let g = [
            ("strata_store_blobs", "Live blobs.", blobs as u64),
            (
                "strata_store_needle_map_bytes",
                "Heap bytes of the needle map.",
                map_bytes as u64,
            ),
            ("strata_store_volumes", "Volume files.", disk.volumes as u64),
            (
                "strata_store_disk_used_bytes",
                "Bytes of needles in the volume files.",
                disk.used,
            ),
        ];
        for (name, help, v) in g {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        if let Some(free) = disk.free {
            let name = "strata_store_disk_free_bytes";
            let _ = writeln!(
                out,
                "# HELP {name} Bytes free to unprivileged writers on the volumes' file system.\n# TYPE {name} gauge\n{name} {free}"
            );
        }
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

/// Nanoseconds since the epoch, for cookies.
pub(crate) fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

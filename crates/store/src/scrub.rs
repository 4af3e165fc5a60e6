//! Scrubbing: read every live needle back and check it, so that a bad
//! sector or a flipped bit is found by a scheduled pass rather than by
//! the one reader who needed that blob.

use serde::Serialize;

use crate::{Error, Store};

/// What one pass found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ScrubReport {
    /// Live blobs read.
    pub checked: u64,
    /// Data bytes read.
    pub bytes: u64,
    /// Blob ids whose needle failed its magic, id, footer or CRC check.
    pub corrupt: Vec<u64>,
}

impl Store {
    /// Reads every live blob and verifies it. Blocking (run it on a
    /// blocking thread); the needle map is locked once per blob, so reads
    /// and writes go on meanwhile. A blob deleted or moved during the pass
    /// is checked where it is now, or skipped.
    pub fn scrub(&self) -> ScrubReport {
        let ids: Vec<u64> = {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            st.map.iter().map(|(id, _)| id).collect()
        };
        let mut report = ScrubReport::default();
        for id in ids {
            match self.get(id) {
                Ok(data) => {
                    report.checked += 1;
                    report.bytes += data.len() as u64;
                }
                Err(Error::NotFound(_)) => {}
                Err(e) => {
                    report.checked += 1;
                    tracing::warn!(blob = id, error = %e, "scrub: bad needle");
                    report.corrupt.push(id);
                }
            }
        }
        self.metrics.scrubbed.inc_by(report.checked);
        self.metrics
            .scrub_corrupt
            .inc_by(report.corrupt.len() as u64);
        report
    }
}

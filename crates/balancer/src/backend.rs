//! One upstream server: its address and weight, its counters, its health
//! state, its admission slots and its idle connections. Shared by every
//! pool that lists it, so that a reload keeps all of that.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::metrics::Latency;

/// One upstream server.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Relative weight (round robin).
    pub weight: u32,
    /// Requests in flight.
    pub in_flight: AtomicU64,
    /// Requests forwarded.
    pub requests: AtomicU64,
    /// Responses that were 5xx or failed to arrive.
    pub failures: AtomicU64,
    /// Times ejected.
    pub ejections: AtomicU32,
    /// Exponentially weighted moving average of the time to first byte,
    /// microseconds (0 until the first response).
    pub ewma_us: AtomicU64,
    /// Last load the backend reported on `/load`: CPU percent x 100 plus
    /// its in-flight requests x 100 (0 until the first report).
    pub reported_load: AtomicU64,
    /// Histogram of times to first byte.
    pub latency: Latency,
    /// Draining: no new requests (sticky ones included); those in flight
    /// finish. Set through the admin API before removing a backend.
    pub draining: AtomicBool,
    pub(crate) health: Mutex<HealthState>,
    /// Admission slots (max in flight), made by the first gateway that
    /// limits it; and the number of requests waiting for one.
    pub(crate) admission: OnceLock<Arc<tokio::sync::Semaphore>>,
    pub(crate) waiting: AtomicU64,
    /// Idle keep-alive connections of the fast path (see `relay`).
    pub(crate) idle: Mutex<Vec<tokio::net::TcpStream>>,
}

impl Backend {
    /// A backend at `addr` with `weight`.
    pub fn new(addr: SocketAddr, weight: u32) -> Backend {
        Backend {
            addr,
            weight: weight.max(1),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            ewma_us: AtomicU64::new(0),
            reported_load: AtomicU64::new(0),
            latency: Latency::default(),
            draining: AtomicBool::new(false),
            health: Mutex::new(HealthState::default()),
            admission: OnceLock::new(),
            waiting: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The id a sticky cookie names this backend by: a hash of its address,
    /// so that it stays the same across reloads and gateway restarts.
    pub fn sticky_id(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(self.addr.to_string().as_bytes())
    }

    /// Whether it is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Keeps `s`, a connection to this backend that can carry another
    /// request, for the next exchange (the relay's and the upstream
    /// client's); beyond 256 idle ones it is closed.
    pub(crate) fn park(&self, s: tokio::net::TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < 256 {
            idle.push(s);
        }
    }
}

/// What outlier detection and active checks know of one backend; only
/// [`crate::outlier`] reads and changes it.
#[derive(Debug, Default)]
pub struct HealthState {
    pub(crate) consecutive_failures: u32,
    pub(crate) ejected_until: Option<Instant>,
    pub(crate) check_fails: u32,
    pub(crate) check_passes: u32,
    /// Marked down by active checks.
    pub(crate) down: bool,
    /// When it came back from being down (slow start runs from here).
    pub(crate) back_since: Option<Instant>,
}

//! strata's test kit: clusters for tests, in-process or as real processes,
//! with fault injection (SIGKILL, SIGSTOP/SIGCONT, restart, and a TCP
//! proxy that delays, drops, resets or partitions a link).
//!
//! - [`InProc`] runs roles inside the test process on port-0 listeners
//!   (fast; good for API and model tests).
//! - [`Procs`] runs each member as a real `strata` process from a cluster
//!   file (for kill -9, restart and failover tests).
//! - [`PgCluster`] is a throwaway PostgreSQL (a primary and a synchronous
//!   standby) for the index and queue backends.
//! - [`Served`] is a `strata serve` process started as a user would,
//!   its addresses and S3 keys read from what it prints.
//! - [`Browser`] is headless Chromium over the DevTools protocol, for
//!   the web console's tests.
//! - [`Client`] is a minimal HTTP client for both, and [`blob`] makes
//!   deterministic test bodies; [`until`] and [`until_async`] wait for a
//!   condition; a [`Socket`] is a listener a test adds to a member's
//!   configuration, held until the member is handed it.
//!
//! How to pick among them, and the rules tests follow: docs/testing.md.

pub mod browser;
mod client;
pub mod faults;
mod inproc;
pub mod netns;
pub mod ports;
pub mod postgres;
pub mod procs;
mod served;
pub mod wait;
pub mod workload;

pub use browser::Browser;
pub use client::{metric_value, Client, Resp};
pub use faults::{Fault, FaultProxy};
pub use hyper::{Method, StatusCode};
pub use inproc::{InProc, InProcCluster};
pub use ports::Socket;
pub use postgres::{PgCluster, PgSpec};
pub use procs::{free_addr, strata_bin, Layout, Procs};
pub use served::{python_with_boto3, S3Endpoint, Served};
pub use wait::{until, until_async};

/// Deterministic pseudo-random bytes for blob `i`.
pub fn blob(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

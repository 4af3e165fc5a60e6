//! strata's benchmarks: each scenario runs strata and its peer side by side
//! in one run, alternating rounds, and prints the ratio.
//!
//! `cargo run --release -p bench -- store` — random small-blob GETs through
//! strata vs nginx serving one file per blob; needle-map bytes per blob and
//! restart time at 1M blobs.
//!
//! `cargo run --release -p bench -- serve` — `strata serve` as it comes
//! vs nginx and Varnish + nginx on Zipf-skewed and uniform image GETs.
//!
//! `cargo run --release -p bench -- put` — acknowledged PUT MB/s through
//! `strata serve` next to fio's sequential writes with an fdatasync per
//! 1 MiB on the same disk.
//!
//! `cargo run --release -p bench -- cache` — strata's cache server vs
//! memcached: ops/s, p50, p99 with and without pipelining.
//!
//! `hitratio` and `ring` need no peer: cache policy hit ratios and the
//! consistent-hash ring's balance and movement.
//!
//! `cargo run --release -p bench -- edge` — TLS + HTTP/2 through the
//! gateway vs nginx with h2load; access log on vs off.
//!
//! `cargo run --release -p bench -- pg` — the cluster's index and queue on
//! PostgreSQL (primary + synchronous standby) vs redb, the built-in broker
//! and beanstalkd `-f 0`; cluster PUTs with either index.
//!
//! Peers come from Debian packages and are installed when missing.

mod balancer_bench;
mod cache_bench;
mod collapse;
mod dist;
mod edge_bench;
mod failover;
mod memload;
mod offline;
mod peers;
mod pg_bench;
mod plot;
mod plots_of;
mod proc_stat;
mod put_bench;
mod queue_bench;
mod ranges;
mod s3_bench;
mod search_bench;
mod serve_bench;
mod store_bench;
mod wrk;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bench", about = "strata side-by-side benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Random small-blob GETs: strata vs nginx (file per blob); needle map
    /// RAM per blob and restart time at 1M blobs.
    Store(store_bench::Args),
    /// The whole stack on image traffic (Zipf and uniform): `strata serve`
    /// vs nginx (file per blob) vs Varnish in front of nginx.
    Serve(serve_bench::Args),
    /// memcached protocol: strata cache vs memcached, ops/s and latency.
    Cache(cache_bench::Args),
    /// Cache policy: S3-FIFO vs LRU hit ratio on Zipf and scan-mixed traces.
    Hitratio(offline::HitArgs),
    /// Consistent-hash ring: balance and keys moved on membership changes.
    Ring,
    /// Random ranges of one big blob: spatial collapsing on vs off.
    Ranges(ranges::Args),
    /// Many clients onto one cold blob: strata vs nginx proxy_cache_lock.
    Collapse(collapse::Args),
    /// Load balancer: strata gateway vs HAProxy vs nginx.
    Balancer(balancer_bench::Args),
    /// TLS + HTTP/2 at the edge: strata gateway vs nginx (h2load), and the
    /// cost of the access log.
    Edge(edge_bench::Args),
    /// A backend dies, another turns slow: strata gateway vs HAProxy.
    Failover(failover::Args),
    /// A cluster's state on PostgreSQL vs the embedded engines: index
    /// put/lookup/list, queue cycles (and beanstalkd -f 0), cluster PUTs.
    Pg(pg_bench::Args),
    /// Durable PUTs: acknowledged MB/s through `strata serve` vs fio's
    /// sequential writes with an fdatasync per 1 MiB.
    Put(put_bench::Args),
    /// Job queue: strata vs beanstalkd (put/reserve/delete, crash test).
    Queue(queue_bench::Args),
    /// S3 API beside the native API: PUT and GET MB/s of 64 KiB and
    /// 1 MiB objects through one `strata serve`.
    S3(s3_bench::Args),
    /// Page search at 1M pages: one shard vs four, p50/p99 per query kind.
    Search(search_bench::Args),
    /// Node-local cache hit ratio with random vs consistent-hash selection.
    Affinity {
        /// Distinct images.
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        /// Requests.
        #[arg(long, default_value_t = 1_000_000)]
        requests: usize,
    },
    /// Draws the PNG plots of saved results again (every scenario run
    /// writes its own beside its JSON); names scenarios, or none for all.
    Plot {
        /// Scenarios to draw.
        scenarios: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Store(a) => store_bench::run(a),
        Scenario::Serve(a) => serve_bench::run(a),
        Scenario::Cache(a) => cache_bench::run(a),
        Scenario::Hitratio(a) => offline::hitratio(a),
        Scenario::Ring => offline::ring(),
        Scenario::Ranges(a) => ranges::run(a),
        Scenario::Collapse(a) => collapse::run(a),
        Scenario::Balancer(a) => balancer_bench::run(a),
        Scenario::Edge(a) => edge_bench::run(a),
        Scenario::Failover(a) => failover::run(a),
        Scenario::Pg(a) => pg_bench::run(a),
        Scenario::Put(a) => put_bench::run(a),
        Scenario::Queue(a) => queue_bench::run(a),
        Scenario::Search(a) => search_bench::run(a),
        Scenario::S3(a) => s3_bench::run(a),
        Scenario::Affinity { keys, requests } => offline::affinity(keys, requests),
        Scenario::Plot { scenarios } => plots_of::replot(&scenarios),
    }
}

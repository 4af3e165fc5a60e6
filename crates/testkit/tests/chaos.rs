//! The chaos suite: a cluster of real `strata` processes — gateway, two
//! nodes, three cache members, three stores with R = 2, index, queue and a
//! search shard — under a mixed workload (Zipf GETs, PUTs, asynchronous
//! uploads, searches) while one fault at a time is injected: a store dies,
//! a cache member dies, a node hangs (SIGSTOP), the gateway's link to a
//! node is partitioned, the queue broker restarts, a store hangs
//! (SIGSTOP), the link resets every connection, the link gets slow, a store
//! fills up.
//!
//! For each phase: no idempotent GET fails, no acknowledged write or job
//! is lost (everything acknowledged is read back, bit for bit, once the
//! fault heals), and p99 stays under a bound. The table it prints goes
//! into docs/reliability.md.
//!
//! Every phase is bounded by a request count, and every wait by a
//! deadline, so the suite cannot hang.

use std::time::{Duration, Instant};

use testkit::workload::{lost, preload, print_table, settle, workload, Row};
use testkit::{blob, Client, Fault, Layout, Method, Procs, StatusCode};

const SECRET: &str = "chaos-cluster-secret";
/// Bound on each phase's p99: the gateway gives up on a backend after
/// 1 s (first_byte_timeout_ms) and retries elsewhere.
const P99_BOUND: Duration = Duration::from_millis(3000);
/// Requests per phase.
const OPS: usize = 400;

/// Fills store-3 through its internal API: blobs of shrinking sizes
/// until not even a one-byte blob fits.
async fn fill(store: &Client) -> usize {
    let mut n = 0;
    let mut id = 1u64 << 40;
    for size in [60_000, 4096, 512, 64, 1] {
        loop {
            id += 1;
            let r = store
                .send(
                    Method::PUT,
                    &format!("/blobs/{id}"),
                    &[("x-strata-secret", SECRET)],
                    blob(id, size),
                )
                .await
                .expect("fill");
            match r.status {
                StatusCode::CREATED | StatusCode::OK => n += 1,
                StatusCode::INSUFFICIENT_STORAGE => break,
                s => panic!("filling store-3: {s} {}", r.text()),
            }
            assert!(n < 5000, "store-3 never filled");
        }
    }
    n
}

/// Live blobs on a store (its internal `/stats`).
async fn blobs_on(store: &Client) -> u64 {
    let r = store
        .send(
            Method::GET,
            "/stats",
            &[("x-strata-secret", SECRET)],
            vec![],
        )
        .await
        .expect("store stats");
    r.json()["blobs"].as_u64().expect("blobs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_survives_one_fault_at_a_time() {
    let bin = testkit::strata_bin().expect("strata binary");
    let extra = format!(
        "[auth]\nsecret = \"{SECRET}\"\n\
         [gateway]\ncheck_interval_ms = 200\ncheck_timeout_ms = 300\nfall = 1\nrise = 1\n\
         first_byte_timeout_ms = 1000\nretries = 2\nretry_budget_percent = 100\n\
         base_ejection_ms = 500\nmax_ejection_ms = 2000\n\
         [cache]\ntimeout_ms = 200\ndown_after = 1\nretry_after_ms = 500\n\
         [search]\ntimeout_ms = 1000\n\
         [queue]\nthumbnail_widths = []\n"
    );
    let layout = Layout {
        stores: 3,
        replicas: 2,
        caches: 3,
        nodes: 2,
        queue: true,
        shards: 1,
        proxied: vec!["node-1".into()],
        // 16 MiB: room for its share of the workload, filled on purpose
        // in the last phase.
        member_lines: vec![("store-3".into(), "max_bytes = 16777216".into())],
        ..Layout::default()
    };
    let mut p = Procs::launch(&bin, layout, &extra).await.expect("cluster");
    let gw = p.client();
    preload(&gw).await;

    let mut rows = Vec::new();
    let phases: [&'static str; 10] = [
        "none",
        "store-1 killed",
        "cache-1 killed",
        "node-1 hung (SIGSTOP)",
        "gateway-node-1 partitioned",
        "queue restarted",
        "store-2 hung (SIGSTOP)",
        "gateway-node-1 resets",
        "gateway-node-1 +200 ms",
        // Last: the store stays full.
        "store-3 full",
    ];
    for (n, &fault) in phases.iter().enumerate() {
        let tag = format!("p{n}");
        // Inject.
        match n {
            1 => p.kill("store-1").expect("kill store"),
            2 => p.kill("cache-1").expect("kill cache"),
            3 => p.pause("node-1").expect("stop node"),
            4 => p.proxy("node-1").set(Fault::Blackhole),
            5 => p.kill("queue").expect("kill queue"),
            7 => p.proxy("node-1").set(Fault::Reset),
            6 => p.pause("store-2").expect("stop store"),
            8 => p
                .proxy("node-1")
                .set(Fault::Latency(Duration::from_millis(200))),
            9 => {
                let filled = fill(&p.client_of("store-3")).await;
                assert!(filled > 0);
            }
            _ => {}
        }
        let store3_before = blobs_on(&p.client_of("store-3")).await;
        let t0 = Instant::now();
        let o = if n == 5 {
            // The broker is down for the first third, then restarts.
            let mut a = workload(&gw, &tag, OPS / 3, n as u64).await;
            p.restart("queue").await.expect("restart queue");
            a.merge(workload(&gw, &format!("{tag}b"), OPS - OPS / 3, 100 + n as u64).await);
            a
        } else {
            workload(&gw, &tag, OPS, n as u64).await
        };
        let took = t0.elapsed();
        // Heal.
        match n {
            1 => p.restart("store-1").await.expect("restart store"),
            2 => p.restart("cache-1").await.expect("restart cache"),
            3 => p.resume("node-1").expect("continue node"),
            6 => p.resume("store-2").expect("continue store"),
            4 | 7 | 8 => p.proxy("node-1").set(Fault::Pass),
            _ => {}
        }
        if n == 9 {
            // Every write of the phase went elsewhere.
            assert_eq!(blobs_on(&p.client_of("store-3")).await, store3_before);
        }
        settle(&gw).await;
        let missing = lost(&gw, &o).await;
        eprintln!(
            "phase {fault}: {} requests in {took:?}, errors {:?}, {} writes + {} jobs acknowledged",
            o.latencies.len(),
            o.errors,
            o.acked.len(),
            o.jobs.len()
        );
        assert!(
            o.failed_gets.is_empty(),
            "{fault}: failed GETs: {:?}",
            &o.failed_gets[..o.failed_gets.len().min(5)]
        );
        assert!(missing.is_empty(), "{fault}: lost {missing:?}");
        assert!(o.p99() < P99_BOUND, "{fault}: p99 {:?}", o.p99());
        assert!(
            !o.acked.is_empty(),
            "{fault}: no write was acknowledged at all"
        );
        rows.push(Row::of(fault, &o, missing.len()));
    }
    print_table("fault", "failed GETs", &rows);
}

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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::{blob, Client, Fault, Layout, Method, Procs, StatusCode};

const SECRET: &str = "chaos-cluster-secret";
/// Blobs loaded before the faults; GETs pick among them by Zipf.
const KEYS: usize = 120;
/// Requests per phase, and clients sending them at once.
const OPS: usize = 400;
const CLIENTS: usize = 8;
/// Bound on each phase's p99: the gateway gives up on a backend after
/// 1 s (first_byte_timeout_ms) and retries elsewhere.
const P99_BOUND: Duration = Duration::from_millis(3000);
/// Words of the book pages loaded for searches.
const WORDS: [&str; 6] = [
    "harbour", "lantern", "meridian", "quarry", "saffron", "tundra",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    Put,
    Async,
    Search,
}

/// What the clients of one phase saw.
#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    /// Failed requests by kind (non-idempotent ones may fail while a
    /// fault is on; they were never acknowledged).
    errors: BTreeMap<&'static str, usize>,
    /// Idempotent GETs that failed or returned wrong bytes: must be 0.
    failed_gets: Vec<String>,
    /// Acknowledged writes: key -> body.
    acked: Vec<(String, Vec<u8>)>,
    /// Acknowledged asynchronous uploads: key, body, job path.
    jobs: Vec<(String, Vec<u8>, String)>,
}

impl Outcome {
    fn p99(&self) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get((l.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }
}

/// Zipf(1.0) over `n` ranks, as a cumulative table.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize) -> Zipf {
        let w: Vec<f64> = (1..=n).map(|r| 1.0 / r as f64).collect();
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        Zipf(
            w.iter()
                .map(|x| {
                    acc += x / total;
                    acc
                })
                .collect(),
        )
    }

    fn sample(&self, u: f64) -> usize {
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

/// xorshift64*: deterministic per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn key_body(i: usize) -> (String, Vec<u8>) {
    (
        format!("chaos/base/{i}.jpg"),
        blob(i as u64, 2048 + (i * 97) % 8192),
    )
}

/// Runs `ops` requests from [`CLIENTS`] clients through the gateway.
async fn workload(gw: &Client, phase: &str, ops: usize, seed: u64) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Outcome::default()));
    let zipf = Arc::new(Zipf::new(KEYS));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (gw, next, out, zipf) = (gw.clone(), next.clone(), out.clone(), zipf.clone());
        let phase = phase.to_owned();
        let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(c as u64 + 1) | 1);
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= ops {
                    return;
                }
                let roll = rng.next() % 100;
                let kind = match roll {
                    0..=69 => Kind::Get,
                    70..=84 => Kind::Put,
                    85..=92 => Kind::Async,
                    _ => Kind::Search,
                };
                let t0 = Instant::now();
                let res = one(&gw, kind, &phase, n, &zipf, &mut rng).await;
                let took = t0.elapsed();
                let mut o = out.lock().unwrap();
                o.latencies.push(took);
                match res {
                    Ok(Done::Nothing) => {}
                    Ok(Done::Acked(k, b)) => o.acked.push((k, b)),
                    Ok(Done::Job(k, b, j)) => o.jobs.push((k, b, j)),
                    Err(why) => {
                        let name = match kind {
                            Kind::Get => {
                                o.failed_gets.push(why);
                                "get"
                            }
                            Kind::Put => "put",
                            Kind::Async => "async",
                            Kind::Search => "search",
                        };
                        *o.errors.entry(name).or_default() += 1;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    Arc::try_unwrap(out)
        .ok()
        .expect("clients done")
        .into_inner()
        .unwrap()
}

enum Done {
    Nothing,
    Acked(String, Vec<u8>),
    Job(String, Vec<u8>, String),
}

async fn one(
    gw: &Client,
    kind: Kind,
    phase: &str,
    n: usize,
    zipf: &Zipf,
    rng: &mut Rng,
) -> Result<Done, String> {
    match kind {
        Kind::Get => {
            let i = zipf.sample(rng.unit());
            let (key, body) = key_body(i);
            let r = gw
                .get(&format!("/v1/blobs/{key}"))
                .await
                .map_err(|e| format!("GET {key}: {e}"))?;
            if r.status != StatusCode::OK {
                return Err(format!("GET {key}: {} {}", r.status, r.text()));
            }
            if r.body[..] != body[..] {
                return Err(format!("GET {key}: wrong bytes"));
            }
            Ok(Done::Nothing)
        }
        Kind::Put | Kind::Async => {
            let key = format!("chaos/{phase}/{n}.bin");
            let body = blob(
                1_000_000 + n as u64 + phase.len() as u64 * 7919,
                1024 + n % 4096,
            );
            let headers: &[(&str, &str)] = if kind == Kind::Async {
                &[("prefer", "respond-async")]
            } else {
                &[]
            };
            let r = gw
                .send(
                    Method::PUT,
                    &format!("/v1/blobs/{key}"),
                    headers,
                    body.clone(),
                )
                .await
                .map_err(|e| format!("PUT {key}: {e}"))?;
            match (kind, r.status) {
                (Kind::Put, StatusCode::CREATED) => Ok(Done::Acked(key, body)),
                (Kind::Async, StatusCode::ACCEPTED) => {
                    let job = r.json()["location"]
                        .as_str()
                        .ok_or("202 without a job")?
                        .to_owned();
                    Ok(Done::Job(key, body, job))
                }
                // A write routed to a node that then timed out may still
                // be applied later; it was not acknowledged.
                (_, s) => Err(format!("PUT {key}: {s} {}", r.text())),
            }
        }
        Kind::Search => {
            let w = WORDS[rng.next() as usize % WORDS.len()];
            let r = gw
                .get(&format!("/v1/search?q={w}"))
                .await
                .map_err(|e| format!("search: {e}"))?;
            if r.status != StatusCode::OK {
                return Err(format!("search {w}: {} {}", r.status, r.text()));
            }
            Ok(Done::Nothing)
        }
    }
}

/// Reads back everything a phase acknowledged once its fault healed;
/// returns what is missing or wrong.
async fn lost(gw: &Client, o: &Outcome) -> Vec<String> {
    let mut lost = Vec::new();
    for (key, body) in &o.acked {
        match gw.get(&format!("/v1/blobs/{key}")).await {
            Ok(r) if r.status == StatusCode::OK && r.body[..] == body[..] => {}
            Ok(r) => lost.push(format!("{key}: {}", r.status)),
            Err(e) => lost.push(format!("{key}: {e}")),
        }
    }
    for (key, body, job) in &o.jobs {
        let deadline = Instant::now() + Duration::from_secs(60);
        let state = loop {
            let st = match gw.get(job).await {
                Ok(r) if r.status == StatusCode::OK => {
                    r.json()["state"].as_str().map(str::to_owned)
                }
                _ => None,
            };
            match st.as_deref() {
                Some("succeeded") | Some("dead") => break st.unwrap_or_default(),
                _ if Instant::now() > deadline => break format!("{st:?} after 60 s"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        if state != "succeeded" {
            lost.push(format!("job {job} for {key}: {state}"));
            continue;
        }
        match gw.get(&format!("/v1/blobs/{key}")).await {
            Ok(r) if r.status == StatusCode::OK && r.body[..] == body[..] => {}
            Ok(r) => lost.push(format!("{key} (async): {}", r.status)),
            Err(e) => lost.push(format!("{key} (async): {e}")),
        }
    }
    lost
}

/// Loads the blobs GETs read and the book pages searches find.
async fn preload(gw: &Client) {
    for i in 0..KEYS {
        let (key, body) = key_body(i);
        let r = gw
            .put(&format!("/v1/blobs/{key}"), body)
            .await
            .expect("preload");
        assert_eq!(r.status, StatusCode::CREATED, "preload {key}: {}", r.text());
    }
    let mut jobs = Vec::new();
    for (p, w) in WORDS.iter().enumerate() {
        let text = format!("the {w} page of the chaos book");
        let page = (p + 1).to_string();
        let r = gw
            .send(
                Method::PUT,
                &format!("/v1/blobs/chaos/book/{p}.png"),
                &[
                    ("x-strata-book", "Chaos"),
                    ("x-strata-page", page.as_str()),
                    ("x-strata-text", text.as_str()),
                ],
                blob(9_000 + p as u64, 512),
            )
            .await
            .expect("page");
        assert_eq!(r.status, StatusCode::CREATED, "page: {}", r.text());
        jobs.push(
            r.json()["index_job"]
                .as_str()
                .expect("index job")
                .to_owned(),
        );
    }
    for j in jobs {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = gw.get(&j).await.expect("job").json();
            if v["state"] == "succeeded" {
                break;
            }
            assert!(Instant::now() < deadline, "index job {j}: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

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

/// Waits until the gateway has every node back in rotation, so that the
/// next phase starts from a whole cluster.
async fn settle(gw: &Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = gw
            .get("/_strata/metrics")
            .await
            .expect("gateway metrics")
            .text();
        let ejected = text
            .lines()
            .filter(|l| l.starts_with("strata_gateway_backend_ejected{"))
            .any(|l| l.ends_with(" 1"));
        if !ejected {
            return;
        }
        assert!(Instant::now() < deadline, "a node stayed ejected:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Row {
    fault: &'static str,
    requests: usize,
    errors: usize,
    failed_gets: usize,
    lost: usize,
    p99: Duration,
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
        let mut o = if n == 5 {
            // The broker is down for the first third, then restarts.
            let mut a = workload(&gw, &tag, OPS / 3, n as u64).await;
            p.restart("queue").await.expect("restart queue");
            let b = workload(&gw, &format!("{tag}b"), OPS - OPS / 3, 100 + n as u64).await;
            a.latencies.extend(b.latencies);
            for (k, v) in b.errors {
                *a.errors.entry(k).or_default() += v;
            }
            a.failed_gets.extend(b.failed_gets);
            a.acked.extend(b.acked);
            a.jobs.extend(b.jobs);
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
        let errors: usize = o.errors.values().sum();
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
        rows.push(Row {
            fault,
            requests: o.latencies.len(),
            errors,
            failed_gets: std::mem::take(&mut o.failed_gets).len(),
            lost: missing.len(),
            p99: o.p99(),
        });
    }
    println!("\n| fault | requests | errors (non-idempotent) | failed GETs | lost | p99 |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} ms |",
            r.fault,
            r.requests,
            r.errors,
            r.failed_gets,
            r.lost,
            r.p99.as_secs_f64() * 1000.0
        );
    }
}

//! The mixed workload of the cluster tests (the chaos suite, the machines
//! test): Zipf GETs of preloaded blobs, PUTs, asynchronous uploads and
//! searches from [`CLIENTS`] clients, and the read-back that proves nothing
//! acknowledged was lost. Every request loop is bounded by a count and
//! every wait by a deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{blob, Client, Method, StatusCode};

/// Blobs loaded before the faults; GETs pick among them by Zipf.
pub const KEYS: usize = 120;
/// Clients sending a phase's requests at once.
pub const CLIENTS: usize = 8;
/// Words of the book pages loaded for searches.
pub const WORDS: [&str; 6] = [
    "harbour", "lantern", "meridian", "quarry", "saffron", "tundra",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Zipf GET of a preloaded blob.
    Get,
    /// A PUT.
    Put,
    /// An asynchronous upload.
    Async,
    /// A search.
    Search,
}

/// What the clients of one phase saw.
#[derive(Default)]
pub struct Outcome {
    pub latencies: Vec<Duration>,
    /// Failed requests by kind (non-idempotent ones may fail while a
    /// fault is on; they were never acknowledged).
    pub errors: BTreeMap<&'static str, usize>,
    /// Idempotent GETs that failed or returned wrong bytes: must be 0.
    pub failed_gets: Vec<String>,
    /// When each of those failed.
    pub failed_get_at: Vec<Instant>,
    /// Acknowledged writes: key -> body.
    pub acked: Vec<(String, Vec<u8>)>,
    /// Acknowledged asynchronous uploads: key, body, job path.
    pub jobs: Vec<(String, Vec<u8>, String)>,
}

impl Outcome {
    /// Adds another run's outcome to this one.
    pub fn merge(&mut self, b: Outcome) {
        self.latencies.extend(b.latencies);
        for (k, v) in b.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.failed_gets.extend(b.failed_gets);
        self.failed_get_at.extend(b.failed_get_at);
        self.acked.extend(b.acked);
        self.jobs.extend(b.jobs);
    }

    /// The 99th percentile latency.
    pub fn p99(&self) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get((l.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }
}

/// Zipf(1.0) over `n` ranks, as a cumulative table.
pub struct Zipf(Vec<f64>);

impl Zipf {
    /// Over `n` ranks.
    pub fn new(n: usize) -> Zipf {
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

    /// The rank for a uniform `u` in [0, 1).
    pub fn sample(&self, u: f64) -> usize {
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

/// xorshift64*: deterministic per client.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A uniform number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn key_body(i: usize) -> (String, Vec<u8>) {
    (
        format!("load/base/{i}.jpg"),
        blob(i as u64, 2048 + (i * 97) % 8192),
    )
}

/// Runs `ops` requests from [`CLIENTS`] clients through the gateway.
pub async fn workload(gw: &Client, phase: &str, ops: usize, seed: u64) -> Outcome {
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
                let roll = rng.next_u64() % 100;
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
                                o.failed_get_at.push(Instant::now());
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

/// One request's outcome.
pub enum Done {
    /// Nothing to remember.
    Nothing,
    /// An acknowledged write: key, body.
    Acked(String, Vec<u8>),
    /// An acknowledged asynchronous upload: key, body, job path.
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
            let key = format!("load/{phase}/{n}.bin");
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
            let w = WORDS[rng.next_u64() as usize % WORDS.len()];
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

/// Reads `key` and compares it with `body`. A cluster still recovering
/// (5xx: no backend yet, the index not reachable yet) is asked again for
/// up to 60 s: unavailable is not lost; a 404 or wrong bytes are.
async fn read_back(gw: &Client, key: &str, body: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match gw.get(&format!("/v1/blobs/{key}")).await {
            Ok(r) if r.status == StatusCode::OK && r.body[..] == body[..] => return Ok(()),
            Ok(r) if !r.status.is_server_error() => return Err(format!("{key}: {}", r.status)),
            Ok(r) if Instant::now() > deadline => {
                return Err(format!("{key}: {} after 60 s", r.status))
            }
            Err(e) if Instant::now() > deadline => return Err(format!("{key}: {e}")),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Reads back everything a phase acknowledged once its fault healed;
/// returns what is missing or wrong.
pub async fn lost(gw: &Client, o: &Outcome) -> Vec<String> {
    let mut lost = Vec::new();
    for (key, body) in &o.acked {
        if let Err(why) = read_back(gw, key, body).await {
            lost.push(why);
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
        if let Err(why) = read_back(gw, key, body).await {
            lost.push(format!("{why} (async)"));
        }
    }
    lost
}

/// Loads the blobs GETs read and the book pages searches find.
pub async fn preload(gw: &Client) {
    // A cluster just started may give up on its first requests (a debug
    // build on two cores makes its first connections slowly): a PUT is
    // safe to send again, and setting up is not what is measured.
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..KEYS {
        let (key, body) = key_body(i);
        loop {
            let r = gw
                .put(&format!("/v1/blobs/{key}"), body.clone())
                .await
                .expect("preload");
            if r.status.is_server_error() && Instant::now() < deadline {
                continue;
            }
            assert_eq!(r.status, StatusCode::CREATED, "preload {key}: {}", r.text());
            break;
        }
    }
    let mut jobs = Vec::new();
    for (p, w) in WORDS.iter().enumerate() {
        let text = format!("the {w} page of the load book");
        let page = (p + 1).to_string();
        let r = gw
            .send(
                Method::PUT,
                &format!("/v1/blobs/load/book/{p}.png"),
                &[
                    ("x-strata-book", "Load"),
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

/// Waits until the gateway has every backend back in rotation (none
/// ejected), so that the next phase starts from a whole cluster.
pub async fn settle(gw: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
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

/// One phase of a fault suite, as its table row.
pub struct Row {
    /// What was done to the cluster.
    pub fault: &'static str,
    /// Requests sent.
    pub requests: usize,
    /// Failed non-idempotent requests (never acknowledged).
    pub errors: usize,
    /// Failed GETs.
    pub failed_gets: usize,
    /// Acknowledged writes or jobs not found afterwards.
    pub lost: usize,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl Row {
    /// The row of a phase named `fault` that saw `o` and lost `lost`.
    pub fn of(fault: &'static str, o: &Outcome, lost: usize) -> Row {
        Row {
            fault,
            requests: o.latencies.len(),
            errors: o.errors.values().sum(),
            failed_gets: o.failed_gets.len(),
            lost,
            p99: o.p99(),
        }
    }
}

/// Prints the phases as a Markdown table; `first` and `gets` head the
/// fault and failed-GET columns.
pub fn print_table(first: &str, gets: &str, rows: &[Row]) {
    println!("\n| {first} | requests | errors (non-idempotent) | {gets} | lost | p99 |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
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

//! A cluster of machines, tested as machines: every member runs in its own
//! network namespace with its own address on a bridge, and the cluster file
//! names them by those addresses (no loopback). Gateway, two nodes, three
//! stores with R = 2, two caches, a search member, a queue front, and the
//! PostgreSQL primary and its synchronous standby, which hold the name
//! index and the job queue.
//!
//! Under the mixed workload (Zipf GETs, PUTs, asynchronous uploads,
//! searches) one machine at a time is lost and healed: a store machine
//! (its processes killed, its link down), a node machine, a cache machine,
//! the PostgreSQL primary's machine (the test then promotes the standby,
//! as an operator or Patroni would; no strata process is restarted), and a
//! node machine cut off by its link going down and coming back (its
//! processes keep running). After
//! each: every acknowledged blob reads back bit for bit, every
//! acknowledged job succeeds, and no GET fails outside the failover
//! window. Prints a table like the chaos suite's, and the time until
//! writes worked again after the primary's loss.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::netns::Net;
use testkit::workload::{lost, preload, print_table, settle, workload, Outcome, Row};
use testkit::{blob, Client, Method, PgCluster, PgSpec, StatusCode};

const SECRET: &str = "machines-cluster-secret";
const OPS: usize = 400;
const PORT: u16 = 7000;
const P99_BOUND: Duration = Duration::from_millis(3000);

/// name, role, machine.
const MEMBERS: [(&str, &str, &str); 10] = [
    ("store-1", "store", "s1"),
    ("store-2", "store", "s2"),
    ("store-3", "store", "s3"),
    ("cache-1", "cache", "c1"),
    ("cache-2", "cache", "c2"),
    ("search-1", "search", "x1"),
    ("queue-1", "queue", "q1"),
    ("node-1", "node", "n1"),
    ("node-2", "node", "n2"),
    ("gateway", "gateway", "gw"),
];

struct Cluster {
    net: Arc<Net>,
    bin: std::path::PathBuf,
    cfg: std::path::PathBuf,
    password: String,
    children: BTreeMap<&'static str, Child>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn machine_of(name: &str) -> &'static str {
        MEMBERS
            .iter()
            .find(|m| m.0 == name)
            .map(|m| m.2)
            .expect("member")
    }

    fn addr(&self, name: &str) -> String {
        format!("{}:{PORT}", self.net.machine(Self::machine_of(name)).ip)
    }

    fn start(&mut self, name: &'static str) {
        let role = MEMBERS.iter().find(|m| m.0 == name).expect("member").1;
        let child = self
            .net
            .command(Self::machine_of(name), &self.bin)
            .arg(role)
            .arg("--config")
            .arg(&self.cfg)
            .arg("--name")
            .arg(name)
            .args(["--threads", "2"])
            .env("RUST_LOG", "warn")
            .env("STRATA_PG_PASSWORD", &self.password)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn member");
        self.children.insert(name, child);
    }

    async fn wait_ready(&self, name: &str) {
        if name.starts_with("cache") {
            let what = format!("{name} accepts connections");
            testkit::until_async(&what, Duration::from_secs(30), async || {
                tokio::net::TcpStream::connect(self.addr(name))
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
            return;
        }
        Client::new(format!("http://{}", self.addr(name)))
            .wait_ready("/healthz", Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    fn kill(&mut self, name: &str) {
        if let Some(mut c) = self.children.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A machine is lost: every process on it killed, its link down.
    fn lose(&mut self, machine: &str) {
        let names: Vec<&'static str> = MEMBERS
            .iter()
            .filter(|m| m.2 == machine)
            .map(|m| m.0)
            .collect();
        for n in names {
            self.kill(n);
        }
        self.net.cut(machine).expect("link down");
    }

    /// The machine comes back: link up, its processes started again.
    async fn restore(&mut self, machine: &str) {
        self.net.heal(machine).expect("link up");
        let names: Vec<&'static str> = MEMBERS
            .iter()
            .filter(|m| m.2 == machine)
            .map(|m| m.0)
            .collect();
        for n in &names {
            self.start(n);
        }
        for n in &names {
            self.wait_ready(n).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_machines_loses_one_machine_at_a_time_and_nothing_acknowledged() {
    let bin = testkit::strata_bin().expect("strata binary");
    let machines = [
        "gw", "n1", "n2", "s1", "s2", "s3", "c1", "c2", "x1", "q1", "db1", "db2",
    ];
    let net = Arc::new(Net::new(&machines).expect("machines as network namespaces"));
    let pg = PgCluster::start(PgSpec {
        standby: true,
        primary_host: net.machine("db1").ip.into(),
        primary_wrap: net.wrap("db1"),
        standby_host: net.machine("db2").ip.into(),
        standby_wrap: net.wrap("db2"),
    })
    .expect("PostgreSQL primary and standby on their machines");
    let mut pg = pg;
    let url = pg.url();
    let dir = tempfile::tempdir().expect("tmp");
    let mut text = format!(
        "replicas = 2\n\
         [auth]\nsecret = \"{SECRET}\"\n\
         [index]\nbackend = \"postgres\"\nurl = \"{url}\"\npassword_env = \"STRATA_PG_PASSWORD\"\n\
         call_timeout_ms = 2000\nfailover_wait_ms = 60000\n\
         [queue]\nbackend = \"postgres\"\nurl = \"{url}\"\npassword_env = \"STRATA_PG_PASSWORD\"\n\
         call_timeout_ms = 2000\nfailover_wait_ms = 60000\nthumbnail_widths = []\n\
         [gateway]\ncheck_interval_ms = 200\ncheck_timeout_ms = 300\nfall = 1\nrise = 1\n\
         first_byte_timeout_ms = 1000\nretries = 2\nretry_budget_percent = 100\n\
         base_ejection_ms = 500\nmax_ejection_ms = 2000\n\
         [cache]\ntimeout_ms = 200\ndown_after = 1\nretry_after_ms = 500\n\
         [search]\ntimeout_ms = 1000\n"
    );
    for (name, role, m) in MEMBERS {
        let ip = net.machine(m).ip;
        text.push_str(&format!(
            // Internal roles listen on loopback unless told otherwise.
            "\n[[member]]\nname = \"{name}\"\nrole = \"{role}\"\naddr = \"{ip}:{PORT}\"\nbind = \"{ip}:{PORT}\"\n"
        ));
        if matches!(role, "store" | "search") {
            text.push_str(&format!(
                "data_dir = \"{}\"\n",
                dir.path().join(name).display()
            ));
        }
    }
    let cfg = dir.path().join("cluster.toml");
    std::fs::write(&cfg, &text).expect("cluster file");
    let mut c = Cluster {
        net: net.clone(),
        bin,
        cfg,
        password: pg.password.clone(),
        children: BTreeMap::new(),
        _dir: dir,
    };
    type M = (&'static str, &'static str, &'static str);
    let (first, gateway): (Vec<&M>, Vec<&M>) = MEMBERS.iter().partition(|m| m.1 != "gateway");
    for m in &first {
        c.start(m.0);
    }
    for m in &first {
        c.wait_ready(m.0).await;
    }
    for m in &gateway {
        c.start(m.0);
        c.wait_ready(m.0).await;
    }
    let gw = Client::new(format!("http://{}", c.addr("gateway")));
    preload(&gw).await;

    let phases: [(&'static str, &'static str); 6] = [
        ("none", ""),
        ("store machine s1 lost", "s1"),
        ("node machine n1 lost", "n1"),
        ("cache machine c1 lost", "c1"),
        ("node machine n2 cut off", "n2"),
        ("PostgreSQL primary machine db1 lost", "db1"),
    ];
    let mut rows = Vec::new();
    let mut resumed_after = None;
    for (n, &(fault, machine)) in phases.iter().enumerate() {
        let tag = format!("m{n}");
        let mut window: Option<(Instant, Instant)> = None;
        let o: Outcome = match n {
            1..=3 => {
                c.lose(machine);
                workload(&gw, &tag, OPS, n as u64).await
            }
            5 => {
                // Writes are in flight when the primary's machine goes.
                let load = {
                    let gw = gw.clone();
                    let tag = tag.clone();
                    tokio::spawn(async move { workload(&gw, &tag, OPS, 5).await })
                };
                tokio::time::sleep(Duration::from_millis(300)).await;
                let lost_at = Instant::now();
                pg.primary.kill();
                net.cut("db1").expect("link down");
                pg.promote().expect("promote the standby");
                // Writes work again, without restarting any strata process.
                let probe = Client::new(format!("http://{}", c.addr("gateway")));
                let mut i = 0u64;
                let back = loop {
                    let r = probe
                        .put(
                            &format!("/v1/blobs/failover/probe-{i}"),
                            blob(77_000 + i, 1000),
                        )
                        .await;
                    if matches!(&r, Ok(r) if r.status == StatusCode::CREATED) {
                        break Instant::now();
                    }
                    assert!(
                        lost_at.elapsed() < Duration::from_secs(120),
                        "writes never resumed"
                    );
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                resumed_after = Some(back - lost_at);
                // The failover window: until every call left open on the
                // lost primary has been given up on (call_timeout_ms, 2 s,
                // then the gateway's first-byte timeout, 1 s, for the
                // request waiting on it), and the gateway has both nodes
                // in rotation again (the failover's 5xx ejected them). A
                // new connection may find the promoted standby sooner, so
                // the first write back does not close it.
                tokio::time::sleep_until((lost_at + Duration::from_secs(3)).into()).await;
                settle(&gw).await;
                let whole = Instant::now();
                window = Some((lost_at, whole));
                eprintln!(
                    "writes back {:?} after the loss, every node in rotation {:?} after it",
                    back - lost_at,
                    whole - lost_at
                );
                load.await.expect("workload")
            }
            4 => {
                c.net.cut(machine).expect("cut");
                let o = workload(&gw, &tag, OPS, 4).await;
                c.net.heal(machine).expect("heal");
                o
            }
            _ => workload(&gw, &tag, OPS, n as u64).await,
        };
        // Heal what can be healed (the old primary stays down: it would
        // need pg_rewind to follow the new one).
        if matches!(n, 1..=3) {
            c.restore(machine).await;
        }
        settle(&gw).await;
        let missing = lost(&gw, &o).await;
        let outside: Vec<&String> = o
            .failed_gets
            .iter()
            .zip(&o.failed_get_at)
            .filter(|(_, at)| !window.is_some_and(|(a, b)| **at >= a && **at <= b))
            .map(|(w, _)| w)
            .collect();
        eprintln!(
            "phase {fault}: {} requests, errors {:?}, {} writes + {} jobs acknowledged",
            o.latencies.len(),
            o.errors,
            o.acked.len(),
            o.jobs.len()
        );
        assert!(
            outside.is_empty(),
            "{fault}: failed GETs: {:?}",
            &outside[..outside.len().min(5)]
        );
        assert!(missing.is_empty(), "{fault}: lost {missing:?}");
        assert!(!o.acked.is_empty(), "{fault}: no write was acknowledged");
        if n != 5 {
            assert!(o.p99() < P99_BOUND, "{fault}: p99 {:?}", o.p99());
        }
        rows.push(Row::of(fault, &o, missing.len()));
    }
    // The nodes hold the index: its counters are on their /metrics.
    let m = Client::new(format!("http://{}", c.addr("node-2")))
        .get("/metrics")
        .await
        .expect("node metrics")
        .text();
    assert!(
        testkit::metric_value(&m, "strata_index_writes_total").is_some_and(|v| v > 0),
        "{m}"
    );
    // The queue front serves the same jobs the nodes ran.
    let front = Client::new(format!("http://{}", c.addr("queue-1")));
    let r = front
        .send(
            Method::GET,
            "/v1/queues",
            &[("x-strata-secret", SECRET)],
            vec![],
        )
        .await
        .expect("queue front");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("uploads"), "{}", r.text());

    print_table(
        "machine lost",
        "failed GETs (in the failover window)",
        &rows,
    );
    println!(
        "\nwrites resumed {:.1} s after the PostgreSQL primary's machine was lost (standby promoted, no strata process restarted)",
        resumed_after.expect("failover phase ran").as_secs_f64()
    );
}

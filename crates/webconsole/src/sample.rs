//! The sampler: every `sample_every` it reads each member's figures
//! (`scrape`), turns two consecutive reads into rates, and keeps the
//! figures of the last `window` in memory, so the cluster page can draw
//! the last 15 minutes with no Prometheus anywhere.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::scrape::{self, Scrape};
use crate::{Member, Role};

/// Figures of one member at one instant, by name (`rps`, `hit_ratio`, ...).
pub type Figures = BTreeMap<String, f64>;

/// What the sampler knows of one member.
pub(crate) struct Watch {
    pub member: Member,
    /// The last read, when it was taken.
    last: Option<(Instant, Scrape)>,
    /// Why the last read failed; `None` after a good one.
    pub error: Option<String>,
    /// Reads so far (a member never read is "unknown", not down).
    pub reads: u64,
    /// The newest figures.
    pub now: Figures,
    /// Per gateway backend (address): its figures; gateways only.
    pub backends: BTreeMap<String, Figures>,
    /// Per queue: jobs by state; queue members only.
    pub queues: BTreeMap<String, Figures>,
    /// (Unix ms, figures) over the window, oldest first.
    pub history: VecDeque<(u64, Figures)>,
}

impl Watch {
    pub fn new(member: Member) -> Watch {
        Watch {
            member,
            last: None,
            error: None,
            reads: 0,
            now: Figures::new(),
            backends: BTreeMap::new(),
            queues: BTreeMap::new(),
            history: VecDeque::new(),
        }
    }

    /// `up`, `down`, or `unknown` before the first read.
    pub fn state(&self) -> &'static str {
        match (self.reads, &self.error) {
            (0, None) => "unknown",
            (_, Some(_)) => "down",
            _ => "up",
        }
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads one member.
async fn read(m: &Member, cache_auth: Option<&[u8]>, timeout: Duration) -> Result<Scrape, String> {
    if m.role == Role::Cache {
        return scrape::memcached_stats(&m.addr, cache_auth, timeout).await;
    }
    let rpc = rpc::Rpc::new(format!("http://{}", m.addr), timeout);
    let r = rpc
        .call(
            hyper::Method::GET,
            m.role.metrics_path(),
            &[],
            bytes::Bytes::new(),
            Duration::ZERO,
        )
        .await?;
    if !r.status.is_success() {
        return Err(format!("metrics answered {}", r.status));
    }
    Ok(scrape::parse_prometheus(&String::from_utf8_lossy(&r.body)))
}

/// One pass over every member, all read at once.
pub(crate) async fn pass(
    watches: &Arc<Mutex<Vec<Watch>>>,
    cache_auth: Option<&[u8]>,
    timeout: Duration,
    window: Duration,
) {
    let members: Vec<Member> = lock(watches).iter().map(|w| w.member.clone()).collect();
    let reads = members.iter().map(|m| read(m, cache_auth, timeout));
    let results = futures_util::future::join_all(reads).await;
    let now = Instant::now();
    let t = unix_ms();
    let mut ws = lock(watches);
    for (w, r) in ws.iter_mut().zip(results) {
        w.reads += 1;
        match r {
            Ok(s) => {
                w.error = None;
                let dt = w.last.as_ref().map(|(at, _)| now - *at);
                let prev = w.last.as_ref().map(|(_, p)| p);
                let (figs, backends, queues) = figures(w.member.role, prev, &s, dt);
                w.now = figs;
                w.backends = backends;
                w.queues = queues;
                w.last = Some((now, s));
            }
            Err(e) => {
                w.error = Some(e);
                w.now = Figures::new();
                // A later good read must not rate against a read from
                // before the outage as if nothing had happened between.
                w.last = None;
            }
        }
        w.history.push_back((t, w.now.clone()));
        let oldest = t.saturating_sub(window.as_millis() as u64);
        while w.history.front().is_some_and(|(at, _)| *at < oldest) {
            w.history.pop_front();
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one figure comes from a member's reads.
enum Fig {
    /// Per-second rate of the sum of these counters between two reads (a
    /// counter that went down, a restarted member, reads as zero).
    Rate(&'static [&'static str]),
    /// The sum of these series now, shown only when the member has them.
    Gauge(&'static str),
    /// `hits` over the sum of `all` in the interval; none when nothing was
    /// asked.
    Ratio {
        hits: &'static [&'static str],
        all: &'static [&'static str],
    },
}

use Fig::{Gauge, Rate, Ratio};

const GATEWAY: &[(&str, Fig)] = &[
    ("rps", Rate(&["strata_gateway_requests_total"])),
    ("errors_ps", Rate(&["strata_gateway_errors_total"])),
    ("in_flight", Gauge("strata_gateway_in_flight")),
];
const NODE: &[(&str, Fig)] = &[
    (
        "rps",
        Rate(&[
            "strata_node_gets_total",
            "strata_node_puts_total",
            "strata_node_deletes_total",
            "strata_node_lists_total",
        ]),
    ),
    ("errors_ps", Rate(&["strata_node_server_errors_total"])),
    (
        "client_errors_ps",
        Rate(&["strata_node_client_errors_total"]),
    ),
    ("sent_bps", Rate(&["strata_node_sent_bytes_total"])),
    (
        "cache_hit_ratio",
        Ratio {
            hits: &["strata_cache_hits_total"],
            all: &["strata_cache_hits_total", "strata_cache_misses_total"],
        },
    ),
    ("cache_bytes", Gauge("strata_cache_bytes")),
];
const STORE: &[(&str, Fig)] = &[
    ("blobs", Gauge("strata_store_blobs")),
    ("volumes", Gauge("strata_store_volumes")),
    ("disk_used_bytes", Gauge("strata_store_disk_used_bytes")),
    ("disk_free_bytes", Gauge("strata_store_disk_free_bytes")),
    ("reads_ps", Rate(&["strata_store_reads_total"])),
    ("writes_ps", Rate(&["strata_store_writes_total"])),
    ("written_bps", Rate(&["strata_store_written_bytes_total"])),
];
const INDEX: &[(&str, Fig)] = &[
    ("lookups_ps", Rate(&["strata_index_lookups_total"])),
    ("writes_ps", Rate(&["strata_index_writes_total"])),
];
const QUEUE: &[(&str, Fig)] = &[("puts_ps", Rate(&["strata_queue_jobs_total"]))];
const SEARCH: &[(&str, Fig)] = &[
    ("pages", Gauge("strata_search_pages")),
    ("queries_ps", Rate(&["strata_search_queries_total"])),
];
/// memcached's own `stats` names.
const CACHE: &[(&str, Fig)] = &[
    ("ops_ps", Rate(&["cmd_get", "cmd_set"])),
    (
        "hit_ratio",
        Ratio {
            hits: &["get_hits"],
            all: &["cmd_get"],
        },
    ),
    ("bytes", Gauge("bytes")),
    ("limit_bytes", Gauge("limit_maxbytes")),
    ("items", Gauge("curr_items")),
];

/// Two consecutive reads of one member and the time between them.
struct Reads<'a> {
    prev: Option<&'a Scrape>,
    cur: &'a Scrape,
    dt: Option<Duration>,
}

impl Reads<'_> {
    fn value(&self, fig: &Fig) -> Option<f64> {
        let sum = |s: &Scrape, names: &[&str]| names.iter().map(|n| s.sum(n)).sum::<f64>();
        match fig {
            Rate(names) => {
                let (prev, secs) = (self.prev?, self.dt?.as_secs_f64());
                (secs > 0.0).then(|| (sum(self.cur, names) - sum(prev, names)).max(0.0) / secs)
            }
            Gauge(name) => self.cur.has(name).then(|| self.cur.sum(name)),
            Ratio { hits, all } => {
                let prev = self.prev?;
                let h = sum(self.cur, hits) - sum(prev, hits);
                let a = sum(self.cur, all) - sum(prev, all);
                (a > 0.0).then(|| (h / a).clamp(0.0, 1.0))
            }
        }
    }

    /// Each figure of `table` the reads can give, into `f`.
    fn fill(&self, f: &mut Figures, table: &[(&str, Fig)]) {
        for (name, fig) in table {
            if let Some(v) = self.value(fig).filter(|v| v.is_finite()) {
                // `+ 0.0` turns the -0.0 of an empty sum into 0.
                f.insert((*name).to_owned(), v + 0.0);
            }
        }
    }
}

type Split = (
    Figures,
    BTreeMap<String, Figures>,
    BTreeMap<String, Figures>,
);

/// The figures a role shows, from its last two reads; for a gateway also
/// each backend's, for a queue member each queue's jobs by state.
fn figures(role: Role, prev: Option<&Scrape>, cur: &Scrape, dt: Option<Duration>) -> Split {
    let r = Reads { prev, cur, dt };
    let mut f = Figures::new();
    let mut backends = BTreeMap::new();
    let mut queues = BTreeMap::new();
    let table = match role {
        Role::Gateway => GATEWAY,
        Role::Node => NODE,
        Role::Store => STORE,
        Role::Index => INDEX,
        Role::Queue => QUEUE,
        Role::Search => SEARCH,
        Role::Cache => CACHE,
    };
    r.fill(&mut f, table);
    match role {
        Role::Gateway => {
            let addrs: std::collections::BTreeSet<String> = cur
                .named("strata_gateway_backend_requests_total")
                .filter_map(|s| s.label("backend").map(str::to_owned))
                .collect();
            for a in addrs {
                backends.insert(a.clone(), backend(&r, &a));
            }
        }
        Role::Queue => {
            for s in cur.named("strata_queue_jobs") {
                if let (Some(q), Some(state)) = (s.label("queue"), s.label("state")) {
                    queues
                        .entry(q.to_owned())
                        .or_insert_with(Figures::new)
                        .insert(state.to_owned(), s.value);
                }
            }
            for state in ["ready", "reserved", "delayed", "dead"] {
                let n = cur.sum_where("strata_queue_jobs", "state", state);
                f.insert(state.to_owned(), n + 0.0);
            }
        }
        _ => {}
    }
    (f, backends, queues)
}

/// One gateway backend's figures: the gateway's series with its
/// `backend` label, and its latency quantiles over the interval.
fn backend(r: &Reads<'_>, addr: &str) -> Figures {
    let mut b = Figures::new();
    let of = |s: &Scrape, name: &str| s.sum_where(name, "backend", addr);
    let rate = |name: &str| {
        let (prev, secs) = (r.prev?, r.dt?.as_secs_f64());
        (secs > 0.0).then(|| (of(r.cur, name) - of(prev, name)).max(0.0) / secs)
    };
    let mut put = |k: &str, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            b.insert(k.to_owned(), v + 0.0);
        }
    };
    put("rps", rate("strata_gateway_backend_requests_total"));
    put("failures_ps", rate("strata_gateway_backend_failures_total"));
    for (k, name) in [
        ("ejected", "strata_gateway_backend_ejected"),
        ("draining", "strata_gateway_backend_draining"),
        ("in_flight", "strata_gateway_backend_in_flight"),
    ] {
        put(k, Some(of(r.cur, name)));
    }
    if let Some(p) = r.prev {
        let buckets = bucket_deltas(
            p,
            r.cur,
            "strata_gateway_backend_latency_seconds_bucket",
            addr,
        );
        put("p50_ms", scrape::quantile(&buckets, 0.50).map(|s| s * 1e3));
        put("p99_ms", scrape::quantile(&buckets, 0.99).map(|s| s * 1e3));
    }
    b
}

/// Cumulative bucket counts of `backend`'s histogram over the interval,
/// summed across pools, sorted by bound.
fn bucket_deltas(prev: &Scrape, cur: &Scrape, name: &str, backend: &str) -> Vec<(f64, f64)> {
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let mut add = |s: &Scrape, sign: f64| {
        for x in s
            .named(name)
            .filter(|x| x.label("backend") == Some(backend))
        {
            let Some(le) = x.label("le") else { continue };
            let le: f64 = match le {
                "+Inf" => f64::INFINITY,
                v => match v.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                },
            };
            // Order by the bound; the bits of a positive f64 sort like it.
            let e = by_le.entry(le.to_bits()).or_insert((le, 0.0));
            e.1 += sign * x.value;
        }
    };
    add(cur, 1.0);
    add(prev, -1.0);
    by_le
        .into_values()
        .map(|(le, n)| (le, n.max(0.0)))
        .collect()
}

/// A member as the API shows it.
#[derive(Serialize)]
pub(crate) struct MemberView<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub addr: &'a str,
    pub state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    pub figures: Figures,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub queues: &'a BTreeMap<String, Figures>,
    /// Columns over the window: `t` (Unix ms) and one per figure.
    pub history: BTreeMap<String, Vec<Option<f64>>>,
}

/// Every member, with states refined by what the gateways say of their
/// backends (ejected, draining) and each node's latency as its gateway
/// measures it.
pub(crate) fn views(ws: &[Watch]) -> Vec<MemberView<'_>> {
    let mut seen: BTreeMap<String, Figures> = BTreeMap::new();
    for w in ws.iter().filter(|w| w.member.role == Role::Gateway) {
        for (addr, b) in &w.backends {
            seen.insert(addr.clone(), b.clone());
        }
    }
    ws.iter()
        .map(|w| {
            let mut figures = w.now.clone();
            let mut state = w.state();
            if let Some(b) = seen.get(&w.member.addr) {
                for k in ["p50_ms", "p99_ms"] {
                    if let Some(v) = b.get(k) {
                        figures.insert(k.to_owned(), *v);
                    }
                }
                if state == "up" && b.get("draining").is_some_and(|v| *v > 0.0) {
                    state = "draining";
                }
                if state == "up" && b.get("ejected").is_some_and(|v| *v > 0.0) {
                    state = "ejected";
                }
            }
            let mut history: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
            let names: std::collections::BTreeSet<&String> =
                w.history.iter().flat_map(|(_, f)| f.keys()).collect();
            history.insert(
                "t".into(),
                w.history.iter().map(|(t, _)| Some(*t as f64)).collect(),
            );
            for n in names {
                history.insert(
                    n.clone(),
                    w.history.iter().map(|(_, f)| f.get(n).copied()).collect(),
                );
            }
            MemberView {
                name: &w.member.name,
                role: w.member.role.name(),
                addr: &w.member.addr,
                state,
                error: w.error.as_deref(),
                figures,
                queues: &w.queues,
                history,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::parse_prometheus;

    #[test]
    fn gateway_rates_and_backend_latency_come_from_two_reads() {
        let page = |reqs: u64, fast: u64, slow: u64| {
            parse_prometheus(&format!(
                "strata_gateway_requests_total{{pool=\"nodes\"}} {reqs}\n\
                 strata_gateway_backend_requests_total{{pool=\"nodes\",backend=\"a:1\"}} {reqs}\n\
                 strata_gateway_backend_ejected{{pool=\"nodes\",backend=\"a:1\"}} 1\n\
                 strata_gateway_backend_latency_seconds_bucket{{pool=\"nodes\",backend=\"a:1\",le=\"0.001\"}} {fast}\n\
                 strata_gateway_backend_latency_seconds_bucket{{pool=\"nodes\",backend=\"a:1\",le=\"0.01\"}} {}\n\
                 strata_gateway_backend_latency_seconds_bucket{{pool=\"nodes\",backend=\"a:1\",le=\"+Inf\"}} {}\n",
                fast + slow,
                fast + slow
            ))
        };
        let (a, b) = (page(100, 100, 0), page(300, 200, 100));
        let (f, backends, _) = figures(Role::Gateway, Some(&a), &b, Some(Duration::from_secs(2)));
        assert_eq!(f["rps"], 100.0);
        let be = &backends["a:1"];
        assert_eq!(be["rps"], 100.0);
        assert_eq!(be["ejected"], 1.0);
        assert!((be["p50_ms"] - 1.0).abs() < 1e-9, "{be:?}");
        assert!(be["p99_ms"] > 9.0 && be["p99_ms"] <= 10.0, "{be:?}");
        // A first read has no rates yet.
        let (f, _, _) = figures(Role::Gateway, None, &a, None);
        assert!(!f.contains_key("rps"));
    }

    #[test]
    fn a_restarted_counter_reads_as_zero_rate() {
        let a = parse_prometheus("strata_node_gets_total 500\n");
        let b = parse_prometheus("strata_node_gets_total 20\n");
        let (f, _, _) = figures(Role::Node, Some(&a), &b, Some(Duration::from_secs(1)));
        assert_eq!(f["rps"], 0.0);
    }
}

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

/// Per-second rate of counter `name` between two reads (a restarted
/// member's counter going down reads as zero, not negative).
fn rate(
    prev: Option<&Scrape>,
    cur: &Scrape,
    dt: Option<Duration>,
    f: impl Fn(&Scrape) -> f64,
) -> Option<f64> {
    let (prev, dt) = (prev?, dt?);
    let secs = dt.as_secs_f64();
    (secs > 0.0).then(|| ((f(cur) - f(prev)).max(0.0)) / secs)
}

/// Hits over hits plus misses in the interval; `None` when nothing was asked.
fn ratio(
    prev: Option<&Scrape>,
    cur: &Scrape,
    hits: impl Fn(&Scrape) -> f64,
    all: impl Fn(&Scrape) -> f64,
) -> Option<f64> {
    let prev = prev?;
    let (h, a) = (hits(cur) - hits(prev), all(cur) - all(prev));
    (a > 0.0).then(|| (h / a).clamp(0.0, 1.0))
}

type Split = (
    Figures,
    BTreeMap<String, Figures>,
    BTreeMap<String, Figures>,
);

/// The figures a role shows, from its last two reads.
fn figures(role: Role, prev: Option<&Scrape>, cur: &Scrape, dt: Option<Duration>) -> Split {
    let mut f = Figures::new();
    let mut backends = BTreeMap::new();
    let mut queues = BTreeMap::new();
    let put = |f: &mut Figures, k: &str, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            // `+ 0.0` turns the -0.0 of an empty sum into 0.
            f.insert(k.to_owned(), v + 0.0);
        }
    };
    match role {
        Role::Gateway => {
            put(
                &mut f,
                "rps",
                rate(prev, cur, dt, |s| s.sum("strata_gateway_requests_total")),
            );
            put(
                &mut f,
                "errors_ps",
                rate(prev, cur, dt, |s| s.sum("strata_gateway_errors_total")),
            );
            put(
                &mut f,
                "in_flight",
                Some(cur.sum("strata_gateway_in_flight")),
            );
            let addrs: std::collections::BTreeSet<String> = cur
                .named("strata_gateway_backend_requests_total")
                .filter_map(|s| s.label("backend").map(str::to_owned))
                .collect();
            for a in addrs {
                let mut b = Figures::new();
                let of = |s: &Scrape, name: &str| s.sum_where(name, "backend", &a);
                put(
                    &mut b,
                    "rps",
                    rate(prev, cur, dt, |s| {
                        of(s, "strata_gateway_backend_requests_total")
                    }),
                );
                put(
                    &mut b,
                    "failures_ps",
                    rate(prev, cur, dt, |s| {
                        of(s, "strata_gateway_backend_failures_total")
                    }),
                );
                put(
                    &mut b,
                    "ejected",
                    Some(of(cur, "strata_gateway_backend_ejected")),
                );
                put(
                    &mut b,
                    "draining",
                    Some(of(cur, "strata_gateway_backend_draining")),
                );
                put(
                    &mut b,
                    "in_flight",
                    Some(of(cur, "strata_gateway_backend_in_flight")),
                );
                if let Some(p) = prev {
                    let buckets =
                        bucket_deltas(p, cur, "strata_gateway_backend_latency_seconds_bucket", &a);
                    put(
                        &mut b,
                        "p50_ms",
                        scrape::quantile(&buckets, 0.50).map(|s| s * 1e3),
                    );
                    put(
                        &mut b,
                        "p99_ms",
                        scrape::quantile(&buckets, 0.99).map(|s| s * 1e3),
                    );
                }
                backends.insert(a, b);
            }
        }
        Role::Node => {
            let reqs = |s: &Scrape| {
                ["gets", "puts", "deletes", "lists"]
                    .iter()
                    .map(|n| s.sum(&format!("strata_node_{n}_total")))
                    .sum()
            };
            put(&mut f, "rps", rate(prev, cur, dt, reqs));
            put(
                &mut f,
                "errors_ps",
                rate(prev, cur, dt, |s| s.sum("strata_node_server_errors_total")),
            );
            put(
                &mut f,
                "client_errors_ps",
                rate(prev, cur, dt, |s| s.sum("strata_node_client_errors_total")),
            );
            put(
                &mut f,
                "sent_bps",
                rate(prev, cur, dt, |s| s.sum("strata_node_sent_bytes_total")),
            );
            put(
                &mut f,
                "cache_hit_ratio",
                ratio(
                    prev,
                    cur,
                    |s| s.sum("strata_cache_hits_total"),
                    |s| s.sum("strata_cache_hits_total") + s.sum("strata_cache_misses_total"),
                ),
            );
            put(
                &mut f,
                "cache_bytes",
                cur.has("strata_cache_bytes")
                    .then(|| cur.sum("strata_cache_bytes")),
            );
        }
        Role::Store => {
            put(&mut f, "blobs", Some(cur.sum("strata_store_blobs")));
            put(&mut f, "volumes", Some(cur.sum("strata_store_volumes")));
            put(
                &mut f,
                "disk_used_bytes",
                cur.has("strata_store_disk_used_bytes")
                    .then(|| cur.sum("strata_store_disk_used_bytes")),
            );
            put(
                &mut f,
                "disk_free_bytes",
                cur.has("strata_store_disk_free_bytes")
                    .then(|| cur.sum("strata_store_disk_free_bytes")),
            );
            put(
                &mut f,
                "reads_ps",
                rate(prev, cur, dt, |s| s.sum("strata_store_reads_total")),
            );
            put(
                &mut f,
                "writes_ps",
                rate(prev, cur, dt, |s| s.sum("strata_store_writes_total")),
            );
            put(
                &mut f,
                "written_bps",
                rate(prev, cur, dt, |s| s.sum("strata_store_written_bytes_total")),
            );
        }
        Role::Index => {
            put(
                &mut f,
                "lookups_ps",
                rate(prev, cur, dt, |s| s.sum("strata_index_lookups_total")),
            );
            put(
                &mut f,
                "writes_ps",
                rate(prev, cur, dt, |s| s.sum("strata_index_writes_total")),
            );
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
                put(
                    &mut f,
                    state,
                    Some(cur.sum_where("strata_queue_jobs", "state", state)),
                );
            }
            put(
                &mut f,
                "puts_ps",
                rate(prev, cur, dt, |s| s.sum("strata_queue_jobs_total")),
            );
        }
        Role::Search => {
            put(
                &mut f,
                "pages",
                cur.has("strata_search_pages")
                    .then(|| cur.sum("strata_search_pages")),
            );
            put(
                &mut f,
                "queries_ps",
                rate(prev, cur, dt, |s| s.sum("strata_search_queries_total")),
            );
        }
        Role::Cache => {
            put(
                &mut f,
                "ops_ps",
                rate(prev, cur, dt, |s| s.sum("cmd_get") + s.sum("cmd_set")),
            );
            put(
                &mut f,
                "hit_ratio",
                ratio(prev, cur, |s| s.sum("get_hits"), |s| s.sum("cmd_get")),
            );
            put(&mut f, "bytes", Some(cur.sum("bytes")));
            put(&mut f, "limit_bytes", Some(cur.sum("limit_maxbytes")));
            put(&mut f, "items", Some(cur.sum("curr_items")));
        }
    }
    (f, backends, queues)
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

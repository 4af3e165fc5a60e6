//! Each scenario's plots, read from the JSON it writes: one function per
//! scenario, used right after a run (beside the JSON) and by `bench plot`
//! to draw again from a saved result without running anything.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::plot::Plots;

/// The number at `path` (`a.b.c`) in `v`.
fn at(v: &Value, path: &str) -> Option<f64> {
    path.split('.').try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// One run `r` as a round of `server` in `group`: the main figure at
/// `main`, latencies at `lat` (label, path).
fn round_of(p: &mut Plots, group: &str, server: &str, r: &Value, main: &str, lat: &[(&str, &str)]) {
    let Some(m) = at(r, main) else { return };
    let l: Vec<(&str, f64)> = lat
        .iter()
        .filter_map(|(label, path)| at(r, path).map(|v| (*label, v)))
        .collect();
    p.round(group, server, m, &l);
}

/// Every run in the array `runs`, as [`round_of`].
fn rounds(
    p: &mut Plots,
    group: &str,
    server: &str,
    runs: &Value,
    main: &str,
    lat: &[(&str, &str)],
) {
    for r in arr(runs) {
        round_of(p, group, server, r, main, lat);
    }
}

/// The plots of `scenario` from its result `v`; `None` for a scenario
/// without any.
pub fn plots(scenario: &str, v: &Value) -> Option<Plots> {
    let wrk = [("p50", "wrk.p50_ms"), ("p99", "wrk.p99_ms")];
    let flat = [("p50", "p50_ms"), ("p99", "p99_ms")];
    let mut p;
    match scenario {
        "store" => {
            p = Plots::new("store", "req/s", "ms");
            for (key, name) in [
                ("strata", "strata"),
                ("strata_no_cache", "strata, cache off"),
                ("nginx", "nginx"),
            ] {
                rounds(
                    &mut p,
                    "uniform random GETs",
                    name,
                    &v[key],
                    "wrk.rps",
                    &wrk,
                );
            }
        }
        "serve" => {
            p = Plots::new("serve", "req/s", "ms");
            for workload in ["zipf", "uniform"] {
                let Some(w) = v.get(workload).and_then(Value::as_object) else {
                    continue;
                };
                for (name, runs) in w.iter().filter(|(k, _)| !k.starts_with("ratios")) {
                    rounds(&mut p, workload, name, runs, "wrk.rps", &wrk);
                }
            }
        }
        "cache" => {
            p = Plots::new("cache", "ops/s", "us");
            for row in arr(v) {
                let group = format!(
                    "{} B, depth {}",
                    row["value"].as_u64().unwrap_or(0),
                    row["depth"].as_u64().unwrap_or(0)
                );
                for server in ["strata", "memcached"] {
                    rounds(
                        &mut p,
                        &group,
                        server,
                        &row[server],
                        "load.ops",
                        &[("p50", "load.p50_us"), ("p99", "load.p99_us")],
                    );
                }
            }
        }
        "put" => {
            p = Plots::new("put", "MB/s", "ms");
            for server in ["strata", "fio"] {
                rounds(
                    &mut p,
                    "acknowledged writes",
                    server,
                    &v[server],
                    "mb_per_s",
                    &[],
                );
            }
        }
        "queue" => {
            p = Plots::new("queue", "cycles/s", "ms");
            for contender in arr(&v["runs"]) {
                for r in arr(contender) {
                    let name = r["server"].as_str().unwrap_or("?");
                    round_of(
                        &mut p,
                        "put + reserve + delete",
                        name,
                        r,
                        "cycles_per_sec",
                        &flat,
                    );
                }
            }
        }
        "s3" => {
            p = Plots::new("s3", "MB/s", "ms");
            for (group, o) in v.as_object()? {
                for server in ["native", "s3"] {
                    rounds(&mut p, group, server, &o[server], "mb_s", &wrk);
                }
            }
        }
        "balancer" | "edge" => {
            p = Plots::new(scenario, "req/s", "ms");
            let group = if scenario == "edge" {
                "TLS + HTTP/2"
            } else {
                "HTTP/1.1 keep-alive"
            };
            for row in arr(v) {
                let name = row["server"].as_str().unwrap_or("?");
                rounds(&mut p, group, name, &row["runs"], "rps", &flat);
            }
        }
        "ranges" => {
            p = Plots::new("ranges", "req/s", "ms");
            for pair in arr(v) {
                for (key, name) in [("on", "collapsing on"), ("off", "collapsing off")] {
                    round_of(
                        &mut p,
                        "random 64 KiB ranges of one blob",
                        name,
                        &pair[key],
                        "rps",
                        &[("p99", "p99_ms")],
                    );
                }
            }
        }
        "collapse" => {
            p = Plots::new("collapse", "origin reads", "ms");
            for row in arr(v) {
                let group = format!("{} MiB", row["size_mb"].as_u64().unwrap_or(0));
                let name = row["server"].as_str().unwrap_or("?");
                let o = &row["outcome"];
                round_of(
                    &mut p,
                    &group,
                    name,
                    o,
                    "origin_reads",
                    &[
                        ("added TTFB p50", "added_ttfb_p50_ms"),
                        ("added TTFB p99", "added_ttfb_p99_ms"),
                    ],
                );
            }
        }
        "failover" => {
            p = Plots::new("failover", "p99 ms", "ms");
            for row in arr(v) {
                let name = row["server"].as_str().unwrap_or("?");
                for (group, key) in [
                    ("before", "p99_before_ms"),
                    ("after a kill", "p99_after_kill_ms"),
                    ("after a slow-down", "p99_after_slow_ms"),
                ] {
                    if let Some(x) = at(row, key) {
                        p.round(group, name, x, &[]);
                    }
                }
            }
        }
        "pg" => {
            p = Plots::new("pg", "ops/s", "ms");
            for row in arr(v) {
                let group = row["workload"].as_str().unwrap_or("?");
                let name = row["backend"].as_str().unwrap_or("?");
                for r in arr(&row["rounds"]) {
                    if let Some(x) = r.as_f64() {
                        p.round(group, name, x, &[]);
                    }
                }
            }
        }
        "search" => {
            p = Plots::new("search", "p99 ms", "ms");
            for row in arr(&v["rows"]) {
                let group = row["kind"].as_str().unwrap_or("?");
                for (key, name) in [("one", "one shard"), ("four", "four shards")] {
                    if let Some(x) = at(&row[key], "p99_ms") {
                        let p50 = at(&row[key], "p50_ms").unwrap_or(0.0);
                        p.round(group, name, x, &[("p50", p50), ("p99", x)]);
                    }
                }
            }
        }
        "hitratio" => {
            p = Plots::new("hitratio", "hit %", "");
            for row in arr(v) {
                let group = format!(
                    "{} {}%",
                    row["trace"].as_str().unwrap_or("?"),
                    row["size_pct"]
                );
                for (key, name) in [("s3fifo", "S3-FIFO"), ("lru", "LRU")] {
                    if let Some(x) = at(row, key) {
                        p.round(&group, name, x, &[]);
                    }
                }
            }
        }
        "ring" => {
            p = Plots::new("ring", "fraction", "");
            for row in arr(v) {
                let group = format!("{} nodes", row["nodes"]);
                for (key, name) in [
                    ("max_over_avg", "max / mean load"),
                    ("moved_add", "keys moved, one added"),
                    ("moved_remove", "keys moved, one removed"),
                ] {
                    if let Some(x) = at(row, key) {
                        p.round(&group, name, x, &[]);
                    }
                }
            }
        }
        "affinity" => {
            p = Plots::new("affinity", "node-local hit %", "");
            for row in arr(v) {
                if let Some(x) = at(row, "hit_pct") {
                    p.round(
                        "node-local cache",
                        row["selection"].as_str().unwrap_or("?"),
                        x,
                        &[],
                    );
                }
            }
        }
        _ => return None,
    }
    Some(p)
}

/// Draws `scenario`'s plots from `v` into `dir`, saying where they went;
/// a failure to draw never fails the run that measured the figures.
pub fn after_run(dir: &Path, scenario: &str, v: &Value) {
    match plots(scenario, v) {
        Some(p) => p.write_and_say(dir),
        None => println!("plot: none for {scenario}"),
    }
}

/// Where each scenario writes its JSON under `target/bench`.
fn result_file(scenario: &str) -> PathBuf {
    let base = Path::new("target/bench");
    match scenario {
        "hitratio" | "ring" | "affinity" => base.join(format!("{scenario}.json")),
        "s3" => base.join("s3/results.json"),
        s => base.join(s).join(format!("{s}.json")),
    }
}

/// `bench plot`: draws the plots of `scenarios` (every one when empty)
/// again from their saved results; a result that is missing is said.
pub fn replot(scenarios: &[String]) -> anyhow::Result<()> {
    const ALL: &[&str] = &[
        "store", "serve", "cache", "put", "queue", "s3", "balancer", "edge", "ranges", "collapse",
        "failover", "pg", "search", "hitratio", "ring", "affinity",
    ];
    let chosen: Vec<&str> = if scenarios.is_empty() {
        ALL.to_vec()
    } else {
        scenarios.iter().map(String::as_str).collect()
    };
    let mut drawn = 0;
    for s in chosen {
        if !ALL.contains(&s) {
            bail!("no scenario {s} (one of {})", ALL.join(", "));
        }
        let path = result_file(s);
        let Ok(text) = std::fs::read_to_string(&path) else {
            println!(
                "{s}: no result at {} (run `bench {s}` first)",
                path.display()
            );
            continue;
        };
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let dir = path.parent().context("result path")?;
        let p = plots(s, &v).context("a scenario without plots")?;
        for out in p.write(dir)? {
            println!("plot: {}", out.display());
            drawn += 1;
        }
    }
    println!("{drawn} plots drawn");
    Ok(())
}

//! Every role's Prometheus text passes `promtool check metrics` (from
//! Debian's `prometheus` package, which `.ci/run` installs): each family
//! once, with HELP and TYPE, units spelled out.

use std::io::Write;
use std::process::{Command, Stdio};

use testkit::Served;

mod common;
use common::bin;

fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-s", "-f"])
        .args(args)
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    out.stdout
}

/// `promtool check metrics` on `text`: its complaints, empty when clean.
fn promtool(text: &[u8]) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (.ci/run installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text)
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said.trim().to_owned()
    } else {
        format!("exit {:?}: {said}", out.status.code())
    }
}

#[test]
fn every_roles_metrics_pass_promtool() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Served::start(bin(), &dir.path().join("data"), &[]).expect("serve");
    // Traffic, so that every family has samples: writes, reads (twice, for
    // the cache tiers), a miss, and a job through the queue.
    let body = dir.path().join("b.bin");
    std::fs::write(&body, testkit::blob(1, 5000)).expect("write");
    let api = |k: &str| format!("http://{}/v1/blobs/{k}", s.http);
    curl(&["-T", body.to_str().expect("path"), &api("m/a")]);
    for _ in 0..2 {
        curl(&[&api("m/a")]);
    }
    let _ = Command::new("curl")
        .args(["-s", "-o", "/dev/null", &api("m/none")])
        .status();
    curl(&[
        "-H",
        "Prefer: respond-async",
        "-T",
        body.to_str().expect("path"),
        &api("m/async"),
    ]);
    let mut checked = Vec::new();
    let mut served = std::collections::BTreeSet::new();
    for (name, addr) in &s.listeners {
        let url = match name.as_str() {
            "public API" => format!("http://{addr}/_strata/metrics"),
            // The status page is HTML; the S3 listener has no metrics.
            "status" | "s3" => continue,
            _ => format!("http://{addr}/metrics"),
        };
        let text = curl(&[&url]);
        assert!(!text.is_empty(), "{name}: no metrics at {url}");
        let said = promtool(&text);
        assert!(
            said.is_empty(),
            "{name} ({url}):\n{said}\n---\n{}",
            String::from_utf8_lossy(&text)
        );
        checked.push(name.clone());
        for line in String::from_utf8_lossy(&text).lines() {
            if let Some(series) = line
                .split(['{', ' '])
                .next()
                .filter(|n| !n.starts_with('#'))
            {
                served.insert(series.to_owned());
            }
        }
    }
    // Every series the Grafana dashboard in docs/ queries is served.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana/strata-dashboard.json"
    ))
    .expect("dashboard");
    let v: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    let mut queried = 0;
    for panel in v["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("strata_") {
                    assert!(
                        served.contains(word),
                        "the dashboard's `{expr}` asks for {word}, which no role serves"
                    );
                    queried += 1;
                }
            }
        }
    }
    assert!(queried >= 20, "{queried} series queried");
    for want in [
        "public API",
        "node 1",
        "node 2",
        "store",
        "index",
        "queue",
        "search 0",
    ] {
        assert!(
            checked.iter().any(|c| c == want),
            "{want} not checked: {checked:?}"
        );
    }
}

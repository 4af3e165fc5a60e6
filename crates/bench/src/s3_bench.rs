//! `s3`: PUT and GET throughput of 64 KiB and 1 MiB objects through the
//! S3 API beside the native `/v1/blobs` API of the same `strata serve`.
//!
//! S3 requests carry real signatures: boto3 makes a presigned URL per key
//! and method (SigV4 in the query, checked by the server on every request),
//! and wrk replays them, as it replays the native paths; rounds alternate.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::dist::median;
use crate::wrk::{self, WrkResult};

/// Options of the `s3` scenario.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Alternating rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Connections.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Where results go.
    #[arg(long, default_value = "target/bench/s3")]
    out: PathBuf,
}

/// Object sizes and how many keys each cycles over.
const SIZES: [(&str, usize, usize); 2] = [("64KiB", 64 << 10, 2000), ("1MiB", 1 << 20, 300)];

const PRESIGN: &str = r#"
import boto3, sys
from botocore.config import Config
endpoint, ak, sk, out, label, n = sys.argv[1:7]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak,
                  aws_secret_access_key=sk, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
try:
    s3.create_bucket(Bucket="bench")
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
for method, op in (("put", "put_object"), ("get", "get_object")):
    with open("%s/s3-%s-%s.paths" % (out, label, method), "w") as f:
        for i in range(int(n)):
            url = s3.generate_presigned_url(op, Params={"Bucket": "bench", "Key": "%s/%d" % (label, i)}, ExpiresIn=86400)
            f.write(url[len(endpoint):] + "\n")
"#;

/// A Lua script that sends `method` to each path of `paths` in turn (with
/// `body` for PUT), starting over at the end.
fn script(path: &Path, paths: &Path, method: &str, body: Option<&Path>) -> anyhow::Result<()> {
    let body = match body {
        Some(b) => format!(
            "local f = assert(io.open(\"{}\", \"rb\"))\nwrk.body = f:read(\"*a\")\nf:close()\n",
            b.display()
        ),
        None => String::new(),
    };
    std::fs::write(
        path,
        format!(
            "{body}local paths = {{}}
for line in io.lines(\"{p}\") do paths[#paths + 1] = line end
local n = 0
request = function()
  n = n % #paths + 1
  return wrk.format(\"{method}\", paths[n])
end
",
            p = paths.display()
        ),
    )?;
    Ok(())
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Run {
    wrk: WrkResult,
    mb_s: f64,
}

/// Runs the scenario.
pub fn run(a: Args) -> anyhow::Result<()> {
    crate::peers::ensure_installed(&[("/usr/bin/wrk", "wrk")])?;
    let bin = crate::store_bench::strata_bin()?;
    std::fs::create_dir_all(&a.out)?;
    let out = std::fs::canonicalize(&a.out)?;
    let data = out.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let s = testkit::Served::start(&bin, &data, &[]).context("starting strata serve")?;
    let native_url = format!("http://{}", s.http);
    let s3_url = s.s3_url();

    let mut report = serde_json::Map::new();
    println!(
        "s3: strata serve, wrk -t1 -c{} -d{}s, {} alternating rounds; S3 requests presigned (SigV4 checked per request)",
        a.conns, a.secs, a.rounds
    );
    println!("| object | op | native MB/s (req/s) | S3 MB/s (req/s) | native p99 ms | S3 p99 ms | S3 / native |");
    println!("|---|---|---|---|---|---|---|");
    for (label, size, keys) in SIZES {
        let body = out.join(format!("{label}.body"));
        std::fs::write(&body, testkit::blob(size as u64, size))?;
        let ok = testkit::python_with_boto3()?
            .args(["-c", PRESIGN, &s3_url, &s.access_key, &s.secret_key])
            .arg(&out)
            .args([label, &keys.to_string()])
            .status()?
            .success();
        if !ok {
            bail!("presigning failed");
        }
        let native_paths = out.join(format!("native-{label}.paths"));
        std::fs::write(
            &native_paths,
            (0..keys)
                .map(|i| format!("/v1/blobs/native/{label}/{i}\n"))
                .collect::<String>(),
        )?;
        for op in ["put", "get"] {
            let mk = |api: &str, paths: &Path| -> anyhow::Result<PathBuf> {
                let p = out.join(format!("{api}-{label}-{op}.lua"));
                let method = op.to_uppercase();
                script(&p, paths, &method, (op == "put").then_some(body.as_path()))?;
                Ok(p)
            };
            let native = mk("native", &native_paths)?;
            let s3 = mk("s3", &out.join(format!("s3-{label}-{op}.paths")))?;
            let (mut nr, mut sr) = (Vec::new(), Vec::new());
            for r in 0..a.rounds {
                for (api, url, script, runs) in [
                    ("native", &native_url, &native, &mut nr),
                    ("s3", &s3_url, &s3, &mut sr),
                ] {
                    let w = wrk::run(url, script, 1, a.conns, a.secs)?;
                    if w.errors > 0 {
                        bail!("{api} {op} {label}: {} errors", w.errors);
                    }
                    let run = Run {
                        wrk: w,
                        mb_s: w.rps * size as f64 / 1e6,
                    };
                    eprintln!(
                        "{label} {op} round {}: {api} {:.1} MB/s ({:.0} req/s, p50 {:.2} ms, p99 {:.2} ms)",
                        r + 1,
                        run.mb_s,
                        w.rps,
                        w.p50_ms,
                        w.p99_ms
                    );
                    runs.push(run);
                }
            }
            let med = |rs: &[Run], f: fn(&Run) -> f64| median(rs.iter().map(f).collect());
            let (n_mb, s_mb) = (med(&nr, |r| r.mb_s), med(&sr, |r| r.mb_s));
            println!(
                "| {label} | {} | {:.1} ({:.0}) | {:.1} ({:.0}) | {:.2} | {:.2} | {:.2}x |",
                op.to_uppercase(),
                n_mb,
                med(&nr, |r| r.wrk.rps),
                s_mb,
                med(&sr, |r| r.wrk.rps),
                med(&nr, |r| r.wrk.p99_ms),
                med(&sr, |r| r.wrk.p99_ms),
                s_mb / n_mb
            );
            report.insert(
                format!("{label}-{op}"),
                serde_json::json!({ "native": nr, "s3": sr }),
            );
        }
    }
    let json = serde_json::Value::Object(report);
    std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(&json)?)?;
    crate::plots_of::after_run(&out, "s3", &json);
    Ok(())
}

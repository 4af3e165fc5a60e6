//! Running wrk with a random-key Lua script and reading its report.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

/// Writes a Lua script that requests `{prefix}{i%256:02x}/{i}` for uniform
/// random `i` in `0..n`.
pub fn random_key_script(path: &Path, prefix: &str, n: u64, seed: u64) -> anyhow::Result<()> {
    std::fs::write(
        path,
        format!(
            "math.randomseed({seed})
request = function()
  local i = math.random(0, {last})
  return wrk.format(\"GET\", string.format(\"{prefix}%02x/%d\", i % 256, i))
end
",
            last = n - 1
        ),
    )?;
    Ok(())
}

/// `wrk -t{threads} -c{conns} -d{secs}s --latency -s script url`.
pub fn run(
    url: &str,
    script: &Path,
    threads: usize,
    conns: usize,
    secs: u64,
) -> anyhow::Result<WrkResult> {
    let out = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse(&text).with_context(|| format!("unreadable wrk output:\n{text}"))
}

fn ms(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Reads wrk's text report.
pub fn parse(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    for line in text.lines().map(str::trim) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => r.rps = v.parse().ok()?,
            ["50%", v] => r.p50_ms = ms(v)?,
            ["99%", v] => r.p99_ms = ms(v)?,
            ["Non-2xx", "or", "3xx", "responses:", v] => r.errors += v.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    (r.rps > 0.0).then_some(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_report() {
        let t = "Running 10s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Latency Distribution
     50%  412.00us
     75%  600.00us
     90%    1.20ms
     99%    3.51ms
  123456 requests in 10.00s, 4.00GB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  12345.67
Transfer/sec:    409.6MB
";
        let r = super::parse(t).expect("parse");
        assert_eq!(r.rps, 12345.67);
        assert_eq!(r.p50_ms, 0.412);
        assert_eq!(r.p99_ms, 3.51);
        assert_eq!(r.errors, 8);
    }
}

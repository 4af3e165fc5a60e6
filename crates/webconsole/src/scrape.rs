//! Reading a member's figures: Prometheus text from an HTTP role's
//! metrics page, or memcached's `stats` from a cache member, into one flat
//! list of samples the sampler can sum and filter.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One series' value: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Metric name (for a histogram, with its `_bucket`/`_sum`/`_count`).
    pub name: String,
    /// Label pairs in page order, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Series {
    /// The value of label `name`, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every series of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The series, in page order.
    pub series: Vec<Series>,
}

impl Scrape {
    /// Sum of every series named `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.series
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// Sum of the series named `name` whose label `label` is `value`.
    pub fn sum_where(&self, name: &str, label: &str, value: &str) -> f64 {
        self.series
            .iter()
            .filter(|s| s.name == name && s.label(label) == Some(value))
            .map(|s| s.value)
            .sum()
    }

    /// Whether any series is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.series.iter().any(|s| s.name == name)
    }

    /// The series named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Series> + 'a {
        self.series.iter().filter(move |s| s.name == name)
    }
}

/// Parses Prometheus text format 0.0.4; lines it cannot read are skipped
/// (a figure missing from the console beats a console that fails).
pub fn parse_prometheus(text: &str) -> Scrape {
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect();
    Scrape { series }
}

fn parse_line(line: &str) -> Option<Series> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, after)
        }
        None => {
            let sp = line.find(' ')?;
            (&line[..sp], Vec::new(), &line[sp..])
        }
    };
    // A timestamp may follow the value.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Series {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

/// Label pairs up to the closing brace, and the text after it.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((out, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        s = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.push((key, value));
        s = &s[end + 1..];
    }
}

/// memcached's `stats` from the cache member at `addr`, as series named
/// after each stat (`get_hits`, `bytes`, ...). With `auth`, the
/// connection logs in first as memcached's ASCII authentication does (a
/// `set` whose data is the credential).
pub async fn memcached_stats(
    addr: &str,
    auth: Option<&[u8]>,
    timeout: Duration,
) -> Result<Scrape, String> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut ask = Vec::new();
        if let Some(cred) = auth {
            ask.extend_from_slice(format!("set auth 0 0 {}\r\n", cred.len()).as_bytes());
            ask.extend_from_slice(cred);
            ask.extend_from_slice(b"\r\n");
        }
        ask.extend_from_slice(b"stats\r\n");
        s.write_all(&ask).await.map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(4096);
        loop {
            if buf.ends_with(b"END\r\n") {
                break;
            }
            if buf.starts_with(b"CLIENT_ERROR") && buf.ends_with(b"\r\n") {
                return Err(String::from_utf8_lossy(&buf).trim().to_owned());
            }
            if buf.len() > 1 << 20 {
                return Err("stats reply over 1 MiB".to_owned());
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed before END".to_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        let series = text
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("STAT ")?.split_whitespace();
                let name = w.next()?.to_owned();
                let value = w.next()?.parse().ok()?;
                Some(Series {
                    name,
                    labels: Vec::new(),
                    value,
                })
            })
            .collect();
        Ok(Scrape { series })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// The `q` quantile (0..1) of a histogram from its cumulative bucket
/// counts over an interval (`le` bound, count), sorted by bound: the
/// bound of the first bucket reaching the rank, interpolated linearly
/// inside it as Prometheus' `histogram_quantile` does. `None` when the
/// interval saw nothing.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                // Beyond the last finite bound: say that bound.
                return Some(prev.0);
            }
            let in_bucket = count - prev.1;
            let frac = if in_bucket > 0.0 {
                (rank - prev.1) / in_bucket
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_escapes_and_special_values() {
        let s = parse_prometheus(
            "# HELP x y\n# TYPE x counter\nx_total 3\n\
             b{pool=\"nodes\",backend=\"127.0.0.1:1\",le=\"+Inf\"} 7 1700000000\n\
             q{path=\"a\\\"b\\\\c\"} 1.5e3\nbroken{x=\"1\" 2\n",
        );
        assert_eq!(s.series.len(), 3);
        assert_eq!(s.sum("x_total"), 3.0);
        assert_eq!(s.series[1].label("le"), Some("+Inf"));
        assert_eq!(s.sum_where("b", "pool", "nodes"), 7.0);
        assert_eq!(s.series[2].label("path"), Some("a\"b\\c"));
        assert_eq!(s.series[2].value, 1500.0);
    }

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        // 100 observations: 50 under 1 ms, 40 more under 2 ms, 10 above.
        let b = [
            (0.001, 50.0),
            (0.002, 90.0),
            (0.004, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 0.5).unwrap() - 0.001).abs() < 1e-12);
        assert!((quantile(&b, 0.7).unwrap() - 0.0015).abs() < 1e-12);
        assert!((quantile(&b, 0.99).unwrap() - 0.0038).abs() < 1e-12);
        assert_eq!(quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        // Everything past the last finite bound.
        assert_eq!(
            quantile(&[(0.001, 0.0), (f64::INFINITY, 5.0)], 0.5),
            Some(0.001)
        );
    }
}

//! Formatting a log line: the combined log format (nginx's `combined`
//! plus the pool, upstream and timings) or one JSON object, with the
//! formatted second cached across the lines written in it.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Entry, LogFormat};

/// The formatted second, reused by every line in it, and backend
/// addresses as text.
#[derive(Default)]
pub(super) struct TimeCache {
    sec: u64,
    clf: String,
    iso: String,
    addrs: std::collections::HashMap<SocketAddr, String>,
}

impl TimeCache {
    fn addr(&mut self, a: SocketAddr) -> &str {
        if self.addrs.len() > 4096 {
            // Backends come and go over a long life; start over.
            self.addrs.clear();
        }
        self.addrs.entry(a).or_insert_with(|| a.to_string())
    }

    fn at(&mut self, t: SystemTime) -> (&str, &str, u32) {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        if d.as_secs() != self.sec || self.clf.is_empty() {
            self.sec = d.as_secs();
            self.clf = clf_time(t);
            let iso = iso_time(t);
            // Without the `.mmmZ` tail: milliseconds differ per line.
            self.iso = iso[..iso.len() - 5].to_owned();
        }
        (&self.clf, &self.iso, d.subsec_millis())
    }
}

/// Formats `e` as one line (without the newline).
pub fn format_entry(e: &Entry<'_>, format: LogFormat, out: &mut String) {
    format_cached(e, format, &mut TimeCache::default(), out)
}

/// `d` in seconds with `places` (3 or 6) decimals, by integer arithmetic
/// (float formatting showed in profiles).
pub(super) fn seconds(d: Duration, places: u32, out: &mut String) {
    let unit = 10u64.pow(places);
    let n = (d.as_nanos() / u128::from(1_000_000_000 / unit)).min(u128::from(u64::MAX)) as u64;
    push_int(out, n / unit, 1);
    out.push('.');
    push_int(out, n % unit, places as usize);
}

/// `n` in decimal, zero-padded to `width` digits, without the formatting
/// machinery (it showed in profiles).
pub(super) fn push_int(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n > 0 || digits.len() - i < width.max(1) {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("0"));
}

pub(super) fn format_cached(
    e: &Entry<'_>,
    format: LogFormat,
    times: &mut TimeCache,
    out: &mut String,
) {
    match format {
        LogFormat::Combined => {
            let q = |s: &str, out: &mut String| {
                out.push('"');
                escape_combined(s, out);
                out.push('"');
            };
            let (clf, _, _) = times.at(e.time);
            out.push_str(e.remote);
            out.push_str(" - - [");
            out.push_str(clf);
            out.push_str("] \"");
            escape_combined(e.method, out);
            out.push(' ');
            escape_combined(e.target, out);
            out.push(' ');
            out.push_str(e.protocol);
            out.push_str("\" ");
            push_int(out, e.status.into(), 1);
            out.push(' ');
            push_int(out, e.bytes, 1);
            out.push(' ');
            q(e.referer.unwrap_or("-"), out);
            out.push(' ');
            q(e.user_agent.unwrap_or("-"), out);
            out.push_str(" pool=");
            q(if e.pool.is_empty() { "-" } else { e.pool }, out);
            out.push_str(" upstream=\"");
            match e.upstream {
                Some(a) => out.push_str(times.addr(a)),
                None => out.push('-'),
            }
            out.push_str("\" rt=");
            seconds(e.request_time, 3, out);
            out.push_str(" urt=");
            match e.upstream_time {
                Some(d) => seconds(d, 3, out),
                None => out.push('-'),
            }
            out.push_str(" rid=");
            q(e.request_id.unwrap_or("-"), out);
        }
        LogFormat::Json => {
            let s = |v: &str, out: &mut String| {
                out.push('"');
                escape_json(v, out);
                out.push('"');
            };
            let opt = |v: Option<&str>, out: &mut String| match v {
                Some(v) => s(v, out),
                None => out.push_str("null"),
            };
            let (_, iso, ms) = times.at(e.time);
            out.push_str("{\"time\":\"");
            out.push_str(iso);
            out.push('.');
            push_int(out, ms.into(), 3);
            out.push_str("Z\",\"remote\":\"");
            out.push_str(e.remote);
            out.push_str("\",\"method\":");
            s(e.method, out);
            out.push_str(",\"target\":");
            s(e.target, out);
            out.push_str(",\"protocol\":\"");
            out.push_str(e.protocol);
            out.push_str("\",\"status\":");
            push_int(out, e.status.into(), 1);
            out.push_str(",\"bytes\":");
            push_int(out, e.bytes, 1);
            out.push_str(",\"referer\":");
            opt(e.referer, out);
            out.push_str(",\"user_agent\":");
            opt(e.user_agent, out);
            out.push_str(",\"pool\":");
            s(e.pool, out);
            match e.upstream {
                Some(a) => {
                    out.push_str(",\"upstream\":\"");
                    out.push_str(times.addr(a));
                    out.push('"');
                }
                None => out.push_str(",\"upstream\":null"),
            }
            out.push_str(",\"request_time\":");
            seconds(e.request_time, 6, out);
            out.push_str(",\"upstream_time\":");
            match e.upstream_time {
                Some(d) => seconds(d, 6, out),
                None => out.push_str("null"),
            }
            out.push_str(",\"request_id\":");
            opt(e.request_id, out);
            out.push('}');
        }
    }
}

/// nginx's escaping for quoted log fields: `"`, `\` and bytes outside
/// printable ASCII as `\xHH`, so a client cannot forge a line or a field.
fn escape_combined(s: &str, out: &mut String) {
    if s.bytes()
        .all(|b| b != b'"' && b != b'\\' && (0x20..0x7f).contains(&b))
    {
        out.push_str(s);
        return;
    }
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

fn escape_json(s: &str, out: &mut String) {
    if s.bytes().all(|b| b != b'"' && b != b'\\' && b >= 0x20) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Civil date (UTC) of a time: (year, month 1..=12, day, h, m, s, ms).
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let t = time::OffsetDateTime::from(t.max(UNIX_EPOCH));
    (
        i64::from(t.year()),
        u32::from(u8::from(t.month())),
        u32::from(t.day()),
        u32::from(t.hour()),
        u32::from(t.minute()),
        u32::from(t.second()),
        u32::from(t.millisecond()),
    )
}

/// `10/Oct/2000:13:55:36 +0000`
pub fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(t);
    format!(
        "{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000",
        MONTHS[(mo - 1) as usize]
    )
}

/// `2000-10-10T13:55:36.123Z`
pub fn iso_time(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

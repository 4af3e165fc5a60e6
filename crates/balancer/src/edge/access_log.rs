//! The access log: one line per request, in the combined log format or as
//! JSON lines, to a file or stdout.
//!
//! The request path never waits on the disk. The full path moves its
//! record (cheap clones of the request's parts) into a shared buffer and
//! goes on; the relay formats its line into a shared text buffer (its
//! parts live in a read buffer that is reused at once). Either way it is
//! a short critical section and no system call. A writer thread swaps the
//! buffers out, formats the records and writes everything in one call,
//! every 100 ms or as soon as a quarter of the buffer (at most 256 KiB of
//! text or 1024 records) is waiting; fewer wake-ups leave more of the
//! CPU to the request path. The buffer is
//! bounded: when the disk cannot keep up and the buffer is full, the line
//! is dropped and counted in `strata_gateway_access_log_dropped_total`
//! (serving images matters more than logging them). SIGHUP reopens the
//! file, so log rotation works by renaming the file and sending SIGHUP.
//!
//! An earlier design sent each record through a channel to the writer:
//! one wake-up of the writer per request cost a fifth of the gateway's
//! TLS + HTTP/2 throughput on two cores; batching by the buffer costs a
//! few percent (docs/BENCHMARKS.md, `edge`).

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Error;

/// Line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// NCSA combined log format, then `pool="…" upstream="…" rt=… urt=…
    /// rid="…"` (request and upstream times in seconds).
    Combined,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "combined" => Ok(LogFormat::Combined),
            "json" => Ok(LogFormat::Json),
            _ => Err(Error::Config(format!(
                "access log format `{s}`: combined or json"
            ))),
        }
    }
}

/// What became of one request, for the access log.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) upstream: Option<std::net::SocketAddr>,
    pub(crate) upstream_time: Option<std::time::Duration>,
}

/// What is known of one request when it ends (borrowed from wherever the
/// request's parts live).
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// When the request arrived.
    pub time: SystemTime,
    /// The client's address, as text (formatted once per connection).
    pub remote: &'a str,
    /// Method.
    pub method: &'a str,
    /// Request target (path and query).
    pub target: &'a str,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'static str,
    /// Response status.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// `Referer`.
    pub referer: Option<&'a str>,
    /// `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// Pool the route chose (empty for the gateway's own pages).
    pub pool: &'a str,
    /// The backend that answered, if any did.
    pub upstream: Option<SocketAddr>,
    /// Arrival to the last body byte.
    pub request_time: Duration,
    /// Request sent upstream to the response head back.
    pub upstream_time: Option<Duration>,
    /// `X-Request-Id`, when the route gives one.
    pub request_id: Option<&'a str>,
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl Sink {
    /// `-` means stdout; anything else is a file path.
    pub fn parse(s: &str) -> Sink {
        if s == "-" {
            Sink::Stdout
        } else {
            Sink::File(PathBuf::from(s))
        }
    }

    fn open(&self) -> std::io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Sink::Stdout => Box::new(std::io::stdout()),
            Sink::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        })
    }
}

/// Counters of the log.
#[derive(Debug, Default)]
pub struct LogMetrics {
    /// Lines taken into the buffer (written, or being written).
    pub lines: AtomicU64,
    /// Lines dropped because the buffer was full.
    pub dropped: AtomicU64,
    /// Write or open errors.
    pub errors: AtomicU64,
}

/// Waiting bytes that wake the writer before its timer does.
const WAKE_AT: usize = 256 << 10;
/// Waiting records that wake the writer before its timer does.
const WAKE_RECORDS: usize = 1024;
/// Bytes a record counts for against the buffer's capacity (a typical
/// line).
const RECORD_BYTES: usize = 256;
/// The writer's timer: the longest a line waits when traffic is light.
const INTERVAL: Duration = Duration::from_millis(100);

/// The formatted second, reused by every line in it, and backend
/// addresses as text.
#[derive(Default)]
struct TimeCache {
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

struct Pending {
    buf: String,
    /// Records the writer formats (the full path's).
    records: Vec<Record>,
    times: TimeCache,
    /// The writer was woken for this buffer already.
    woken: bool,
}

struct Output {
    sink: Sink,
    out: Box<dyn Write + Send>,
    /// The buffer last written, kept for its capacity.
    spare: String,
    /// The records last formatted, kept for their capacity.
    spare_records: Vec<Record>,
    times: TimeCache,
}

/// A request's log record with everything owned (cheap clones of the
/// request's parts), for lines formatted by the writer thread.
#[derive(Debug, Clone)]
pub struct Record {
    /// When the request arrived.
    pub time: SystemTime,
    /// The client's address as text.
    pub remote: Arc<str>,
    /// Method.
    pub method: hyper::Method,
    /// Request target.
    pub target: Option<hyper::http::uri::PathAndQuery>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'static str,
    /// Response status.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// `Referer`.
    pub referer: Option<hyper::header::HeaderValue>,
    /// `User-Agent`.
    pub user_agent: Option<hyper::header::HeaderValue>,
    /// Pool the route chose.
    pub pool: Arc<str>,
    /// The backend that answered.
    pub upstream: Option<SocketAddr>,
    /// Arrival to the last body byte.
    pub request_time: Duration,
    /// Request sent upstream to the response head back.
    pub upstream_time: Option<Duration>,
    /// `X-Request-Id`.
    pub request_id: Option<hyper::header::HeaderValue>,
}

impl Record {
    fn format(&self, format: LogFormat, times: &mut TimeCache, out: &mut String) {
        fn text(v: &Option<hyper::header::HeaderValue>) -> Option<std::borrow::Cow<'_, str>> {
            v.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()))
        }
        let (referer, user_agent, rid) = (
            text(&self.referer),
            text(&self.user_agent),
            text(&self.request_id),
        );
        let e = Entry {
            time: self.time,
            remote: &self.remote,
            method: self.method.as_str(),
            target: self.target.as_ref().map_or("/", |t| t.as_str()),
            protocol: self.protocol,
            status: self.status,
            bytes: self.bytes,
            referer: referer.as_deref(),
            user_agent: user_agent.as_deref(),
            pool: &self.pool,
            upstream: self.upstream,
            request_time: self.request_time,
            upstream_time: self.upstream_time,
            request_id: rid.as_deref(),
        };
        format_cached(&e, format, times, out);
        out.push('\n');
    }
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    output: Mutex<Output>,
    capacity: usize,
    format: LogFormat,
    metrics: LogMetrics,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Writes out whatever is waiting. The output lock is taken first, so
    /// batches reach the file in the order they were taken.
    fn write_out(&self) {
        let mut o = lock(&self.output);
        {
            let mut p = lock(&self.pending);
            p.woken = false;
            let o = &mut *o;
            std::mem::swap(&mut p.buf, &mut o.spare);
            std::mem::swap(&mut p.records, &mut o.spare_records);
        }
        let o = &mut *o;
        for r in o.spare_records.drain(..) {
            r.format(self.format, &mut o.times, &mut o.spare);
        }
        if o.spare.is_empty() {
            return;
        }
        if o.out
            .write_all(o.spare.as_bytes())
            .and_then(|_| o.out.flush())
            .is_err()
        {
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        }
        o.spare.clear();
    }
}

/// The access log; its writer thread ends (after a last write) when this
/// is dropped.
pub struct AccessLog {
    /// The wall clock and the monotonic clock read together at start:
    /// a request's wall time comes from the `Instant` it already took.
    epoch: (SystemTime, std::time::Instant),
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl AccessLog {
    /// Opens `sink` (an error now if the file cannot be opened) and starts
    /// the writer thread; at most `capacity` bytes of lines wait.
    pub fn open(sink: Sink, format: LogFormat, capacity: usize) -> Result<AccessLog, Error> {
        let out = sink
            .open()
            .map_err(|e| Error::Config(format!("access log {sink:?}: {e}")))?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                buf: String::with_capacity(capacity.min(WAKE_AT * 2)),
                records: Vec::with_capacity(WAKE_RECORDS * 2),
                times: TimeCache::default(),
                woken: false,
            }),
            wake: Condvar::new(),
            output: Mutex::new(Output {
                sink,
                out,
                spare: String::new(),
                spare_records: Vec::new(),
                times: TimeCache::default(),
            }),
            capacity: capacity.max(1),
            format,
            metrics: LogMetrics::default(),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || loop {
                {
                    let p = lock(&sh.pending);
                    let _unused = sh
                        .wake
                        .wait_timeout_while(p, INTERVAL, |p| {
                            !p.woken && !sh.stop.load(Ordering::Relaxed)
                        })
                        .unwrap_or_else(|p| p.into_inner());
                }
                sh.write_out();
                if sh.stop.load(Ordering::Relaxed) {
                    return;
                }
            })?;
        Ok(AccessLog {
            epoch: (SystemTime::now(), std::time::Instant::now()),
            shared,
            writer: Some(writer),
        })
    }

    /// The wall-clock time of `t` (for a long-lived process this follows
    /// the monotonic clock, not later adjustments of the wall clock).
    pub fn wall_time(&self, t: std::time::Instant) -> SystemTime {
        self.epoch.0 + t.saturating_duration_since(self.epoch.1)
    }

    /// The counters.
    pub fn metrics(&self) -> &LogMetrics {
        &self.shared.metrics
    }

    /// Formats `e` into the buffer; drops (and counts) it when the buffer
    /// is full.
    pub fn log(&self, e: &Entry<'_>) {
        let sh = &*self.shared;
        let mut p = lock(&sh.pending);
        let p = &mut *p;
        let start = p.buf.len();
        format_cached(e, sh.format, &mut p.times, &mut p.buf);
        p.buf.push('\n');
        if p.buf.len() + p.records.len() * RECORD_BYTES > sh.capacity {
            p.buf.truncate(start);
            sh.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        sh.metrics.lines.fetch_add(1, Ordering::Relaxed);
        if p.buf.len() >= WAKE_AT.min(sh.capacity / 4) && !p.woken {
            p.woken = true;
            sh.wake.notify_one();
        }
    }

    /// Queues `r` for the writer thread to format (the request's thread
    /// only moves it); drops (and counts) it when the buffer is full.
    pub fn log_record(&self, r: Record) {
        let sh = &*self.shared;
        let mut p = lock(&sh.pending);
        if (p.records.len() + 1) * RECORD_BYTES + p.buf.len() > sh.capacity {
            drop(p);
            sh.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        p.records.push(r);
        sh.metrics.lines.fetch_add(1, Ordering::Relaxed);
        let wake_at = WAKE_RECORDS.min(sh.capacity / RECORD_BYTES / 4);
        if p.records.len() >= wake_at && !p.woken {
            p.woken = true;
            sh.wake.notify_one();
        }
    }

    /// Reopens the file (after a rotation); what was waiting goes to the
    /// old file first.
    pub fn reopen(&self) {
        self.shared.write_out();
        let mut o = lock(&self.shared.output);
        match o.sink.open() {
            Ok(out) => o.out = out,
            Err(e) => {
                self.shared.metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "access log: reopen failed; writing to the old file");
            }
        }
    }

    /// Writes out every line logged before this call (tests; shutdown).
    pub fn flush(&self) {
        self.shared.write_out();
    }

    pub(crate) fn render_metrics(&self, out: &mut String) {
        let m = &self.shared.metrics;
        for (name, help, v) in [
            (
                "strata_gateway_access_log_lines_total",
                "Access log lines written.",
                &m.lines,
            ),
            (
                "strata_gateway_access_log_dropped_total",
                "Access log lines dropped with the buffer full.",
                &m.dropped,
            ),
            (
                "strata_gateway_access_log_errors_total",
                "Access log writes that failed.",
                &m.errors,
            ),
        ] {
            crate::metrics::family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Formats `e` as one line (without the newline).
pub fn format_entry(e: &Entry<'_>, format: LogFormat, out: &mut String) {
    format_cached(e, format, &mut TimeCache::default(), out)
}

/// `d` in seconds with `places` (3 or 6) decimals, by integer arithmetic
/// (float formatting showed in profiles).
fn seconds(d: Duration, places: u32, out: &mut String) {
    let unit = 10u64.pow(places);
    let n = (d.as_nanos() / u128::from(1_000_000_000 / unit)).min(u128::from(u64::MAX)) as u64;
    push_int(out, n / unit, 1);
    out.push('.');
    push_int(out, n % unit, places as usize);
}

/// `n` in decimal, zero-padded to `width` digits, without the formatting
/// machinery (it showed in profiles).
fn push_int(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n > 0 || digits.len() - i < width.max(1) {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("0"));
}

fn format_cached(e: &Entry<'_>, format: LogFormat, times: &mut TimeCache, out: &mut String) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: UNIX_EPOCH + Duration::from_millis(971_185_736_250),
            remote: "10.0.0.7",
            method: "GET",
            target: "/v1/blobs/a\"b",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 1024,
            referer: None,
            user_agent: Some("curl/8 \"x\""),
            pool: "reads",
            upstream: Some("127.0.0.1:9001".parse().expect("addr")),
            request_time: Duration::from_micros(1500),
            upstream_time: Some(Duration::from_micros(900)),
            request_id: Some("abc"),
        }
    }

    #[test]
    fn integers_and_seconds_are_written_by_hand_correctly() {
        let mut s = String::new();
        for (n, w, want) in [
            (0, 1, "0"),
            (7, 3, "007"),
            (1234, 3, "1234"),
            (u64::MAX, 1, "18446744073709551615"),
        ] {
            s.clear();
            push_int(&mut s, n, w);
            assert_eq!(s, want);
        }
        s.clear();
        seconds(Duration::from_micros(1_234_567), 6, &mut s);
        assert_eq!(s, "1.234567");
        s.clear();
        seconds(Duration::from_micros(5), 3, &mut s);
        assert_eq!(s, "0.000");
    }

    #[test]
    fn times_are_civil() {
        let t = UNIX_EPOCH + Duration::from_millis(971_185_736_250);
        assert_eq!(clf_time(t), "10/Oct/2000:13:48:56 +0000");
        assert_eq!(iso_time(t), "2000-10-10T13:48:56.250Z");
        assert_eq!(iso_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso_time(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn lines_quote_what_a_client_controls() {
        let mut s = String::new();
        format_entry(&entry(), LogFormat::Combined, &mut s);
        assert_eq!(
            s,
            "10.0.0.7 - - [10/Oct/2000:13:48:56 +0000] \"GET /v1/blobs/a\\x22b HTTP/1.1\" 200 1024 \"-\" \"curl/8 \\x22x\\x22\" pool=\"reads\" upstream=\"127.0.0.1:9001\" rt=0.001 urt=0.000 rid=\"abc\""
        );
        s.clear();
        format_entry(&entry(), LogFormat::Json, &mut s);
        assert!(s.starts_with("{\"time\":\"2000-10-10T13:48:56.250Z\",\"remote\":\"10.0.0.7\",\"method\":\"GET\",\"target\":\"/v1/blobs/a\\\"b\""), "{s}");
        assert!(
            s.contains("\"referer\":null,\"user_agent\":\"curl/8 \\\"x\\\"\""),
            "{s}"
        );
        assert!(
            s.ends_with(
                "\"request_time\":0.001500,\"upstream_time\":0.000900,\"request_id\":\"abc\"}"
            ),
            "{s}"
        );
    }

    #[test]
    fn a_full_buffer_drops_and_counts_instead_of_waiting() {
        let dir = std::env::temp_dir().join(format!("strata-al-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        // Room for a few lines only: the rest of a burst is dropped.
        let log = AccessLog::open(Sink::File(path.clone()), LogFormat::Json, 2000).expect("open");
        for _ in 0..10_000 {
            log.log(&entry());
        }
        log.flush();
        let lines = log.metrics().lines.load(Ordering::Relaxed);
        let dropped = log.metrics().dropped.load(Ordering::Relaxed);
        assert_eq!(lines + dropped, 10_000);
        assert!(dropped > 0);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count() as u64, lines);
        // Rotation: rename, reopen, and new lines go to a new file.
        std::fs::rename(&path, dir.join("access.log.1")).expect("rename");
        log.reopen();
        log.log(&entry());
        log.flush();
        assert_eq!(
            std::fs::read_to_string(&path).expect("new").lines().count(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

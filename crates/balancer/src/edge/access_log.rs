//! The access log: one line per request, in the combined log format or as
//! JSON lines, to a file or stdout.
//!
//! The request path never waits on the log. It hands a small record to a
//! bounded queue (`try_send`); a writer thread formats the lines, writes
//! them through a buffer and flushes whenever the queue runs dry. When the
//! queue is full (the disk cannot keep up) the record is dropped and
//! counted in `strata_gateway_access_log_dropped_total`: serving images
//! matters more than logging them. SIGHUP reopens the file, so log
//! rotation works by renaming the file and sending SIGHUP.

use std::fmt::Write as _;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
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

/// What is known of one request when it ends.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the request arrived.
    pub time: SystemTime,
    /// The client.
    pub remote: IpAddr,
    /// Method.
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: &'static str,
    /// Response status.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// `Referer`.
    pub referer: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// Pool the route chose (empty for the gateway's own pages).
    pub pool: String,
    /// The backend that answered, if any did.
    pub upstream: Option<SocketAddr>,
    /// Arrival to the last body byte.
    pub request_time: Duration,
    /// Request sent upstream to the response head back.
    pub upstream_time: Option<Duration>,
    /// `X-Request-Id`, when the route gives one.
    pub request_id: Option<String>,
}

enum Msg {
    Line(Box<Entry>),
    Reopen,
    Flush(std::sync::mpsc::Sender<()>),
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
    /// Lines written.
    pub lines: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Write or open errors.
    pub errors: AtomicU64,
}

/// The access log's queue; the writer thread ends when this is dropped.
pub struct AccessLog {
    tx: SyncSender<Msg>,
    /// Counters.
    pub metrics: Arc<LogMetrics>,
}

impl AccessLog {
    /// Opens `sink` (an error now if the file cannot be opened) and starts
    /// the writer thread; at most `capacity` records wait.
    pub fn open(sink: Sink, format: LogFormat, capacity: usize) -> Result<AccessLog, Error> {
        let out = sink
            .open()
            .map_err(|e| Error::Config(format!("access log {sink:?}: {e}")))?;
        let (tx, rx) = sync_channel(capacity.max(1));
        let metrics = Arc::new(LogMetrics::default());
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, sink, out, format, &m))?;
        Ok(AccessLog { tx, metrics })
    }

    /// Queues a record; drops (and counts) it when the queue is full.
    pub fn log(&self, e: Entry) {
        match self.tx.try_send(Msg::Line(Box::new(e))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reopens the file (after a rotation).
    pub fn reopen(&self) {
        let _ = self.tx.send(Msg::Reopen);
    }

    /// Waits until every record queued before this call is written and
    /// flushed (tests; shutdown).
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    pub(crate) fn render_metrics(&self, out: &mut String) {
        let m = &self.metrics;
        for (name, v) in [
            ("strata_gateway_access_log_lines_total", &m.lines),
            ("strata_gateway_access_log_dropped_total", &m.dropped),
            ("strata_gateway_access_log_errors_total", &m.errors),
        ] {
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }
}

fn writer(
    rx: Receiver<Msg>,
    sink: Sink,
    out: Box<dyn Write + Send>,
    format: LogFormat,
    m: &LogMetrics,
) {
    let mut out = std::io::BufWriter::with_capacity(64 << 10, out);
    let mut line = String::with_capacity(512);
    let mut msg = rx.recv().ok();
    while let Some(mx) = msg.take() {
        match mx {
            Msg::Line(e) => {
                line.clear();
                format_entry(&e, format, &mut line);
                line.push('\n');
                if out.write_all(line.as_bytes()).is_ok() {
                    m.lines.fetch_add(1, Ordering::Relaxed);
                } else {
                    m.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Msg::Reopen => {
                let _ = out.flush();
                match sink.open() {
                    Ok(o) => out = std::io::BufWriter::with_capacity(64 << 10, o),
                    Err(e) => {
                        m.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "access log: reopen failed; writing to the old file");
                    }
                }
            }
            Msg::Flush(done) => {
                if out.flush().is_err() {
                    m.errors.fetch_add(1, Ordering::Relaxed);
                }
                let _ = done.send(());
            }
        }
        // Flush when nothing more is waiting: lines appear promptly when
        // traffic is light, and in 64 KiB writes when it is heavy.
        msg = match rx.try_recv() {
            Ok(next) => Some(next),
            Err(_) => {
                if out.flush().is_err() {
                    m.errors.fetch_add(1, Ordering::Relaxed);
                }
                rx.recv().ok()
            }
        };
    }
    let _ = out.flush();
}

/// Formats `e` as one line (without the newline).
pub fn format_entry(e: &Entry, format: LogFormat, out: &mut String) {
    let secs = |d: Duration| format!("{:.3}", d.as_secs_f64());
    match format {
        LogFormat::Combined => {
            let q = |s: &str, out: &mut String| {
                out.push('"');
                escape_combined(s, out);
                out.push('"');
            };
            let _ = write!(out, "{} - - [{}] ", e.remote, clf_time(e.time));
            let mut request = String::with_capacity(e.target.len() + 20);
            let _ = write!(request, "{} {} {}", e.method, e.target, e.protocol);
            q(&request, out);
            let _ = write!(out, " {} {} ", e.status, e.bytes);
            q(e.referer.as_deref().unwrap_or("-"), out);
            out.push(' ');
            q(e.user_agent.as_deref().unwrap_or("-"), out);
            out.push_str(" pool=");
            q(if e.pool.is_empty() { "-" } else { &e.pool }, out);
            out.push_str(" upstream=");
            q(&e.upstream.map_or("-".into(), |a| a.to_string()), out);
            let _ = write!(
                out,
                " rt={} urt={} rid=",
                secs(e.request_time),
                e.upstream_time.map_or("-".into(), secs)
            );
            q(e.request_id.as_deref().unwrap_or("-"), out);
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
            let _ = write!(
                out,
                "{{\"time\":\"{}\",\"remote\":\"{}\",\"method\":",
                iso_time(e.time),
                e.remote
            );
            s(&e.method, out);
            out.push_str(",\"target\":");
            s(&e.target, out);
            let _ = write!(
                out,
                ",\"protocol\":\"{}\",\"status\":{},\"bytes\":{},\"referer\":",
                e.protocol, e.status, e.bytes
            );
            opt(e.referer.as_deref(), out);
            out.push_str(",\"user_agent\":");
            opt(e.user_agent.as_deref(), out);
            out.push_str(",\"pool\":");
            s(&e.pool, out);
            out.push_str(",\"upstream\":");
            opt(e.upstream.map(|a| a.to_string()).as_deref(), out);
            let _ = write!(
                out,
                ",\"request_time\":{:.6},\"upstream_time\":{},\"request_id\":",
                e.request_time.as_secs_f64(),
                e.upstream_time
                    .map_or("null".into(), |d| format!("{:.6}", d.as_secs_f64()))
            );
            opt(e.request_id.as_deref(), out);
            out.push('}');
        }
    }
}

/// nginx's escaping for quoted log fields: `"`, `\` and bytes outside
/// printable ASCII as `\xHH`, so a client cannot forge a line or a field.
fn escape_combined(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

fn escape_json(s: &str, out: &mut String) {
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
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a proleptic Gregorian date, by 400-year eras (Howard
    // Hinnant's civil-from-days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        d.subsec_millis(),
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

/// A response body that logs its request's entry when it ends (or is
/// dropped unfinished), with the bytes it carried.
pub(crate) struct Logged {
    inner: crate::proxy::UpBody,
    entry: Option<Box<Entry>>,
    start: std::time::Instant,
    log: Arc<AccessLog>,
}

impl Logged {
    pub(crate) fn wrap(
        inner: crate::proxy::UpBody,
        entry: Entry,
        start: std::time::Instant,
        log: Arc<AccessLog>,
    ) -> crate::proxy::UpBody {
        use http_body_util::BodyExt;
        Logged {
            inner,
            entry: Some(Box::new(entry)),
            start,
            log,
        }
        .boxed()
    }
}

impl hyper::body::Body for Logged {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(f))) = &r {
            if let (Some(d), Some(e)) = (f.data_ref(), self.entry.as_mut()) {
                e.bytes += d.len() as u64;
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(mut e) = self.entry.take() {
            e.request_time = self.start.elapsed();
            match self.log.tx.try_send(Msg::Line(e)) {
                Ok(()) => {}
                Err(_) => {
                    self.log.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: UNIX_EPOCH + Duration::from_millis(971_185_736_250),
            remote: "10.0.0.7".parse().expect("ip"),
            method: "GET".into(),
            target: "/v1/blobs/a\"b".into(),
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 1024,
            referer: None,
            user_agent: Some("curl/8 \"x\"".into()),
            pool: "reads".into(),
            upstream: Some("127.0.0.1:9001".parse().expect("addr")),
            request_time: Duration::from_micros(1500),
            upstream_time: Some(Duration::from_micros(900)),
            request_id: Some("abc".into()),
        }
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
            "10.0.0.7 - - [10/Oct/2000:13:48:56 +0000] \"GET /v1/blobs/a\\x22b HTTP/1.1\" 200 1024 \"-\" \"curl/8 \\x22x\\x22\" pool=\"reads\" upstream=\"127.0.0.1:9001\" rt=0.002 urt=0.001 rid=\"abc\""
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
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dir = std::env::temp_dir().join(format!("strata-al-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::open(Sink::File(path.clone()), LogFormat::Json, 4).expect("open");
        for _ in 0..10_000 {
            log.log(entry());
        }
        log.flush();
        let lines = log.metrics.lines.load(Ordering::Relaxed);
        let dropped = log.metrics.dropped.load(Ordering::Relaxed);
        assert_eq!(lines + dropped, 10_000);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count() as u64, lines);
        // Rotation: rename, reopen, and new lines go to a new file.
        std::fs::rename(&path, dir.join("access.log.1")).expect("rename");
        log.reopen();
        log.log(entry());
        log.flush();
        assert_eq!(
            std::fs::read_to_string(&path).expect("new").lines().count(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

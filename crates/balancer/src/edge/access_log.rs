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

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

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

    pub(crate) fn families(&self) -> Vec<prom::Family> {
        let m = &self.shared.metrics;
        [
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
        ]
        .into_iter()
        .map(|(name, help, v)| {
            prom::Family::counter(name, help).with(v.load(Ordering::Relaxed) as f64)
        })
        .collect()
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

mod format;
#[cfg(test)]
mod tests;

pub use format::{clf_time, format_entry, iso_time};
use format::{format_cached, TimeCache};

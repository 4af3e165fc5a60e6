//! The beanstalkd protocol (doc/protocol.txt of beanstalkd), so existing
//! beanstalkd clients and workers use the broker unchanged: put, use,
//! reserve, reserve-with-timeout, delete, release, bury, touch, watch,
//! ignore, peek, peek-ready, peek-delayed, peek-buried, kick, kick-job,
//! stats-job, stats-tube, stats, list-tubes, list-tube-used,
//! list-tubes-watched, quit — with beanstalkd's replies and errors.
//!
//! Differences, by design: every put is acknowledged only once fsynced
//! (beanstalkd's binlog syncs every 50 ms by default), and a delete is
//! synced before the connection's next put is acknowledged (or before it
//! answers, with `sync_deletes`); beanstalkd jobs have
//! unlimited attempts, like in beanstalkd.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::job::{Job, NewJob, State};
use crate::{Error, Queue};

/// Longest command line, as in beanstalkd (224 bytes with the CRLF).
const MAX_LINE: usize = 224;

/// Protocol settings.
#[derive(Debug, Clone)]
pub struct BeanstalkOptions {
    /// Largest job body (beanstalkd's `-z`, default 65535).
    pub max_job_size: usize,
}

impl Default for BeanstalkOptions {
    fn default() -> Self {
        BeanstalkOptions {
            max_job_size: 65_535,
        }
    }
}

/// Connection ids (0 is reserved for HTTP workers).
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// This process's connection-id base: with the PostgreSQL backend several
/// fronts share the jobs, so a reservation's holder must name a connection
/// of one process only. The high 31 bits come from the start time and the
/// pid; the low 32 count connections.
fn conn_base() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mixed = xorshift(nanos ^ (u64::from(std::process::id()) << 20));
        (mixed & 0x7FFF_FFFF) << 32
    })
}

fn xorshift(mut x: u64) -> u64 {
    x = x.max(1);
    for _ in 0..4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// Serves the protocol on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<dyn Queue>,
    opts: BeanstalkOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let started = broker.now_ms();
    let conns = Arc::new(AtomicU64::new(0));
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            acc = listener.accept() => {
                let Ok((s, _)) = acc else { continue };
                let _ = s.set_nodelay(true);
                let (broker, opts, conns) = (broker.clone(), opts.clone(), conns.clone());
                tokio::spawn(async move {
                    let id = conn_base() + NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                    conns.fetch_add(1, Ordering::Relaxed);
                    let mut c = Conn {
                        id,
                        broker: broker.clone(),
                        opts,
                        using: "default".into(),
                        watching: vec!["default".into()],
                        started,
                        conns: conns.clone(),
                    };
                    let _ = c.run(s).await;
                    // Whatever it still held goes back to ready.
                    let _ = broker.release_holder(id).await;
                    conns.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }
}

struct Conn {
    id: u64,
    broker: Arc<dyn Queue>,
    opts: BeanstalkOptions,
    using: String,
    watching: Vec<String>,
    started: u64,
    conns: Arc<AtomicU64>,
}

/// What a command asks the loop to do after replying.
enum Next {
    Reply(Vec<u8>),
    Close,
}

fn line(s: &str) -> Next {
    Next::Reply(format!("{s}\r\n").into_bytes())
}

fn with_body(head: String, body: &[u8]) -> Next {
    let mut out = head.into_bytes();
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
    Next::Reply(out)
}

fn yaml(body: String) -> Next {
    with_body(format!("OK {}", body.len()), body.as_bytes())
}

fn not_found_or(e: Error) -> Next {
    match e {
        Error::NotFound(_) | Error::NotReserved(_) => line("NOT_FOUND"),
        Error::Invalid(_) => line("BAD_FORMAT"),
        Error::TooBig { .. } => line("JOB_TOO_BIG"),
        _ => line("INTERNAL_ERROR"),
    }
}

impl Conn {
    async fn run(&mut self, s: TcpStream) -> std::io::Result<()> {
        let (r, mut w) = s.into_split();
        let mut r = BufReader::with_capacity(64 << 10, r);
        let mut buf = Vec::with_capacity(MAX_LINE);
        loop {
            buf.clear();
            let n = (&mut r)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf)
                .await?;
            if n == 0 {
                return Ok(());
            }
            if !buf.ends_with(b"\r\n") {
                // Too long, or not CRLF-terminated: the stream cannot be
                // resynchronised, so answer and close (as beanstalkd does).
                w.write_all(b"BAD_FORMAT\r\n").await?;
                return Ok(());
            }
            let text = String::from_utf8_lossy(&buf[..buf.len() - 2]).into_owned();
            match self.command(&text, &mut r).await? {
                Next::Reply(out) => w.write_all(&out).await?,
                Next::Close => return Ok(()),
            }
        }
    }

    async fn command<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        text: &str,
        r: &mut BufReader<R>,
    ) -> std::io::Result<Next> {
        use crate::beanstalk_cmd::Command as C;
        let cmd = match crate::beanstalk_cmd::parse(text) {
            Ok(c) => c,
            Err(why) => return Ok(line(why.reply())),
        };
        let b = &self.broker;
        Ok(match cmd {
            C::Put {
                pri,
                delay,
                ttr,
                bytes,
            } => {
                if bytes > self.opts.max_job_size as u64 {
                    // Skip the body so the next command lines up.
                    let mut skip = r.take(bytes.saturating_add(2));
                    tokio::io::copy(&mut skip, &mut tokio::io::sink()).await?;
                    return Ok(line("JOB_TOO_BIG"));
                }
                let bytes = bytes as usize;
                let mut body = vec![0u8; bytes + 2];
                r.read_exact(&mut body).await?;
                if &body[bytes..] != b"\r\n" {
                    return Ok(line("EXPECTED_CRLF"));
                }
                body.truncate(bytes);
                let job = NewJob {
                    queue: self.using.clone(),
                    payload: Bytes::from(body),
                    priority: pri,
                    delay_ms: delay.saturating_mul(1000),
                    ttr_ms: ttr.max(1).saturating_mul(1000),
                    max_attempts: 0,
                    idempotency_key: None,
                };
                match b.put(job).await {
                    Ok((id, _)) => line(&format!("INSERTED {id}")),
                    Err(e) => not_found_or(e),
                }
            }
            C::Use(tube) => {
                self.using = tube.to_owned();
                line(&format!("USING {tube}"))
            }
            C::Reserve => self.reserve(None, r).await?,
            C::ReserveWithTimeout(t) => self.reserve(Some(Duration::from_secs(t)), r).await?,
            C::Delete(id) => match b.delete(id, self.id, None).await {
                Ok(()) => line("DELETED"),
                Err(e) => not_found_or(e),
            },
            C::Release { id, pri, delay } => {
                match b.release(id, self.id, None, pri, delay.saturating_mul(1000)).await {
                    Ok(()) => line("RELEASED"),
                    Err(e) => not_found_or(e),
                }
            }
            C::Bury { id, pri } => match b.bury(id, self.id, None, pri).await {
                Ok(()) => line("BURIED"),
                Err(e) => not_found_or(e),
            },
            C::Touch(id) => match b.touch(id, self.id, None).await {
                Ok(()) => line("TOUCHED"),
                Err(e) => not_found_or(e),
            },
            C::Watch(tube) => {
                if !self.watching.iter().any(|t| t == tube) {
                    self.watching.push(tube.to_owned());
                }
                line(&format!("WATCHING {}", self.watching.len()))
            }
            C::Ignore(tube) => {
                if self.watching.len() == 1 && self.watching[0] == tube {
                    line("NOT_IGNORED")
                } else {
                    self.watching.retain(|t| t != tube);
                    line(&format!("WATCHING {}", self.watching.len()))
                }
            }
            C::Peek(id) => found(b.get(id).await),
            C::PeekReady => found(b.peek(&self.using, State::Ready).await),
            C::PeekDelayed => found(b.peek(&self.using, State::Delayed).await),
            C::PeekBuried => found(b.peek(&self.using, State::Dead).await),
            C::Kick(bound) => match b.kick(&self.using, bound as usize).await {
                Ok(n) => line(&format!("KICKED {n}")),
                Err(e) => not_found_or(e),
            },
            C::KickJob(id) => match b.kick_job(id).await {
                Ok(()) => line("KICKED"),
                Err(e) => not_found_or(e),
            },
            C::StatsJob(id) => match b.get(id).await {
                Ok(Some(j)) if j.state != State::Succeeded => yaml(self.job_yaml(&j)),
                Ok(_) => line("NOT_FOUND"),
                Err(e) => not_found_or(e),
            },
            C::StatsTube(tube) => match b.queue_stats(tube).await {
                Ok(Some(s)) => yaml(format!(
                    "---\nname: {}\ncurrent-jobs-urgent: {}\ncurrent-jobs-ready: {}\ncurrent-jobs-reserved: {}\n\
                     current-jobs-delayed: {}\ncurrent-jobs-buried: {}\ntotal-jobs: {}\ncurrent-waiting: {}\n\
                     pause: 0\npause-time-left: 0\n",
                    s.name, s.urgent, s.ready, s.reserved, s.delayed, s.dead, s.total, s.waiting
                )),
                Ok(None) => line("NOT_FOUND"),
                Err(e) => not_found_or(e),
            },
            C::Stats => match self.stats_yaml().await {
                Ok(y) => yaml(y),
                Err(e) => not_found_or(e),
            },
            C::ListTubes => {
                let mut y = String::from("---\n");
                let mut tubes = match b.queues().await {
                    Ok(t) => t,
                    Err(e) => return Ok(not_found_or(e)),
                };
                // "default" always exists, as in beanstalkd.
                let default = "default".to_owned();
                for t in self.watching.iter().chain([&self.using, &default]) {
                    if !tubes.contains(t) {
                        tubes.push(t.clone());
                    }
                }
                tubes.sort();
                for t in tubes {
                    y.push_str(&format!("- {t}\n"));
                }
                yaml(y)
            }
            C::ListTubeUsed => line(&format!("USING {}", self.using)),
            C::ListTubesWatched => {
                let mut y = String::from("---\n");
                for t in &self.watching {
                    y.push_str(&format!("- {t}\n"));
                }
                yaml(y)
            }
            C::Quit => Next::Close,
        })
    }

    /// `reserve`: waits for a job, but gives up (releasing nothing) when the
    /// client hangs up meanwhile.
    async fn reserve<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        timeout: Option<Duration>,
        r: &mut BufReader<R>,
    ) -> std::io::Result<Next> {
        let got = {
            let wait = self.broker.reserve(&self.watching, timeout, self.id);
            tokio::pin!(wait);
            let mut watch_eof = true;
            loop {
                tokio::select! {
                    got = &mut wait => break got,
                    n = r.fill_buf(), if watch_eof => match n {
                        Ok([]) | Err(_) => return Ok(Next::Close),
                        // The next command is already here: it waits its
                        // turn; stop watching so this does not spin.
                        Ok(_) => watch_eof = false,
                    },
                }
            }
        };
        Ok(match got {
            Ok(Some(j)) => with_body(format!("RESERVED {} {}", j.id, j.payload.len()), &j.payload),
            Ok(None) => line("TIMED_OUT"),
            Err(e) => not_found_or(e),
        })
    }

    fn job_yaml(&self, j: &Job) -> String {
        let now = self.broker.now_ms();
        let left = match j.state {
            State::Reserved | State::Delayed | State::Retrying => {
                j.at_ms.saturating_sub(now) / 1000
            }
            _ => 0,
        };
        format!(
            "---\nid: {}\ntube: {}\nstate: {}\npri: {}\nage: {}\ndelay: {}\nttr: {}\ntime-left: {}\nfile: 0\n\
             reserves: {}\ntimeouts: {}\nreleases: {}\nburies: {}\nkicks: {}\n",
            j.id,
            j.queue,
            j.state.beanstalk(),
            j.priority,
            now.saturating_sub(j.created_ms) / 1000,
            if matches!(j.state, State::Delayed | State::Retrying) { left } else { 0 },
            j.ttr_ms / 1000,
            left,
            j.attempts,
            j.timeouts,
            j.releases,
            j.buries,
            j.kicks
        )
    }

    async fn stats_yaml(&self) -> crate::Result<String> {
        let b = &self.broker;
        let mut t = crate::QueueStats::default();
        let queues = b.queues().await?;
        for q in &queues {
            if let Some(s) = b.queue_stats(q).await? {
                t.urgent += s.urgent;
                t.ready += s.ready;
                t.reserved += s.reserved;
                t.delayed += s.delayed;
                t.dead += s.dead;
                t.total += s.total;
                t.waiting += s.waiting;
            }
        }
        Ok(format!(
            "---\ncurrent-jobs-urgent: {}\ncurrent-jobs-ready: {}\ncurrent-jobs-reserved: {}\n\
             current-jobs-delayed: {}\ncurrent-jobs-buried: {}\ntotal-jobs: {}\ncurrent-tubes: {}\n\
             current-connections: {}\ncurrent-waiting: {}\nmax-job-size: {}\npid: {}\nversion: \"strata {}\"\n\
             uptime: {}\n",
            t.urgent,
            t.ready,
            t.reserved,
            t.delayed,
            t.dead,
            t.total,
            queues.len(),
            self.conns.load(Ordering::Relaxed),
            t.waiting,
            self.opts.max_job_size,
            std::process::id(),
            env!("CARGO_PKG_VERSION"),
            b.now_ms().saturating_sub(self.started) / 1000
        ))
    }
}

fn found(j: crate::Result<Option<Job>>) -> Next {
    match j {
        Err(e) => not_found_or(e),
        Ok(Some(j)) if j.state != State::Succeeded => {
            with_body(format!("FOUND {} {}", j.id, j.payload.len()), &j.payload)
        }
        Ok(_) => line("NOT_FOUND"),
    }
}

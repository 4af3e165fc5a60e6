//! Writes a direct read's answer on the client connection: the backend in
//! this process is picked and counted as for any request, its
//! [`Reply`] goes out as one vectored write of head and body, or as the
//! head followed by `sendfile(2)` of a file range, or streamed.

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::direct::{Direct, FileBody, Read, Reply, StreamedBody};
use crate::edge::access_log::Outcome;
use crate::gateway::Gateway;
use crate::metrics::Count;

/// A request as the relay parsed it.
pub(crate) struct Asked<'a> {
    pub(crate) read: Read<'a>,
    pub(crate) keep_alive: bool,
    /// The backend a verified sticky cookie names.
    pub(crate) sticky_id: Option<u64>,
}

/// Serves `asked` from a backend of `gw` in this process. `None`: declined
/// (nothing written or counted); `Some(keep)`: answered, `keep` when the
/// connection may carry another request.
pub(crate) async fn serve(
    gw: &Arc<Gateway>,
    asked: Asked<'_>,
    peer: std::net::SocketAddr,
    down: &mut TcpStream,
    served: &mut Outcome,
) -> Option<bool> {
    if !gw.local_reads()?.takes(&asked.read) {
        return None;
    }
    let pool = gw.pool();
    let sticky_id = asked.sticky_id;
    let now = Instant::now();
    let picked = gw
        .pinned(&pool, sticky_id)
        .or_else(|| pool.pick(asked.read.target.as_bytes(), &[], now));
    let m = &gw.metrics;
    let Some(i) = picked else {
        m.requests.fetch_add(1, Ordering::Relaxed);
        m.gateway_errors.fetch_add(1, Ordering::Relaxed);
        let mut r = plain(503, "no backend available\n", false);
        return Some(write_reply(down, &mut r, None, asked.keep_alive, served).await);
    };
    let b = &pool.backends[i];
    let reads = gw.local_backend(b.addr)?.reads?;
    let answer = match reads.read(&asked.read) {
        Direct::Declined => return None,
        a => a,
    };
    m.requests.fetch_add(1, Ordering::Relaxed);
    if !gw.admit(peer.ip(), now) {
        m.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut r = plain(429, "rate limit exceeded\n", true);
        return Some(write_reply(down, &mut r, None, asked.keep_alive, served).await);
    }
    let _active = Count::new(&m.active);
    let Ok(permit) = gw.admit_backend(b).await else {
        m.queue_refused.fetch_add(1, Ordering::Relaxed);
        let mut r = plain(503, "backend busy\n", true);
        return Some(write_reply(down, &mut r, None, asked.keep_alive, served).await);
    };
    b.in_flight.fetch_add(1, Ordering::Relaxed);
    b.requests.fetch_add(1, Ordering::Relaxed);
    let sent = Instant::now();
    let reply = match answer {
        Direct::Now(r) => Some(r),
        Direct::Later(f) => tokio::time::timeout(gw.options().first_byte_timeout, f)
            .await
            .ok(),
        Direct::Declined => None,
    };
    b.in_flight.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
    let now = Instant::now();
    let Some(mut reply) = reply else {
        pool.record(i, false, now);
        m.gateway_errors.fetch_add(1, Ordering::Relaxed);
        let mut r = plain(504, "backend timed out\n", false);
        return Some(write_reply(down, &mut r, None, asked.keep_alive, served).await);
    };
    pool.record(i, reply.status < 500, now);
    pool.record_latency(i, now.duration_since(sent), now);
    served.upstream = Some(b.addr);
    served.upstream_time = Some(now.duration_since(sent));
    let cookie = gw.sticky_answer(b, sticky_id);
    let cookie = cookie.as_ref().and_then(|c| c.to_str().ok());
    Some(write_reply(down, &mut reply, cookie, asked.keep_alive, served).await)
}

/// A response made by the gateway itself.
fn plain(status: u16, body: &'static str, retry_after: bool) -> Reply {
    let lines: &'static [u8] = if retry_after {
        b"content-type: text/plain\r\nretry-after: 1\r\n"
    } else {
        b"content-type: text/plain\r\n"
    };
    Reply {
        status,
        lines: Bytes::from_static(lines),
        more: None,
        length: Some(body.len() as u64),
        body: Bytes::from_static(body.as_bytes()),
        file: None,
        stream: None,
    }
}

/// Writes `r` with the gateway's own lines; false when the connection must
/// close (a write failed, or the client asked).
async fn write_reply(
    down: &mut TcpStream,
    r: &mut Reply,
    cookie: Option<&str>,
    keep_alive: bool,
    served: &mut Outcome,
) -> bool {
    let mut head = Vec::with_capacity(64 + r.lines.len());
    head.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(&mut head, u64::from(r.status));
    head.push(b' ');
    head.extend_from_slice(reason(r.status).as_bytes());
    head.extend_from_slice(b"\r\n");
    push_date(&mut head);
    head.extend_from_slice(&r.lines);
    if let Some(more) = &r.more {
        head.extend_from_slice(more.as_bytes());
    }
    if let Some(n) = r.length {
        head.extend_from_slice(b"content-length: ");
        push_decimal(&mut head, n);
        head.extend_from_slice(b"\r\n");
    }
    if let Some(c) = cookie {
        head.extend_from_slice(b"set-cookie: ");
        head.extend_from_slice(c.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    served.status = r.status;
    if let Some(StreamedBody(body)) = &mut r.stream {
        served.bytes = 0;
        let mut sent = down.write_all(&head).await.is_ok();
        let mut left = r.length.unwrap_or(u64::MAX);
        while sent {
            let Some(frame) = http_body_util::BodyExt::frame(body).await else {
                break;
            };
            let Ok(Some(data)) = frame.map(|f| f.into_data().ok()) else {
                sent = false;
                break;
            };
            left = left.saturating_sub(data.len() as u64);
            served.bytes += data.len() as u64;
            sent = down.write_all(&data).await.is_ok();
        }
        // Short or failed: the client must not take the body as whole.
        return sent && left == 0 && keep_alive;
    }
    let sent = match &r.file {
        Some(f) => {
            served.bytes = f.len;
            match send_more(down, &head).await {
                Ok(()) => send_file(down, f).await,
                Err(e) => Err(e),
            }
        }
        None => {
            served.bytes = r.body.len() as u64;
            write_two(down, &head, &r.body).await
        }
    };
    sent.is_ok() && keep_alive
}

/// Sends `head` with `MSG_MORE`: the kernel holds it for the body that
/// follows, so head and body leave in full segments (a head sent alone on
/// a `TCP_NODELAY` socket would be a packet of its own, and an ACK).
async fn send_more(down: &mut TcpStream, head: &[u8]) -> std::io::Result<()> {
    let down: &TcpStream = down;
    let mut at = 0;
    while at < head.len() {
        let r = down.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::net::send(down.as_fd(), &head[at..], rustix::net::SendFlags::MORE)
                .map_err(std::io::Error::from)
        });
        match r {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => down.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends `f` with `sendfile(2)` as the socket takes it.
async fn send_file(down: &mut TcpStream, f: &FileBody) -> std::io::Result<()> {
    let down: &TcpStream = down;
    let (mut offset, end) = (f.offset, f.offset + f.len);
    while offset < end {
        let left = usize::try_from(end - offset).unwrap_or(usize::MAX);
        let r = down.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::fs::sendfile(down.as_fd(), f.file.as_fd(), Some(&mut offset), left)
                .map_err(std::io::Error::from)
        });
        match r {
            // The file ended early (truncated under us): the response
            // cannot be completed; the connection must close.
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => down.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `a` then `b`, as few writes as the socket takes.
async fn write_two(down: &mut TcpStream, a: &[u8], b: &[u8]) -> std::io::Result<()> {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() {
        let n = down
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    down.write_all(b).await
}

/// Appends the `date` line (RFC 9110 6.6.1: an origin server with a clock
/// sends one), formatted once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, format!("date: {}\r\n", httpdate::fmt_http_date(now)));
        }
        out.extend_from_slice(d.1.as_bytes());
    });
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The reason phrase of the statuses a read answers with.
fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

//! The gateway's fast path: plain HTTP/1.1 requests relayed with our own
//! framing instead of a full HTTP stack on each side.
//!
//! Why: a proxied request through hyper's server and pooled client crosses
//! several tasks and builds two header maps; profiles of the `balancer`
//! benchmark showed user time per request at twice HAProxy's. Here one
//! task per client connection parses the request head in place
//! (`httparse`), rewrites it into one buffer (hop-by-hop headers dropped,
//! X-Forwarded-For/-Proto added), sends it with its body on a pooled
//! upstream socket, and copies the response back, counting bytes by
//! Content-Length or following the chunked framing without re-encoding.
//!
//! Selection, health, stickiness, limits, retries and metrics are the same
//! as on the full path ([`crate::proxy::handle`]). A GET or HEAD for a pool
//! whose backends run in this process is answered by their direct reads
//! ([`crate::direct`]), with no upstream connection at all. Anything
//! unusual — a chunked or large request body, `Expect`, `Upgrade`,
//! HTTP/1.0, an absolute-form target, the gateway's own `/_strata/` pages,
//! a pool with hedging, any other request to backends in this process, a
//! head that does not parse — hands the connection, with the bytes already
//! read, to the full path, which answers it and every later request on
//! that connection.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use hyper::header::HeaderName;
use hyper::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::edge::access_log::Entry;
use crate::health;
use crate::pool::{Backend, Pool};
use crate::proxy::Gateway;
use crate::router::Live;

/// Longest request or response head relayed here (the full path answers
/// longer request heads with 431).
pub(crate) const MAX_HEAD: usize = 64 << 10;
/// Most headers in a head relayed here.
pub(crate) const MAX_HEADERS: usize = 64;
/// Request bodies up to this size are read whole and sent with the head;
/// larger ones are streamed by the full path.
const MAX_BUFFERED_BODY: u64 = 1 << 20;

/// Serves one client connection: fast path while requests are plain, then
/// (if ever needed) the full path for the rest of the connection.
pub(crate) async fn serve_conn(live: Arc<Live>, mut down: TcpStream, peer: SocketAddr) {
    let mut buf = BytesMut::with_capacity(8 << 10);
    // The client's address as the access log writes it, once per
    // connection.
    let remote = live.edge.access_log.as_ref().map(|_| peer.ip().to_string());
    loop {
        // When the current request's first byte arrived: its head must be
        // whole within `header_timeout` however slowly it trickles in.
        let mut started: Option<Instant> = None;
        let head = loop {
            if !buf.is_empty() {
                started.get_or_insert_with(Instant::now);
                let max = MAX_HEAD.min(live.max_header_bytes);
                match parse_request(&buf) {
                    Ok(Some(h)) if h.len <= max && h.headers.len() <= live.max_headers => break h,
                    Ok(None) if buf.len() < max => {}
                    // Malformed or too long: the full path answers it
                    // (431 for a head over the limit).
                    _ => return full_path(live, buf, down, peer).await,
                }
            }
            let wait = match started {
                Some(t0) => (t0 + live.header_timeout)
                    .saturating_duration_since(Instant::now())
                    .min(live.idle_timeout),
                None => live.idle_timeout,
            };
            match tokio::time::timeout(wait, down.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, failed, or idle (or too slow) for too long.
                _ => return,
            }
        };
        let router = live.router();
        let (gw, plain_route, pool) = {
            let headers = &head.headers;
            let raw = &buf[..head.len];
            let c = router.choose_by(&head.method, head.path(raw), |n: &HeaderName| {
                headers
                    .iter()
                    .find(|h| h.name(raw).eq_ignore_ascii_case(n.as_str()))
                    .and_then(|h| std::str::from_utf8(h.value(raw)).ok())
            });
            (c.gw.clone(), c.rules.is_passthrough(), c.pool)
        };
        // Backends in this process take GETs and HEADs directly; anything
        // else for them goes the full path.
        let local = gw.has_local();
        let read = matches!(head.method, Method::GET | Method::HEAD) && head.content_length == 0;
        if !head.simple
            || gw.options().hedge_after.is_some()
            || (local && !read)
            || !plain_route
            || live.edge.redirect_https.is_some()
        {
            drop(router);
            return full_path(live, buf, down, peer).await;
        }
        let pool = live.edge.access_log.as_ref().map(|_| pool.to_owned());
        drop(router);
        // The whole request: head and body, then the next request's bytes
        // (pipelining) stay in `buf`.
        let total = head.len + head.content_length as usize;
        while buf.len() < total {
            match tokio::time::timeout(live.idle_timeout, down.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        let raw = buf.split_to(total);
        let (start, time) = (Instant::now(), std::time::SystemTime::now());
        let mut outcome = Outcome::default();
        let keep = if local {
            let h = |name: &str| {
                head.headers
                    .iter()
                    .find(|s| s.name(&raw).eq_ignore_ascii_case(name))
                    .and_then(|s| std::str::from_utf8(s.value(&raw)).ok())
            };
            let sticky_id = gw.options().sticky.as_ref().and_then(|s| {
                s.from_cookies(
                    head.headers
                        .iter()
                        .filter(|h| h.name(&raw).eq_ignore_ascii_case("cookie"))
                        .filter_map(|h| std::str::from_utf8(h.value(&raw)).ok()),
                )
            });
            let asked = crate::direct::Asked {
                read: crate::direct::Read {
                    head: head.method == Method::HEAD,
                    target: head.path(&raw),
                    if_none_match: h("if-none-match"),
                    range: h("range"),
                },
                keep_alive: head.keep_alive,
                sticky_id,
            };
            match crate::direct::serve(&gw, asked, peer, &mut down, &mut outcome).await {
                Some(keep) => keep,
                None => {
                    // Declined: the full path answers it (and the rest of
                    // the connection), from this request's first byte.
                    let mut again = BytesMut::with_capacity(raw.len() + buf.len());
                    again.extend_from_slice(&raw);
                    again.extend_from_slice(&buf);
                    return full_path(live, again, down, peer).await;
                }
            }
        } else {
            let upstream = head.upstream_request(&raw, peer);
            forward(&gw, &head, &raw, &upstream, peer, &mut down, &mut outcome).await
        };
        if let (Some(log), Some(pool)) = (&live.edge.access_log, pool) {
            let h = |name: &str| {
                head.headers
                    .iter()
                    .find(|s| s.name(&raw).eq_ignore_ascii_case(name))
                    .and_then(|s| std::str::from_utf8(s.value(&raw)).ok())
            };
            log.log(&Entry {
                time,
                remote: remote.as_deref().unwrap_or("-"),
                method: head.method.as_str(),
                target: head.path(&raw),
                protocol: "HTTP/1.1",
                status: outcome.status,
                bytes: outcome.bytes,
                referer: h("referer"),
                user_agent: h("user-agent"),
                pool: &pool,
                upstream: outcome.upstream,
                request_time: start.elapsed(),
                upstream_time: outcome.upstream_time,
                request_id: None,
            });
        }
        if !keep {
            let _ = down.shutdown().await;
            return;
        }
    }
}

/// Hands the connection, with the bytes already read, to the full path.
async fn full_path(live: Arc<Live>, buf: BytesMut, down: TcpStream, peer: SocketAddr) {
    // A client that knows the server speaks HTTP/2 opens with its preface
    // (h2c prior knowledge); no HTTP/1 method starts with "PRI ".
    let h2c = buf.starts_with(b"PRI * HTTP/2");
    let conn = crate::listen::Conn::Plain { h2c };
    crate::listen::serve_hyper(live, Prefixed::new(buf, down), peer, conn).await
}

/// What became of one request, for the access log.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) upstream_time: Option<std::time::Duration>,
}

/// A header's name and value as byte ranges of the head.
struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

impl Span {
    fn name<'a>(&self, raw: &'a [u8]) -> &'a str {
        std::str::from_utf8(&raw[self.name.0..self.name.1]).unwrap_or("")
    }
    fn value<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        &raw[self.value.0..self.value.1]
    }
}

/// A parsed request head (ranges into the buffer it came from).
struct Head {
    len: usize,
    method: Method,
    path: (usize, usize),
    headers: Vec<Span>,
    content_length: u64,
    keep_alive: bool,
    /// Plain enough for the fast path.
    simple: bool,
}

impl Head {
    fn path<'a>(&self, raw: &'a [u8]) -> &'a str {
        std::str::from_utf8(&raw[self.path.0..self.path.1]).unwrap_or("/")
    }

    fn idempotent(&self) -> bool {
        matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS)
    }

    /// The request as sent upstream: request line, the client's headers
    /// minus hop-by-hop ones, X-Forwarded-For/-Proto, the body.
    fn upstream_request(&self, raw: &[u8], peer: SocketAddr) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(&raw[self.path.0..self.path.1]);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let named = connection_named(&self.headers, raw);
        let mut xff: Option<&[u8]> = None;
        for h in &self.headers {
            let n = h.name(raw);
            if n.eq_ignore_ascii_case("x-forwarded-for") {
                xff = Some(h.value(raw));
                continue;
            }
            if n.eq_ignore_ascii_case("x-forwarded-proto") || hop_by_hop(n, &named) {
                continue;
            }
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value(raw));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prev) = xff {
            out.extend_from_slice(prev);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(peer.ip().to_string().as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n\r\n");
        out.extend_from_slice(&raw[self.len..]);
        out
    }
}

/// Header names listed in Connection headers (hop-by-hop too).
fn connection_named<'a>(headers: &[Span], raw: &'a [u8]) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|h| h.name(raw).eq_ignore_ascii_case("connection"))
        .filter_map(|h| std::str::from_utf8(h.value(raw)).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

pub(crate) fn hop_by_hop(name: &str, named: &[&str]) -> bool {
    crate::proxy::HOP_BY_HOP
        .iter()
        .chain(named)
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Parses a request head at the start of `buf`: `Ok(None)` when more bytes
/// are needed, `Err` when it does not parse (or has too many headers).
fn parse_request(buf: &[u8]) -> Result<Option<Head>, ()> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hs);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let base = buf.as_ptr() as usize;
    let off = |p: *const u8| p as usize - base;
    let method = req.method.unwrap_or("GET");
    let path = req.path.unwrap_or("/");
    let mut head = Head {
        len,
        method: Method::from_bytes(method.as_bytes()).map_err(|_| ())?,
        path: (off(path.as_ptr()), off(path.as_ptr()) + path.len()),
        headers: Vec::with_capacity(req.headers.len()),
        content_length: 0,
        keep_alive: true,
        simple: req.version == Some(1) && path.starts_with('/') && !path.starts_with("/_strata/"),
    };
    let mut lengths = 0;
    for h in req.headers.iter() {
        let n = h.name;
        if n.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(v) => head.content_length = v,
                None => head.simple = false,
            }
        } else if n.eq_ignore_ascii_case("transfer-encoding")
            || n.eq_ignore_ascii_case("upgrade")
            || n.eq_ignore_ascii_case("expect")
        {
            head.simple = false;
        } else if n.eq_ignore_ascii_case("connection") {
            let close = std::str::from_utf8(h.value)
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
            if close {
                head.keep_alive = false;
            }
        }
        head.headers.push(Span {
            name: (off(n.as_ptr()), off(n.as_ptr()) + n.len()),
            value: (off(h.value.as_ptr()), off(h.value.as_ptr()) + h.value.len()),
        });
    }
    if lengths > 1 || head.content_length > MAX_BUFFERED_BODY {
        head.simple = false;
    }
    Ok(Some(head))
}

/// How the response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the backend closes (then the client connection closes too).
    Close,
}

/// What a response head says about its framing and connection.
pub(crate) struct Meta<'a> {
    pub(crate) chunked: bool,
    pub(crate) length: Option<u64>,
    /// The backend will close the connection.
    pub(crate) close: bool,
    /// Headers the Connection header names (hop-by-hop for this exchange).
    pub(crate) named: Vec<&'a str>,
}

impl<'a> Meta<'a> {
    /// Reads Transfer-Encoding, Content-Length (conflicting values are an
    /// error: a smuggling attempt or a broken backend) and Connection.
    pub(crate) fn of(headers: &[httparse::Header<'a>], http10: bool) -> Result<Meta<'a>, ()> {
        let mut m = Meta {
            chunked: false,
            length: None,
            close: http10,
            named: Vec::new(),
        };
        for h in headers {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                m.chunked = std::str::from_utf8(h.value)
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
                    .ends_with("chunked");
            } else if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(())?;
                if m.length.is_some_and(|l| l != v) {
                    return Err(());
                }
                m.length = Some(v);
            } else if h.name.eq_ignore_ascii_case("connection") {
                for t in std::str::from_utf8(h.value).unwrap_or("").split(',') {
                    let t = t.trim();
                    if t.eq_ignore_ascii_case("close") {
                        m.close = true;
                    } else if !t.is_empty() {
                        m.named.push(t);
                    }
                }
            }
        }
        Ok(m)
    }
}

impl Framing {
    /// How a response's body is delimited (RFC 9112 6.3).
    pub(crate) fn of(
        head_request: bool,
        status: u16,
        chunked: bool,
        length: Option<u64>,
    ) -> Framing {
        if head_request || status < 200 || status == 204 || status == 304 {
            Framing::None
        } else if chunked {
            Framing::Chunked
        } else if let Some(l) = length {
            Framing::Length(l)
        } else {
            Framing::Close
        }
    }
}

/// A parsed response head.
struct RespHead {
    len: usize,
    status: u16,
    framing: Framing,
    /// The backend will close this connection.
    upstream_close: bool,
    /// The head as sent to the client, without the final blank line.
    out: Vec<u8>,
}

fn parse_response(buf: &[u8], head_request: bool) -> Result<Option<RespHead>, ()> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut hs);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = resp.code.ok_or(())?;
    let Meta {
        chunked,
        length,
        close: upstream_close,
        named,
    } = Meta::of(resp.headers, resp.version == Some(0))?;
    let framing = Framing::of(head_request, status, chunked, length);
    let mut out = Vec::with_capacity(len + 64);
    out.extend_from_slice(format!("HTTP/1.1 {status} ").as_bytes());
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        // Transfer-Encoding stays when the chunks are relayed as they are.
        let keep_te =
            framing == Framing::Chunked && h.name.eq_ignore_ascii_case("transfer-encoding");
        if hop_by_hop(h.name, &named) && !keep_te {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    Ok(Some(RespHead {
        len,
        status,
        framing,
        upstream_close,
        out,
    }))
}

/// Follows chunked framing byte by byte, to know where a relayed body ends.
#[derive(Debug, Clone, Copy)]
enum Chunks {
    Size { v: u64, digits: bool },
    Ext(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    Trailer { empty: bool },
    TrailerLf { empty: bool },
    Done,
}

impl Chunks {
    fn new() -> Chunks {
        Chunks::Size {
            v: 0,
            digits: false,
        }
    }

    /// Feeds bytes; `Ok(Some(n))` when the body ended after `n` of them.
    fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, ()> {
        let mut i = 0;
        while i < data.len() {
            if let Chunks::Data(n) = *self {
                let k = (n.min((data.len() - i) as u64)) as usize;
                i += k;
                *self = if n == k as u64 {
                    Chunks::DataCr
                } else {
                    Chunks::Data(n - k as u64)
                };
                continue;
            }
            let b = data[i];
            i += 1;
            *self = match (*self, b) {
                (Chunks::Size { v, .. }, b) if b.is_ascii_hexdigit() => {
                    let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                    let v = v.checked_mul(16).and_then(|v| v.checked_add(d)).ok_or(())?;
                    Chunks::Size { v, digits: true }
                }
                (Chunks::Size { v, digits: true }, b';' | b' ' | b'\t') => Chunks::Ext(v),
                (Chunks::Size { v, digits: true }, b'\r') => Chunks::SizeLf(v),
                (Chunks::Ext(v), b'\r') => Chunks::SizeLf(v),
                (Chunks::Ext(v), _) => Chunks::Ext(v),
                (Chunks::SizeLf(0), b'\n') => Chunks::Trailer { empty: true },
                (Chunks::SizeLf(v), b'\n') => Chunks::Data(v),
                (Chunks::DataCr, b'\r') => Chunks::DataLf,
                (Chunks::DataLf, b'\n') => Chunks::new(),
                (Chunks::Trailer { empty }, b'\r') => Chunks::TrailerLf { empty },
                (Chunks::Trailer { .. }, _) => Chunks::Trailer { empty: false },
                (Chunks::TrailerLf { empty: true }, b'\n') => {
                    *self = Chunks::Done;
                    return Ok(Some(i));
                }
                (Chunks::TrailerLf { empty: false }, b'\n') => Chunks::Trailer { empty: true },
                _ => return Err(()),
            };
        }
        Ok(matches!(self, Chunks::Done).then_some(i))
    }
}

/// A pooled or new connection to a backend.
pub(crate) async fn connect(
    gw: &Gateway,
    b: &Backend,
    check_alive: bool,
) -> std::io::Result<(TcpStream, bool)> {
    loop {
        let idle = b.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(s) = idle else { break };
        if !check_alive {
            return Ok((s, true));
        }
        // A request that must not be repeated goes on a connection seen
        // open just now: an idle one the backend closed reads as EOF.
        let mut probe = [0u8; 1];
        match s.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok((s, true)),
            _ => continue,
        }
    }
    Ok((dial(gw, b).await?, false))
}

/// A new connection to backend `b`, within the connect timeout.
pub(crate) async fn dial(gw: &Gateway, b: &Backend) -> std::io::Result<TcpStream> {
    let s = tokio::time::timeout(gw.options().connect_timeout, TcpStream::connect(b.addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Why an exchange with a backend failed.
enum Failure {
    /// Nothing came back: safe to try elsewhere for an idempotent request.
    NoResponse { stale: bool },
    /// No response head in time.
    Timeout,
    /// The client went away, or the backend broke off mid-body: the client
    /// connection must close.
    Broken,
}

/// Sends one request through `gw` and relays the answer; false when the
/// client connection must close.
async fn forward(
    gw: &Arc<Gateway>,
    head: &Head,
    raw: &[u8],
    upstream: &[u8],
    peer: SocketAddr,
    down: &mut TcpStream,
    outcome: &mut Outcome,
) -> bool {
    let m = &gw.metrics;
    m.requests.fetch_add(1, Ordering::Relaxed);
    if !gw.admit(peer.ip(), Instant::now()) {
        m.rate_limited.fetch_add(1, Ordering::Relaxed);
        return reply(
            down,
            outcome,
            429,
            "Too Many Requests",
            "rate limit exceeded\n",
            true,
            head.keep_alive,
        )
        .await;
    }
    let _active = crate::proxy::Count::new(&m.active);
    let mut retrying = None;
    let pool = gw.pool();
    let sticky_id = gw.options().sticky.as_ref().and_then(|s| {
        s.from_cookies(
            head.headers
                .iter()
                .filter(|h| h.name(raw).eq_ignore_ascii_case("cookie"))
                .filter_map(|h| std::str::from_utf8(h.value(raw)).ok()),
        )
    });
    let mut pinned = gw.pinned(&pool, sticky_id);
    let path = head.path(raw);
    let idempotent = head.idempotent();
    let mut tried: Vec<usize> = Vec::new();
    let mut fresh_retry = false;
    loop {
        let Some(i) = pinned
            .take()
            .or_else(|| pool.pick(path.as_bytes(), &tried, Instant::now()))
        else {
            m.gateway_errors.fetch_add(1, Ordering::Relaxed);
            return reply(
                down,
                outcome,
                503,
                "Service Unavailable",
                "no backend available\n",
                false,
                head.keep_alive,
            )
            .await;
        };
        if !fresh_retry {
            tried.push(i);
        }
        let b = &pool.backends[i];
        let Ok(permit) = gw.admit_backend(b).await else {
            m.queue_refused.fetch_add(1, Ordering::Relaxed);
            return reply(
                down,
                outcome,
                503,
                "Service Unavailable",
                "backend busy\n",
                true,
                head.keep_alive,
            )
            .await;
        };
        b.in_flight.fetch_add(1, Ordering::Relaxed);
        b.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let r = exchange(
            gw,
            &pool,
            i,
            head,
            upstream,
            down,
            sticky_id,
            fresh_retry,
            sent,
            outcome,
        )
        .await;
        b.in_flight.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
        match r {
            Ok(keep) => return keep && head.keep_alive,
            Err(Failure::Broken) => return false,
            Err(Failure::NoResponse { stale: true }) if idempotent && !fresh_retry => {
                // An idle connection the backend had closed: the same
                // backend, on a new connection, is not a retry.
                fresh_retry = true;
                pinned = Some(i);
                continue;
            }
            Err(f) => {
                fresh_retry = false;
                health::record(&pool, i, false, Instant::now());
                if idempotent
                    && tried.len() <= gw.options().retries
                    && crate::proxy::may_retry(gw, &mut retrying)
                {
                    continue;
                }
                m.gateway_errors.fetch_add(1, Ordering::Relaxed);
                return match f {
                    Failure::Timeout => {
                        reply(
                            down,
                            outcome,
                            504,
                            "Gateway Timeout",
                            "backend timed out\n",
                            false,
                            head.keep_alive,
                        )
                        .await
                    }
                    _ => {
                        reply(
                            down,
                            outcome,
                            502,
                            "Bad Gateway",
                            "backend failed\n",
                            false,
                            head.keep_alive,
                        )
                        .await
                    }
                };
            }
        }
    }
}

/// One exchange with backend `i`: `Ok(keep)` once the response was relayed
/// (keep: the client connection may carry another request).
#[allow(clippy::too_many_arguments)]
async fn exchange(
    gw: &Gateway,
    pool: &Pool,
    i: usize,
    head: &Head,
    upstream: &[u8],
    down: &mut TcpStream,
    sticky_id: Option<u64>,
    force_new: bool,
    sent: Instant,
    outcome: &mut Outcome,
) -> Result<bool, Failure> {
    let b = &pool.backends[i];
    let conn = if force_new {
        dial(gw, b).await.map(|s| (s, false))
    } else {
        connect(gw, b, !head.idempotent()).await
    };
    let (mut up, reused) = conn.map_err(|_| Failure::NoResponse { stale: false })?;
    if up.write_all(upstream).await.is_err() {
        return Err(Failure::NoResponse { stale: reused });
    }
    // The response head, within the first-byte timeout.
    let mut rbuf = BytesMut::with_capacity(16 << 10);
    let is_head = head.method == Method::HEAD;
    let read_head = async {
        loop {
            match parse_response(&rbuf, is_head) {
                Ok(Some(r)) if r.status >= 100 && r.status < 200 && r.status != 101 => {
                    // Informational: skip it, the real answer follows.
                    rbuf.advance(r.len);
                    continue;
                }
                Ok(Some(r)) => return Ok(r),
                Ok(None) if rbuf.len() < MAX_HEAD => {}
                _ => return Err(Failure::NoResponse { stale: false }),
            }
            match up.read_buf(&mut rbuf).await {
                Ok(0) | Err(_) => {
                    return Err(Failure::NoResponse {
                        stale: reused && rbuf.is_empty(),
                    })
                }
                Ok(_) => {}
            }
        }
    };
    let resp = match tokio::time::timeout(gw.options().first_byte_timeout, read_head).await {
        Ok(r) => r?,
        Err(_) => return Err(Failure::Timeout),
    };
    if resp.status == 101 {
        return Err(Failure::NoResponse { stale: false });
    }
    let now = Instant::now();
    health::record(pool, i, resp.status < 500, now);
    health::record_latency(pool, i, now.duration_since(sent), now);
    rbuf.advance(resp.len);
    outcome.status = resp.status;
    outcome.upstream = Some(b.addr);
    outcome.upstream_time = Some(now.duration_since(sent));

    let close_after = resp.framing == Framing::Close || !head.keep_alive;
    let mut out = resp.out;
    if let Some(c) = gw.sticky_answer(b, sticky_id) {
        out.extend_from_slice(b"set-cookie: ");
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close_after {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let head_len = out.len();
    // The body bytes that came with the head go out in the same write.
    let mut body = BodyRelay::new(resp.framing, !resp.upstream_close);
    body.take(&mut rbuf, &mut out)?;
    outcome.bytes = (out.len() - head_len) as u64;
    if down.write_all(&out).await.is_err() {
        return Err(Failure::Broken);
    }
    while !body.done {
        out.clear();
        match up.read_buf(&mut rbuf).await {
            Ok(0) if resp.framing == Framing::Close => {
                body.done = true;
                body.reusable = false;
            }
            Ok(0) | Err(_) => return Err(Failure::Broken),
            Ok(_) => {
                body.take(&mut rbuf, &mut out)?;
                outcome.bytes += out.len() as u64;
                if down.write_all(&out).await.is_err() {
                    return Err(Failure::Broken);
                }
            }
        }
    }
    if body.reusable {
        b.park(up);
    }
    Ok(!close_after)
}

/// Where a relayed response body stands.
struct BodyRelay {
    framing: Framing,
    /// Bytes still due (Content-Length framing).
    left: u64,
    chunks: Chunks,
    done: bool,
    /// The upstream connection can carry another request afterwards.
    reusable: bool,
}

impl BodyRelay {
    fn new(framing: Framing, reusable: bool) -> BodyRelay {
        BodyRelay {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunks: Chunks::new(),
            done: false,
            reusable,
        }
    }

    /// Moves the body bytes of `data` to `out`; anything after the body's
    /// end makes the connection unusable (a backend must not send it).
    fn take(&mut self, data: &mut BytesMut, out: &mut Vec<u8>) -> Result<(), Failure> {
        match self.framing {
            Framing::None => {
                self.done = true;
                self.reusable &= data.is_empty();
            }
            Framing::Length(_) => {
                let k = (self.left.min(data.len() as u64)) as usize;
                out.extend_from_slice(&data[..k]);
                self.left -= k as u64;
                self.done = self.left == 0;
                self.reusable &= !(self.done && data.len() > k);
            }
            Framing::Chunked => match self.chunks.feed(data).map_err(|_| Failure::Broken)? {
                Some(n) => {
                    out.extend_from_slice(&data[..n]);
                    self.done = true;
                    self.reusable &= data.len() == n;
                }
                None => out.extend_from_slice(data),
            },
            Framing::Close => out.extend_from_slice(data),
        }
        data.clear();
        Ok(())
    }
}

/// A response made by the gateway itself.
async fn reply(
    down: &mut TcpStream,
    outcome: &mut Outcome,
    status: u16,
    reason: &str,
    body: &str,
    retry_after: bool,
    keep_alive: bool,
) -> bool {
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n",
        body.len()
    );
    if retry_after {
        r.push_str("retry-after: 1\r\n");
    }
    if !keep_alive {
        r.push_str("connection: close\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    outcome.status = status;
    outcome.bytes = body.len() as u64;
    down.write_all(r.as_bytes()).await.is_ok() && keep_alive
}

/// A client connection whose first bytes were already read: they are read
/// again first, so the full path sees the connection from the start of the
/// request the fast path declined.
pub(crate) struct Prefixed {
    prefix: BytesMut,
    inner: TcpStream,
}

impl Prefixed {
    fn new(prefix: BytesMut, inner: TcpStream) -> Prefixed {
        Prefixed { prefix, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_framing_finds_the_end_across_splits() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut c = Chunks::new();
            let first = c.feed(&body[..split]).expect("valid");
            let got = match first {
                Some(n) => n,
                None => split + c.feed(&body[split..]).expect("valid").expect("ends"),
            };
            assert_eq!(got, end, "split at {split}");
        }
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"\r\n"] {
            assert!(Chunks::new().feed(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_are_classified_and_rewritten() {
        let raw = b"GET /v1/blobs/a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\nX-Forwarded-For: 10.0.0.1\r\nCookie: a=b\r\n\r\n";
        let h = parse_request(raw).expect("parse").expect("complete");
        assert!(h.simple && h.keep_alive && h.idempotent());
        let up = h.upstream_request(raw, "127.0.0.9:5".parse().expect("addr"));
        let up = String::from_utf8(up).expect("utf8");
        assert!(
            up.starts_with("GET /v1/blobs/a HTTP/1.1\r\nHost: x\r\n"),
            "{up}"
        );
        assert!(!up.to_ascii_lowercase().contains("x-secret"), "{up}");
        assert!(!up.to_ascii_lowercase().contains("connection"), "{up}");
        assert!(
            up.contains("x-forwarded-for: 10.0.0.1, 127.0.0.9\r\n"),
            "{up}"
        );
        assert!(up.ends_with("x-forwarded-proto: http\r\n\r\n"), "{up}");
        for (req, why) in [
            (
                &b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                "chunked",
            ),
            (b"GET /a HTTP/1.0\r\n\r\n", "1.0"),
            (b"GET http://evil/a HTTP/1.1\r\n\r\n", "absolute form"),
            (b"GET /_strata/status HTTP/1.1\r\n\r\n", "own pages"),
            (
                b"PUT /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                "expect",
            ),
            (
                b"PUT /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "two lengths",
            ),
            (
                b"PUT /a HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
                "big body",
            ),
        ] {
            let h = parse_request(req).expect("parse").expect("complete");
            assert!(!h.simple, "{why}");
        }
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost")
            .expect("ok")
            .is_none());
        assert!(parse_request(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").is_err());
    }

    #[test]
    fn responses_are_framed() {
        let f = |raw: &[u8], head: bool| {
            parse_response(raw, head)
                .expect("ok")
                .expect("complete")
                .framing
        };
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Framing::Length(5)
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Framing::None
        );
        assert_eq!(f(b"HTTP/1.1 204 No Content\r\n\r\n", false), Framing::None);
        assert_eq!(
            f(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                false
            ),
            Framing::None
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Framing::Chunked
        );
        assert_eq!(f(b"HTTP/1.1 200 OK\r\n\r\n", false), Framing::Close);
        let r = parse_response(b"HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nContent-Length: 0\r\n\r\n", false)
            .expect("ok")
            .expect("complete");
        assert!(r.upstream_close);
        let out = String::from_utf8(r.out).expect("utf8").to_ascii_lowercase();
        assert!(
            !out.contains("x-hop") && !out.contains("keep-alive") && !out.contains("connection"),
            "{out}"
        );
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .is_err());
    }
}

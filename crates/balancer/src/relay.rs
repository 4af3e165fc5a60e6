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
//! The HTTP/1.1 framing it uses (head parsing and rewriting, response
//! framing, the chunked follower) is [`crate::h1`], shared with the
//! upstream client; backend sockets and the idle pool are [`crate::conn`].
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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use hyper::header::HeaderName;
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::{connect, dial};
use crate::edge::access_log::{Entry, Outcome};
use crate::gateway::Gateway;
use crate::h1::{parse_request, parse_response, Chunks, Framing, Head, MAX_HEAD};
use crate::pool::Pool;
use crate::router::Live;

/// Serves one client connection on the fast path while its requests are
/// plain. `Some`: a request needs the full path; the connection and the
/// bytes already read from it (that request's first byte on) are handed
/// back for it, and the full path serves the rest of the connection.
pub(crate) async fn serve_conn(
    live: &Live,
    mut down: TcpStream,
    peer: SocketAddr,
) -> Option<(BytesMut, TcpStream)> {
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
                    _ => return Some((buf, down)),
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
                _ => return None,
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
            return Some((buf, down));
        }
        let pool = live.edge.access_log.as_ref().map(|_| pool.to_owned());
        drop(router);
        // The whole request: head and body, then the next request's bytes
        // (pipelining) stay in `buf`.
        let total = head.len + head.content_length as usize;
        while buf.len() < total {
            match tokio::time::timeout(live.idle_timeout, down.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
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
            let asked = crate::answer::Asked {
                read: crate::direct::Read {
                    head: head.method == Method::HEAD,
                    target: head.path(&raw),
                    if_none_match: h("if-none-match"),
                    range: h("range"),
                },
                keep_alive: head.keep_alive,
                sticky_id,
            };
            match crate::answer::serve(&gw, asked, peer, &mut down, &mut outcome).await {
                Some(keep) => keep,
                None => {
                    // Declined: the full path answers it (and the rest of
                    // the connection), from this request's first byte.
                    let mut again = BytesMut::with_capacity(raw.len() + buf.len());
                    again.extend_from_slice(&raw);
                    again.extend_from_slice(&buf);
                    return Some((again, down));
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
            return None;
        }
    }
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
    let _active = crate::metrics::Count::new(&m.active);
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
                pool.record(i, false, Instant::now());
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
    pool.record(i, resp.status < 500, now);
    pool.record_latency(i, now.duration_since(sent), now);
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

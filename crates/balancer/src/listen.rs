//! Listeners: accepting client connections (plain and TLS), the protocol
//! spoken on each, and what the edge does around each request on the full
//! path.
//!
//! A plain connection starts on the relay's HTTP/1.1 fast path
//! ([`crate::relay`]), which hands it here when a request needs more: an
//! HTTP/2 prior-knowledge preface (h2c), a route with header rules or
//! compression, the HTTPS redirect, or anything unusual. A TLS connection
//! comes here after its handshake: HTTP/2 when ALPN chose `h2`, HTTP/1.1
//! otherwise. Backends are always spoken to in HTTP/1.1.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::body::{plain, UpBody};
use crate::edge::access_log::{AccessLog, Record};
use crate::edge::headers::{self, REQUEST_ID};
use crate::edge::tls::Tls;
use crate::proxy::Upstreamed;
use crate::router::Live;

/// How a client connection reached the full path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conn {
    /// Plain TCP; `h2c`: it opened with the HTTP/2 preface.
    Plain { h2c: bool },
    /// TLS; `h2`: ALPN chose HTTP/2.
    Tls { h2: bool },
}

/// Serves the gateway on `listener` until `shutdown` resolves: a router
/// with this one pool and no rules. `/_strata/metrics` and
/// `/_strata/status` are answered by the gateway itself.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<crate::gateway::Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::Router {
        pools: vec![("default".into(), gw)],
        routes: Vec::new(),
        rules: Default::default(),
    };
    serve_routed(listener, Live::new(router, None), shutdown).await
}

/// Serves the routed pools on `listener` until `shutdown` resolves.
pub async fn serve_routed(
    listener: TcpListener,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    accept_loop(listener, live, shutdown, |live, stream, peer| async move {
        if let Some((read, stream)) = crate::relay::serve_conn(&live, stream, peer).await {
            full_path(live, read, stream, peer).await;
        }
    })
    .await
}

/// Serves the routed pools over TLS on `listener` until `shutdown`
/// resolves. Each handshake uses `tls`'s certificates at that moment (a
/// reload never touches open connections) and must finish within the
/// header timeout.
pub async fn serve_tls(
    listener: TcpListener,
    live: Arc<Live>,
    tls: Arc<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    accept_loop(listener, live, shutdown, move |live, stream, peer| {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        async move {
            let m = &live.edge.metrics;
            // Pinned here, so a handshake that fails or times out closes
            // the socket only after it is counted.
            let accept = acceptor.accept(stream);
            tokio::pin!(accept);
            match tokio::time::timeout(live.header_timeout, &mut accept).await {
                Ok(Ok(s)) => {
                    m.tls_connections.fetch_add(1, Ordering::Relaxed);
                    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_hyper(live, s, peer, Conn::Tls { h2 }).await;
                }
                _ => {
                    m.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
    .await
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    conn: F,
) -> std::io::Result<()>
where
    F: Fn(Arc<Live>, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    live.start_checks();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            // A slot first: at the limit, new clients wait in the kernel's
            // backlog instead of being accepted and starved.
            slot = live.conn_slots.clone().acquire_owned() => {
                let Ok(slot) = slot else { return Ok(()) };
                let (stream, peer) = tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    acc = listener.accept() => match acc {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let _ = stream.set_nodelay(true);
                let fut = conn(live.clone(), stream, peer);
                tokio::spawn(async move {
                    fut.await;
                    drop(slot);
                });
            }
        }
    }
}

/// Hands the connection, with the bytes already read, to the full path.
async fn full_path(live: Arc<Live>, buf: BytesMut, down: TcpStream, peer: SocketAddr) {
    // A client that knows the server speaks HTTP/2 opens with its preface
    // (h2c prior knowledge); no HTTP/1 method starts with "PRI ".
    let h2c = buf.starts_with(b"PRI * HTTP/2");
    let conn = Conn::Plain { h2c };
    serve_hyper(live, crate::conn::Prefixed::new(buf, down), peer, conn).await
}

/// Serves a client connection with hyper: the full path.
pub(crate) async fn serve_hyper<I>(live: Arc<Live>, io: I, peer: SocketAddr, conn: Conn)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (head_timeout, head_max, headers_max) =
        (live.header_timeout, live.max_header_bytes, live.max_headers);
    let tls = matches!(conn, Conn::Tls { .. });
    // The client's address as the access log writes it, once per
    // connection.
    let remote: Option<Arc<str>> = live
        .edge
        .access_log
        .as_ref()
        .map(|_| peer.ip().to_string().into());
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let live = live.clone();
        let remote = remote.clone();
        async move { Ok::<_, Infallible>(dispatch(&live, req, peer, remote.as_ref(), tls).await) }
    });
    if matches!(conn, Conn::Plain { h2c: true } | Conn::Tls { h2: true }) {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // nginx's default stream limit; enough for a page of thumbnails.
        b.timer(TokioTimer::new())
            .max_concurrent_streams(128)
            .max_header_list_size(head_max.min(u32::MAX as usize) as u32);
        let _ = b.serve_connection(TokioIo::new(io), svc).await;
        return;
    }
    let mut b = hyper::server::conn::http1::Builder::new();
    if headers_max != 100 {
        // Off hyper's default it allocates header slots per request.
        b.max_headers(headers_max);
    }
    let _ = b
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_header_size(head_max)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

fn record_of<B>(req: &Request<B>, remote: &Arc<str>, log: &AccessLog, start: Instant) -> Record {
    Record {
        time: log.wall_time(start),
        remote: remote.clone(),
        method: req.method().clone(),
        target: req.uri().path_and_query().cloned(),
        protocol: protocol(req.version()),
        status: 0,
        bytes: 0,
        referer: req.headers().get(header::REFERER).cloned(),
        user_agent: req.headers().get(header::USER_AGENT).cloned(),
        pool: Arc::from(""),
        upstream: None,
        request_time: Default::default(),
        upstream_time: None,
        request_id: None,
    }
}

/// A response body that logs its request when it ends (or is dropped
/// unfinished), with the bytes it carried.
struct Logged {
    inner: UpBody,
    record: Option<Record>,
    start: Instant,
    log: Arc<AccessLog>,
}

impl hyper::body::Body for Logged {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, crate::body::BoxError>>>
    {
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if let (std::task::Poll::Ready(Some(Ok(f))), Some(rec)) = (&r, this.record.as_mut()) {
            if let Some(d) = f.data_ref() {
                rec.bytes += d.len() as u64;
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
        if let Some(mut r) = self.record.take() {
            r.request_time = self.start.elapsed();
            self.log.log_record(r);
        }
    }
}

/// One request: the gateway's own pages, the HTTPS redirect, or a pool
/// with its route's edge rules; logged when the response body ends.
async fn dispatch(
    live: &Live,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    remote: Option<&Arc<str>>,
    tls: bool,
) -> Response<UpBody> {
    let start = Instant::now();
    let mut entry = live
        .edge
        .access_log
        .as_ref()
        .zip(remote)
        .map(|(log, remote)| record_of(&req, remote, log, start));
    if req.version() == Version::HTTP_2 {
        live.edge
            .metrics
            .h2_requests
            .fetch_add(1, Ordering::Relaxed);
    }
    let path = req.uri().path();
    if let Some(pages) = live.edge.pages.as_ref().filter(|p| (p.owns)(path)) {
        let r = serve_page(pages, req).await;
        return logged(live, entry, start, r);
    }
    if let Some(rest) = path.strip_prefix("/_strata/") {
        if rest == "status" || rest == "metrics" {
            let r = if rest == "status" {
                let mut r = plain(StatusCode::OK, &live.router().status_page());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                r
            } else {
                use http_body_util::BodyExt;
                prom::response(&live.registry).map(|text| text.map_err(|e| match e {}).boxed())
            };
            return logged(live, entry, start, r);
        }
        if rest.starts_with("admin/") {
            let r = crate::admin::handle(live, req).await;
            return logged(live, entry, start, r);
        }
    } else if let (Some(port), false) = (live.edge.redirect_https, tls) {
        let r = redirect(&req, port);
        if r.status() == StatusCode::PERMANENT_REDIRECT {
            live.edge.metrics.redirects.fetch_add(1, Ordering::Relaxed);
        }
        return logged(live, entry, start, r);
    }
    let (gw, rules) = {
        let router = live.router();
        let c = router.choose(&req);
        if let Some(e) = entry.as_mut() {
            e.pool = c.pool.clone();
        }
        (c.gw.clone(), c.rules.clone())
    };
    let rid = rules.request_id.then(|| {
        let id = headers::request_id(req.headers());
        req.headers_mut().insert(REQUEST_ID, id.clone());
        id
    });
    rules.request.apply(req.headers_mut());
    let coding = rules
        .compress
        .as_ref()
        .and_then(|c| c.negotiate(req.headers().get(header::ACCEPT_ENCODING)));
    let head = req.method() == hyper::Method::HEAD;
    let mut resp = crate::proxy::handle_as(gw, req, peer, if tls { "https" } else { "http" }).await;
    if let Some(c) = &rules.compress {
        c.apply(&mut resp, coding, head, &live.edge.metrics);
    }
    rules.response.apply(resp.headers_mut());
    if let Some(id) = rid {
        if let Some(e) = entry.as_mut() {
            e.request_id = Some(id.clone());
        }
        resp.headers_mut().insert(REQUEST_ID, id);
    }
    logged(live, entry, start, resp)
}

/// One of the extra pages: its body read (bounded), its answer boxed.
async fn serve_page(pages: &crate::edge::Pages, req: Request<Incoming>) -> Response<UpBody> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, pages.max_body)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let status = if e.is::<http_body_util::LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return plain(status, "request body refused\n");
        }
    };
    let r = (pages.serve)(Request::from_parts(parts, body)).await;
    r.map(|b| http_body_util::Full::new(b).map_err(|e| match e {}).boxed())
}

/// `resp` with its body wrapped to log `entry` when it ends.
fn logged(
    live: &Live,
    entry: Option<Record>,
    start: Instant,
    resp: Response<UpBody>,
) -> Response<UpBody> {
    let (Some(log), Some(mut record)) = (&live.edge.access_log, entry) else {
        return resp;
    };
    record.status = resp.status().as_u16();
    if let Some(u) = resp.extensions().get::<Upstreamed>() {
        record.upstream = Some(u.addr);
        record.upstream_time = Some(u.took);
    }
    let log = log.clone();
    resp.map(|inner| {
        use http_body_util::BodyExt;
        Logged {
            inner,
            record: Some(record),
            start,
            log,
        }
        .boxed()
    })
}

/// 308 to the same host and target over HTTPS on `port`.
fn redirect<B>(req: &Request<B>, port: u16) -> Response<UpBody> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    // The host without its port; a bracketed IPv6 literal keeps its
    // brackets.
    let name = host.map(|h| match h.rfind(':') {
        Some(i) if !h[i..].contains(']') => &h[..i],
        _ => h,
    });
    let Some(name) = name.filter(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
    }) else {
        return plain(StatusCode::BAD_REQUEST, "a Host header is required\n");
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    };
    let mut r = plain(StatusCode::PERMANENT_REDIRECT, "");
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => plain(StatusCode::BAD_REQUEST, "bad request target\n"),
    }
}

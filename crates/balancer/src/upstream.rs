//! The full path's HTTP/1.1 client for requests without a body (image
//! GETs, HEADs): the request's own task writes it on a pooled backend
//! connection (the per-backend idle pool the relay uses) and reads the
//! answer, with no connection task or channel in between.
//!
//! Why: behind HTTP/2 every request went through hyper's pooled client,
//! whose connection task and channels cost two task wake-ups per request;
//! profiles of the `edge` benchmark put that among the largest costs of a
//! proxied HTTP/2 request. Requests with a body keep using hyper's client
//! (it streams uploads).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::body::UpBody;
use crate::gateway::Gateway;
use crate::h1::{Chunks, Framing, Piece};
use crate::pool::Backend;

use crate::h1::{MAX_HEAD, MAX_HEADERS};

/// Why no response came.
#[derive(Debug)]
pub(crate) enum Failed {
    /// Nothing came back (connect or write failed, or the connection was
    /// closed before a response head): another backend may be tried.
    NoResponse,
    /// No response head within the first-byte timeout.
    Timeout,
}

/// The HTTP/1.1 head of a bodiless request for `path` with `parts`'
/// headers (already rewritten for upstream). Without a Host header (an
/// HTTP/2 client sends `:authority` instead) the authority becomes Host.
pub(crate) fn request_head(
    parts: &hyper::http::request::Parts,
    path: &str,
    backend: std::net::SocketAddr,
) -> Vec<u8> {
    use std::io::Write;
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(parts.method.as_str().as_bytes());
    h.push(b' ');
    h.extend_from_slice(path.as_bytes());
    h.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(hyper::header::HOST) {
        match parts.uri.authority() {
            Some(a) => {
                h.extend_from_slice(b"host: ");
                h.extend_from_slice(a.as_str().as_bytes());
                h.extend_from_slice(b"\r\n");
            }
            None => {
                let _ = write!(h, "host: {backend}\r\n");
            }
        }
    }
    for (n, v) in &parts.headers {
        h.extend_from_slice(n.as_str().as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// Sends a bodiless request (`head` is its whole HTTP/1.1 head) to `b` and
/// returns the response, its body streaming from the connection. A pooled
/// connection the backend had closed is replaced by a new one once.
pub(crate) async fn send(
    gw: &Gateway,
    b: &Arc<Backend>,
    head: &[u8],
    head_request: bool,
) -> Result<Response<UpBody>, Failed> {
    let deadline = tokio::time::Instant::now() + gw.options().first_byte_timeout;
    let mut fresh = false;
    loop {
        let conn = if fresh {
            crate::conn::dial(gw, b).await.map(|s| (s, false))
        } else {
            crate::conn::connect(gw, b, false).await
        };
        let (stream, reused) = conn.map_err(|_| Failed::NoResponse)?;
        match tokio::time::timeout_at(deadline, exchange(stream, b, head, head_request)).await {
            Err(_) => return Err(Failed::Timeout),
            Ok(Ok(r)) => return Ok(r),
            // A kept-alive connection the backend closed meanwhile: the
            // request never reached it; a new connection is not a retry.
            Ok(Err(true)) if reused && !fresh => fresh = true,
            Ok(Err(_)) => return Err(Failed::NoResponse),
        }
    }
}

/// One exchange; `Err(stale)`: no response, and nothing at all was read.
async fn exchange(
    mut s: TcpStream,
    b: &Arc<Backend>,
    head: &[u8],
    head_request: bool,
) -> Result<Response<UpBody>, bool> {
    if s.write_all(head).await.is_err() {
        return Err(true);
    }
    let mut buf = BytesMut::with_capacity(8 << 10);
    loop {
        match parse(&buf, head_request) {
            Ok(Some((len, resp, framing, close))) => {
                if (100..200).contains(&resp.status().as_u16()) {
                    // Informational: the real answer follows.
                    buf.advance(len);
                    continue;
                }
                buf.advance(len);
                return Ok(with_body(resp, framing, close, buf, s, b.clone()));
            }
            Ok(None) if buf.len() < MAX_HEAD => {}
            _ => return Err(false),
        }
        match tokio::io::AsyncReadExt::read_buf(&mut s, &mut buf).await {
            Ok(n) if n > 0 => {}
            _ => return Err(buf.is_empty()),
        }
    }
}

type Parsed = (usize, Response<()>, Framing, bool);

/// A response head: its length, the response without hop-by-hop headers,
/// the body's framing, and whether the backend will close.
fn parse(buf: &[u8], head_request: bool) -> Result<Option<Parsed>, ()> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut hs);
    let len = match r.parse(buf).map_err(|_| ())? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = r.code.ok_or(())?;
    let crate::h1::Meta {
        chunked,
        length,
        close,
        named,
    } = crate::h1::Meta::of(r.headers, r.version == Some(0))?;
    let framing = Framing::of(head_request, status, chunked, length);
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(status).map_err(|_| ())?;
    let headers = resp.headers_mut();
    headers.reserve(r.headers.len());
    for h in r.headers.iter() {
        // Content-Length stays: it tells the client the size in advance
        // (HTTP/2 included); chunked framing is this hop's only.
        if crate::h1::hop_by_hop(h.name, &named) {
            continue;
        }
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Err(());
        };
        headers.append(n, v);
    }
    Ok(Some((len, resp, framing, close)))
}

/// `resp` with its body: whole when it is already in `buf` (and the
/// connection goes back to the pool at once), else streamed.
fn with_body(
    resp: Response<()>,
    framing: Framing,
    close: bool,
    mut buf: BytesMut,
    s: TcpStream,
    b: Arc<Backend>,
) -> Response<UpBody> {
    let whole = match framing {
        Framing::None => Some(Bytes::new()),
        Framing::Length(n) if buf.len() as u64 >= n => Some(buf.split_to(n as usize).freeze()),
        _ => None,
    };
    if let Some(body) = whole {
        if !close && buf.is_empty() {
            b.park(s);
        }
        return resp.map(|()| Full::new(body).map_err(|e| match e {}).boxed());
    }
    let left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    resp.map(|()| {
        Streamed {
            conn: Some(s),
            buf,
            framing,
            left,
            chunk: Chunks::new(),
            reusable: !close && framing != Framing::Close,
            backend: b,
        }
        .boxed()
    })
}

/// A response body read from the backend connection as the client takes
/// it; the connection returns to the pool when the body ends cleanly.
struct Streamed {
    conn: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    /// Content-Length bytes still due.
    left: u64,
    chunk: Chunks,
    reusable: bool,
    backend: Arc<Backend>,
}

/// The error of an upstream body that broke off or could not be parsed;
/// the client's stream is reset (HTTP/2) or its connection closed.
fn broken(why: &'static str) -> crate::body::BoxError {
    why.into()
}

impl Streamed {
    /// Takes the body bytes decodable from `buf`: `Ok(Some(data))`, or
    /// `Ok(None)` when more input is needed; `done` is set at the end.
    fn decode(&mut self) -> Result<Option<Bytes>, ()> {
        match self.framing {
            Framing::None => Ok(None),
            Framing::Close => Ok((!self.buf.is_empty()).then(|| self.buf.split().freeze())),
            Framing::Length(_) => {
                let k = self.left.min(self.buf.len() as u64) as usize;
                self.left -= k as u64;
                Ok((k > 0).then(|| self.buf.split_to(k).freeze()))
            }
            Framing::Chunked => loop {
                if self.buf.is_empty() || self.chunk.is_done() {
                    return Ok(None);
                }
                match self.chunk.step(&self.buf)? {
                    Piece::Framing(n) => self.buf.advance(n),
                    Piece::Data(n) => return Ok(Some(self.buf.split_to(n).freeze())),
                    Piece::End(n) => {
                        self.buf.advance(n);
                        return Ok(None);
                    }
                }
            },
        }
    }

    fn done(&self) -> bool {
        match self.framing {
            Framing::None => true,
            Framing::Length(_) => self.left == 0,
            Framing::Chunked => self.chunk.is_done(),
            Framing::Close => false,
        }
    }

    /// The body ended: the connection goes back to the pool if nothing
    /// followed the body and the backend keeps it open.
    fn finish(&mut self) {
        if let Some(s) = self.conn.take() {
            if self.reusable && self.buf.is_empty() {
                self.backend.park(s);
            }
        }
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::body::BoxError>>> {
        let this = &mut *self;
        loop {
            match this.decode() {
                Err(()) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(broken("bad chunked framing from the backend"))));
                }
                Ok(Some(data)) => {
                    if this.done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) if this.done() => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            this.buf.reserve(16 << 10);
            match conn.try_read_buf(&mut this.buf) {
                Ok(0) => {
                    this.conn = None;
                    if this.framing == Framing::Close {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(broken("the backend closed mid-body"))));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match conn.poll_read_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => {
                            this.conn = None;
                            return Poll::Ready(Some(Err(broken("backend read failed"))));
                        }
                    }
                }
                Err(_) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(broken("backend read failed"))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() && self.buf.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(_) => SizeHint::with_exact(self.left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes; the payload, or None
    /// on a framing error.
    fn decode_all(wire: &[u8], step: usize) -> Option<Vec<u8>> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
        let addr = std_listener.local_addr().ok()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async move {
            let conn = TcpStream::connect(addr).await.ok()?;
            let mut s = Streamed {
                conn: Some(conn),
                buf: BytesMut::new(),
                framing: Framing::Chunked,
                left: 0,
                chunk: Chunks::new(),
                reusable: false,
                backend: Arc::new(Backend::new(addr, 1)),
            };
            let mut out = Vec::new();
            for piece in wire.chunks(step) {
                s.buf.extend_from_slice(piece);
                loop {
                    match s.decode() {
                        Err(()) => return None,
                        Ok(Some(d)) => out.extend_from_slice(&d),
                        Ok(None) => break,
                    }
                }
            }
            s.done().then_some(out)
        })
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire =
            b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in 1..wire.len() {
            assert_eq!(
                decode_all(wire, step).as_deref(),
                Some(&b"helloabcdefghijklmnopqrstuvwxyz"[..]),
                "step {step}"
            );
        }
        // A missing CRLF after the data, and a size that is not hex.
        assert_eq!(decode_all(b"5\r\nhelloXX0\r\n\r\n", 64), None);
        assert_eq!(decode_all(b"zz\r\nhello\r\n", 64), None);
        // Not finished: no last chunk yet.
        assert_eq!(decode_all(b"5\r\nhello\r\n", 64), None);
    }

    #[test]
    fn response_heads_keep_end_to_end_headers_only() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nETag: \"a\"\r\n\r\nabc";
        let (len, resp, framing, close) = parse(head, false).expect("ok").expect("whole");
        assert_eq!(&head[len..], b"abc");
        assert_eq!(framing, Framing::Length(3));
        assert!(!close);
        assert_eq!(resp.headers()["etag"], "\"a\"");
        assert_eq!(resp.headers()["content-length"], "3");
        for gone in ["connection", "x-hop", "keep-alive"] {
            assert!(resp.headers().get(gone).is_none(), "{gone}");
        }
        // Conflicting lengths are refused (request smuggling).
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            false
        )
        .is_err());
        // A HEAD answer has no body whatever its length says.
        let (_, _, framing, _) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
            .expect("ok")
            .expect("whole");
        assert_eq!(framing, Framing::None);
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le", false)
            .expect("ok")
            .is_none());
    }
}

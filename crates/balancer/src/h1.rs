//! HTTP/1.1 framing for the gateway's fast path and its upstream client:
//! request and response heads parsed in place (`httparse`) and rewritten
//! (hop-by-hop headers, including those a `Connection` header names,
//! dropped; `X-Forwarded-For`/`-Proto` added), how a response body is
//! delimited (RFC 9112 6.3), and the one chunked-framing state machine:
//! the relay follows it to find where a body it passes through ends, the
//! upstream client decodes with it.

use std::net::SocketAddr;

use hyper::header::{HeaderMap, HeaderName};
use hyper::Method;

/// Headers that describe one hop, never forwarded (RFC 9110 7.6.1).
pub(crate) const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Drops the hop-by-hop headers from a header map, those its `Connection`
/// header names included: the full path's counterpart of the rewrite in
/// [`Head::upstream_request`], on hyper's types.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the (few) headers present instead of a hash lookup per
    // hop-by-hop name: most requests and responses carry none of them.
    let found: Vec<HeaderName> = h
        .keys()
        .filter(|k| HOP_BY_HOP.contains(&k.as_str()))
        .cloned()
        .collect();
    if found.is_empty() {
        return;
    }
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.into_iter().chain(found) {
        h.remove(n);
    }
}

/// Longest request or response head relayed here (the full path answers
/// longer request heads with 431).
pub(crate) const MAX_HEAD: usize = 64 << 10;
/// Most headers in a head relayed here.
pub(crate) const MAX_HEADERS: usize = 64;
/// Request bodies up to this size are read whole and sent with the head;
/// larger ones are streamed by the full path.
pub(crate) const MAX_BUFFERED_BODY: u64 = 1 << 20;

/// A header's name and value as byte ranges of the head.
pub(crate) struct Span {
    pub(crate) name: (usize, usize),
    pub(crate) value: (usize, usize),
}

impl Span {
    pub(crate) fn name<'a>(&self, raw: &'a [u8]) -> &'a str {
        std::str::from_utf8(&raw[self.name.0..self.name.1]).unwrap_or("")
    }
    pub(crate) fn value<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        &raw[self.value.0..self.value.1]
    }
}

/// A parsed request head (ranges into the buffer it came from).
pub(crate) struct Head {
    pub(crate) len: usize,
    pub(crate) method: Method,
    pub(crate) path: (usize, usize),
    pub(crate) headers: Vec<Span>,
    pub(crate) content_length: u64,
    pub(crate) keep_alive: bool,
    /// Plain enough for the fast path.
    pub(crate) simple: bool,
}

impl Head {
    pub(crate) fn path<'a>(&self, raw: &'a [u8]) -> &'a str {
        std::str::from_utf8(&raw[self.path.0..self.path.1]).unwrap_or("/")
    }

    pub(crate) fn idempotent(&self) -> bool {
        matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS)
    }

    /// The request as sent upstream: request line, the client's headers
    /// minus hop-by-hop ones, X-Forwarded-For/-Proto, the body.
    pub(crate) fn upstream_request(&self, raw: &[u8], peer: SocketAddr) -> Vec<u8> {
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
pub(crate) fn connection_named<'a>(headers: &[Span], raw: &'a [u8]) -> Vec<&'a str> {
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
    HOP_BY_HOP
        .iter()
        .chain(named)
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Parses a request head at the start of `buf`: `Ok(None)` when more bytes
/// are needed, `Err` when it does not parse (or has too many headers).
pub(crate) fn parse_request(buf: &[u8]) -> Result<Option<Head>, ()> {
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
pub(crate) struct RespHead {
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// The backend will close this connection.
    pub(crate) upstream_close: bool,
    /// The head as sent to the client, without the final blank line.
    pub(crate) out: Vec<u8>,
}

pub(crate) fn parse_response(buf: &[u8], head_request: bool) -> Result<Option<RespHead>, ()> {
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

/// Chunked framing (RFC 9112 7.1), read byte by byte: the one state
/// machine for both of the gateway's uses. The relay passes a body through
/// unchanged and only needs to know where it ends ([`Chunks::feed`]); the
/// upstream client decodes it into data frames ([`Chunks::step`]). Framing
/// bytes are consumed as they arrive, so a long extension or trailer never
/// has to be buffered whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunks {
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

/// What [`Chunks::step`] found at the start of the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece {
    /// This many bytes of framing (size lines, CRLFs, trailers); when it is
    /// all of them, more input is needed.
    Framing(usize),
    /// This many bytes of body data.
    Data(usize),
    /// The body ended after this many bytes of framing.
    End(usize),
}

impl Chunks {
    pub(crate) fn new() -> Chunks {
        Chunks::Size {
            v: 0,
            digits: false,
        }
    }

    /// Whether the last chunk and the trailers have been read.
    pub(crate) fn is_done(&self) -> bool {
        *self == Chunks::Done
    }

    /// Reads from the start of `data` up to the next change between
    /// framing and body data.
    pub(crate) fn step(&mut self, data: &[u8]) -> Result<Piece, ()> {
        if let Chunks::Data(n) = *self {
            let k = n.min(data.len() as u64);
            *self = if n == k {
                Chunks::DataCr
            } else {
                Chunks::Data(n - k)
            };
            return Ok(Piece::Data(k as usize));
        }
        for (i, &b) in data.iter().enumerate() {
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
                (Chunks::SizeLf(v), b'\n') => {
                    *self = Chunks::Data(v);
                    return Ok(Piece::Framing(i + 1));
                }
                (Chunks::DataCr, b'\r') => Chunks::DataLf,
                (Chunks::DataLf, b'\n') => Chunks::new(),
                (Chunks::Trailer { empty }, b'\r') => Chunks::TrailerLf { empty },
                (Chunks::Trailer { .. }, _) => Chunks::Trailer { empty: false },
                (Chunks::TrailerLf { empty: true }, b'\n') => {
                    *self = Chunks::Done;
                    return Ok(Piece::End(i + 1));
                }
                (Chunks::TrailerLf { empty: false }, b'\n') => Chunks::Trailer { empty: true },
                _ => return Err(()),
            };
        }
        Ok(Piece::Framing(data.len()))
    }

    /// Passes `data` through; `Ok(Some(n))` when the body ended after `n`
    /// of its bytes.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, ()> {
        let mut i = 0;
        while i < data.len() {
            match self.step(&data[i..])? {
                Piece::Framing(n) | Piece::Data(n) => i += n,
                Piece::End(n) => return Ok(Some(i + n)),
            }
        }
        Ok(None)
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
    fn chunked_bodies_decode_to_their_data_across_splits() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for split in 0..body.len() {
            let (mut c, mut out, mut end) = (Chunks::new(), Vec::new(), None);
            let mut at = 0;
            for part in [&body[..split], &body[split..]] {
                let mut i = 0;
                while i < part.len() && end.is_none() {
                    match c.step(&part[i..]).expect("valid") {
                        Piece::Framing(n) => i += n,
                        Piece::Data(n) => {
                            out.extend_from_slice(&part[i..i + n]);
                            i += n;
                        }
                        Piece::End(n) => end = Some(at + i + n),
                    }
                }
                at += part.len();
            }
            assert_eq!(out, b"hello world", "split at {split}");
            assert_eq!(end, Some(body.len() - 4), "split at {split}");
            assert!(c.is_done());
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

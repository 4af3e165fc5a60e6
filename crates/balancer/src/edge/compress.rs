//! Response compression: gzip and brotli for compressible content types,
//! chosen by the client's `Accept-Encoding`.
//!
//! A response is compressed when its type is on the list (text, JSON,
//! JavaScript, XML, SVG by default — never raster images, which are
//! compressed already), it has no `Content-Encoding`, it is a 200 with a
//! body of at least `min_size` bytes (or of unknown length), and it does
//! not say `Cache-Control: no-transform`. Every response of a
//! compressible type gets `Vary: Accept-Encoding`, compressed or not, so
//! that caches keep the two forms apart.

use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use crate::body::UpBody;

/// A content coding the gateway produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `br`
    Brotli,
    /// `gzip`
    Gzip,
}

impl Coding {
    /// The token in `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// Compression settings.
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// Smallest body compressed, bytes (smaller ones gain nothing).
    pub min_size: u64,
    /// Content types compressed: exact (`application/json`) or a prefix
    /// ending in `/` (`text/`). Parameters (`; charset=`) are ignored.
    pub types: Vec<String>,
    /// Codings offered, in the server's order of preference.
    pub codings: Vec<Coding>,
    /// gzip level, 1..=9.
    pub gzip_level: u32,
    /// brotli quality, 0..=11.
    pub brotli_quality: u32,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            min_size: 1024,
            types: [
                "text/",
                "application/json",
                "application/javascript",
                "application/xml",
                "application/xhtml+xml",
                "application/rss+xml",
                "application/manifest+json",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
            codings: vec![Coding::Brotli, Coding::Gzip],
            // Fast settings: this runs per response on the request path
            // (nginx's default gzip level is 1; brotli 4 is about as fast as
            // gzip 6 and smaller).
            gzip_level: 5,
            brotli_quality: 4,
        }
    }
}

impl CompressOptions {
    /// The coding to use for a client that sent `accept`
    /// (`Accept-Encoding`), or `None` for identity. Honors q-values
    /// (`q=0` refuses a coding) and `*`; among acceptable codings the one
    /// with the highest q wins, ties going to the server's order.
    pub fn negotiate(&self, accept: Option<&HeaderValue>) -> Option<Coding> {
        let accept = accept?.to_str().ok()?;
        let mut star: Option<f32> = None;
        let mut q_of = [None::<f32>; 2];
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for p in parts {
                if let Some(v) = p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")) {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            match token.as_str() {
                "br" => q_of[0] = Some(q),
                "gzip" | "x-gzip" => q_of[1] = Some(q),
                "*" => star = Some(q),
                _ => {}
            }
        }
        let mut best: Option<(Coding, f32)> = None;
        for &c in &self.codings {
            let q = q_of[match c {
                Coding::Brotli => 0,
                Coding::Gzip => 1,
            }]
            .or(star)
            .unwrap_or(0.0);
            if q > 0.0 && best.is_none_or(|(_, bq)| q > bq) {
                best = Some((c, q));
            }
        }
        best.map(|(c, _)| c)
    }

    /// Whether a response with these headers is of a compressible type.
    pub fn compressible_type(&self, h: &HeaderMap) -> bool {
        let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.types.iter().any(|t| {
            if t.ends_with('/') {
                ct.starts_with(t.as_str())
            } else {
                ct == *t
            }
        })
    }

    /// Compresses `resp` with `coding` when it qualifies (see the module
    /// doc); returns the coding used. `head`: the request was a HEAD (its
    /// response has no body to compress).
    pub fn apply(
        &self,
        resp: &mut Response<UpBody>,
        coding: Option<Coding>,
        head: bool,
        metrics: &super::EdgeMetrics,
    ) -> Option<Coding> {
        if !self.compressible_type(resp.headers()) {
            return None;
        }
        let h = resp.headers_mut();
        let varies = h
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*");
        if !varies {
            h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        let coding = coding?;
        let no_transform = h
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("no-transform"));
        let small = h
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n < self.min_size);
        if head
            || resp.status() != StatusCode::OK
            || no_transform
            || small
            || resp.headers().contains_key(header::CONTENT_ENCODING)
            || resp.headers().contains_key(header::CONTENT_RANGE)
        {
            return None;
        }
        let h = resp.headers_mut();
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::ACCEPT_RANGES);
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.token()),
        );
        // The bytes differ now: a strong validator would lie (RFC 9110
        // 8.8.1); nginx weakens it the same way.
        if let Some(etag) = h.get(header::ETAG).cloned() {
            if !etag.as_bytes().starts_with(b"W/") {
                let mut weak = b"W/".to_vec();
                weak.extend_from_slice(etag.as_bytes());
                match HeaderValue::from_bytes(&weak) {
                    Ok(v) => h.insert(header::ETAG, v),
                    Err(_) => h.remove(header::ETAG),
                };
            }
        }
        let body = std::mem::replace(resp.body_mut(), empty());
        *resp.body_mut() = Compressed::new(body, coding, self).boxed();
        match coding {
            Coding::Gzip => &metrics.compressed_gzip,
            Coding::Brotli => &metrics.compressed_br,
        }
        .fetch_add(1, Ordering::Relaxed);
        Some(coding)
    }
}

fn empty() -> UpBody {
    http_body_util::Empty::new().map_err(|e| match e {}).boxed()
}

enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Encoder {
    fn write(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        Ok(match self {
            Encoder::Gzip(e) => {
                e.write_all(data)?;
                std::mem::take(e.get_mut())
            }
            Encoder::Brotli(e) => {
                e.write_all(data)?;
                std::mem::take(e.get_mut())
            }
        })
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Brotli(e) => Ok(e.into_inner()),
        }
    }
}

/// A body compressed as it streams: each upstream chunk goes through the
/// encoder and whatever compressed bytes it has ready go out.
struct Compressed {
    inner: UpBody,
    encoder: Option<Encoder>,
}

impl Compressed {
    fn new(inner: UpBody, coding: Coding, opts: &CompressOptions) -> Compressed {
        let encoder = match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(opts.gzip_level.clamp(1, 9)),
            )),
            Coding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 << 10,
                opts.brotli_quality.min(11),
                22,
            ))),
        };
        Compressed {
            inner,
            encoder: Some(encoder),
        }
    }
}

impl Body for Compressed {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::body::BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(enc) = this.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        // Trailers: not forwarded on a recoded body.
                        continue;
                    };
                    // Writing to a Vec cannot fail.
                    let out = enc.write(&data).unwrap_or_default();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(None) => {
                    let enc = this.encoder.take();
                    let out = enc.map(|e| e.finish().unwrap_or_default());
                    return Poll::Ready(match out {
                        Some(out) if !out.is_empty() => Some(Ok(Frame::data(Bytes::from(out)))),
                        _ => None,
                    });
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use std::io::Read;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn negotiation_follows_q_values_and_server_preference() {
        let o = CompressOptions::default();
        let n = |s: &'static str| o.negotiate(Some(&hv(s)));
        assert_eq!(n("gzip, deflate, br"), Some(Coding::Brotli));
        assert_eq!(n("gzip"), Some(Coding::Gzip));
        assert_eq!(n("br;q=0, gzip"), Some(Coding::Gzip));
        assert_eq!(n("br;q=0.5, gzip;q=0.8"), Some(Coding::Gzip));
        assert_eq!(n("*"), Some(Coding::Brotli));
        assert_eq!(n("*;q=0, gzip;q=0"), None);
        assert_eq!(n("identity"), None);
        assert_eq!(n("deflate"), None);
        assert_eq!(o.negotiate(None), None);
    }

    fn response(ct: &'static str, body: Vec<u8>) -> Response<UpBody> {
        let mut r = Response::new(
            Full::new(Bytes::from(body.clone()))
                .map_err(|e| match e {})
                .boxed(),
        );
        r.headers_mut().insert(header::CONTENT_TYPE, hv(ct));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        r
    }

    async fn bytes(r: Response<UpBody>) -> Vec<u8> {
        r.into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn text_is_compressed_and_images_pass_untouched() {
        let o = CompressOptions::default();
        let m = super::super::EdgeMetrics::default();
        let text: Vec<u8> = (0..4000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        for coding in [Coding::Gzip, Coding::Brotli] {
            let mut r = response("application/json; charset=utf-8", text.clone());
            r.headers_mut().insert(header::ETAG, hv("\"abc\""));
            assert_eq!(o.apply(&mut r, Some(coding), false, &m), Some(coding));
            assert_eq!(r.headers()[header::CONTENT_ENCODING], coding.token());
            assert_eq!(r.headers()[header::VARY], "Accept-Encoding");
            assert_eq!(r.headers()[header::ETAG], "W/\"abc\"");
            assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
            let z = bytes(r).await;
            assert!(z.len() < text.len() / 4, "{} bytes", z.len());
            let mut back = Vec::new();
            match coding {
                Coding::Gzip => {
                    flate2::read::GzDecoder::new(&z[..])
                        .read_to_end(&mut back)
                        .expect("gunzip");
                }
                Coding::Brotli => {
                    brotli::Decompressor::new(&z[..], 4096)
                        .read_to_end(&mut back)
                        .expect("unbrotli");
                }
            }
            assert_eq!(back, text);
        }
        // An image, a small body, an encoded body, a no-transform body, a
        // partial response: untouched.
        let mut img = response("image/jpeg", text.clone());
        assert_eq!(o.apply(&mut img, Some(Coding::Gzip), false, &m), None);
        assert!(img.headers().get(header::VARY).is_none());
        assert_eq!(bytes(img).await, text);
        let mut small = response("text/plain", b"tiny".to_vec());
        assert_eq!(o.apply(&mut small, Some(Coding::Gzip), false, &m), None);
        assert_eq!(small.headers()[header::VARY], "Accept-Encoding");
        let mut enc = response("text/plain", text.clone());
        enc.headers_mut()
            .insert(header::CONTENT_ENCODING, hv("gzip"));
        assert_eq!(o.apply(&mut enc, Some(Coding::Brotli), false, &m), None);
        let mut nt = response("text/plain", text.clone());
        nt.headers_mut()
            .insert(header::CACHE_CONTROL, hv("no-transform"));
        assert_eq!(o.apply(&mut nt, Some(Coding::Brotli), false, &m), None);
        let mut part = response("text/plain", text.clone());
        *part.status_mut() = StatusCode::PARTIAL_CONTENT;
        assert_eq!(o.apply(&mut part, Some(Coding::Brotli), false, &m), None);
        assert_eq!(bytes(part).await, text);
        assert_eq!(m.compressed_gzip.load(Ordering::Relaxed), 1);
        assert_eq!(m.compressed_br.load(Ordering::Relaxed), 1);
    }
}

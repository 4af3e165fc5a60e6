//! The gateway at the edge: what it does to requests and responses on the
//! way through, besides choosing a backend.
//!
//! - [`headers`]: per-route rules that set, add and remove request and
//!   response headers, and `X-Request-Id`.
//! - [`compress`]: gzip and brotli for compressible responses, negotiated
//!   by `Accept-Encoding`.
//! - [`access_log`]: one line per request (combined log format or JSON
//!   lines), written off the request path through a bounded buffer.
//! - [`tls`]: rustls termination with SNI and certificates reloaded on
//!   SIGHUP; HTTP/2 by ALPN.
//!
//! Header rules and compression are per route ([`EdgeRules`], built with
//! the router, so a reload changes them); the access log, TLS and the
//! HTTPS redirect belong to the listener ([`Edge`]).

pub mod access_log;
pub mod compress;
pub mod headers;
pub mod tls;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub use access_log::{AccessLog, LogFormat};
pub use compress::CompressOptions;
pub use headers::HeaderOps;

/// What a route does to the requests it takes and their responses.
#[derive(Debug, Clone, Default)]
pub struct EdgeRules {
    /// Applied to the request before it goes upstream.
    pub request: HeaderOps,
    /// Applied to the response before it goes to the client.
    pub response: HeaderOps,
    /// Give each request an `X-Request-Id` (kept when the client sent
    /// one), passed upstream and returned with the response.
    pub request_id: bool,
    /// Compress compressible responses; `None` = off.
    pub compress: Option<Arc<CompressOptions>>,
}

impl EdgeRules {
    /// Whether the rules change nothing (the relay's fast path may carry
    /// the request; otherwise the full path does).
    pub fn is_passthrough(&self) -> bool {
        self.request.is_empty()
            && self.response.is_empty()
            && !self.request_id
            && self.compress.is_none()
    }
}

/// Listener-wide edge settings.
#[derive(Default)]
pub struct Edge {
    /// Where access log lines go; `None` = no access log.
    pub access_log: Option<Arc<AccessLog>>,
    /// Plain-HTTP requests are answered with a 308 to `https://` on this
    /// port (the gateway's own `/_strata/` pages excepted).
    pub redirect_https: Option<u16>,
    /// Counters.
    pub metrics: EdgeMetrics,
    /// More pages of the gateway's own under `/_strata/` (the web
    /// console); `None` = only status, metrics and admin.
    pub pages: Option<Pages>,
}

/// A page handler the gateway answers itself: the request with its body
/// read whole (at most [`Pages::max_body`] bytes), the answer whole.
pub type PageFn = dyn Fn(
        hyper::Request<bytes::Bytes>,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = hyper::Response<bytes::Bytes>> + Send>>
    + Send
    + Sync;

/// Paths the gateway answers itself with `serve` (beside its own).
#[derive(Clone)]
pub struct Pages {
    /// Whether a path is one of these pages.
    pub owns: fn(&str) -> bool,
    /// Largest body taken; a longer one is answered 413.
    pub max_body: usize,
    /// The handler.
    pub serve: Arc<PageFn>,
}

/// Counters of the edge features, on `/_strata/metrics`.
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    /// Responses compressed, by coding.
    pub compressed_gzip: AtomicU64,
    /// Responses compressed with brotli.
    pub compressed_br: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_errors: AtomicU64,
    /// TLS connections accepted.
    pub tls_connections: AtomicU64,
    /// Requests served over HTTP/2.
    pub h2_requests: AtomicU64,
    /// Plain-HTTP requests redirected to HTTPS.
    pub redirects: AtomicU64,
}

impl Edge {
    /// The edge counters' families and the access log's.
    pub fn families(&self) -> Vec<prom::Family> {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.metrics;
        let mut compressed = prom::Family::counter(
            "strata_gateway_compressed_total",
            "Responses compressed at the edge, by coding.",
        );
        for (coding, v) in [("gzip", &m.compressed_gzip), ("br", &m.compressed_br)] {
            compressed.add(&[("coding", coding)], v.load(Relaxed) as f64);
        }
        let mut out = vec![compressed];
        for (name, help, v) in [
            (
                "strata_gateway_tls_handshake_errors_total",
                "TLS handshakes that failed.",
                &m.tls_handshake_errors,
            ),
            (
                "strata_gateway_tls_connections_total",
                "TLS connections accepted.",
                &m.tls_connections,
            ),
            (
                "strata_gateway_h2_requests_total",
                "Requests that came over HTTP/2.",
                &m.h2_requests,
            ),
            (
                "strata_gateway_https_redirects_total",
                "Plain HTTP requests redirected to HTTPS.",
                &m.redirects,
            ),
        ] {
            out.push(prom::Family::counter(name, help).with(v.load(Relaxed) as f64));
        }
        if let Some(log) = &self.access_log {
            out.extend(log.families());
        }
        out
    }
}

//! A small pooled HTTP/1.1 client for talking to other roles.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::{Error, Result};

/// Pooled keep-alive client with per-request timeouts.
#[derive(Clone)]
pub struct HttpClient {
    /// Boxed: the client carries its HTTP/2 settings inline (hundreds of
    /// bytes), and handles holding an `HttpClient` sit in small enums.
    inner: Box<Client<HttpConnector, Full<Bytes>>>,
    timeout: Duration,
    /// Sent as [`cluster::auth::SECRET_HEADER`] on every request.
    secret: Option<hyper::header::HeaderValue>,
}

/// A response read whole.
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: Bytes,
    /// Headers.
    pub headers: hyper::HeaderMap,
}

impl HttpClient {
    /// A client whose requests (connect + answer) give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(timeout));
        conn.set_nodelay(true);
        let inner = Client::builder(TokioExecutor::new())
            // Below the roles' idle cut-off (`limits.header_timeout_ms`),
            // so a pooled connection is never reused just as the server
            // closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            .build(conn);
        HttpClient {
            inner: Box::new(inner),
            timeout,
            secret: None,
        }
    }

    /// The same client, sending the cluster secret with every request
    /// (internal APIs refuse calls without it when one is configured).
    pub fn with_secret(mut self, secret: Option<&str>) -> Self {
        self.secret = secret.and_then(|s| hyper::header::HeaderValue::from_str(s).ok());
        self
    }

    fn builder(&self, method: Method, url: &str) -> hyper::http::request::Builder {
        let b = Request::builder().method(method).uri(url);
        match &self.secret {
            Some(v) => b.header(cluster::auth::SECRET_HEADER, v.clone()),
            None => b,
        }
    }

    /// Sends one request and reads the whole answer. Transport failures and
    /// timeouts are [`Error::Unavailable`] naming `tier`.
    pub async fn send(
        &self,
        tier: &str,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Reply> {
        let unavailable = |detail: String| Error::Unavailable {
            tier: tier.to_owned(),
            detail,
        };
        let mut b = self.builder(method, url);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let req = b
            .body(Full::new(body))
            .map_err(|e| unavailable(e.to_string()))?;
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unavailable(e.to_string()))?
                .to_bytes();
            Ok(Reply {
                status,
                body,
                headers,
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))?
    }
}

impl HttpClient {
    /// Sends a GET and returns as soon as the response headers arrive; the
    /// body is left to the caller to stream. A non-2xx status is an error.
    pub async fn get_streaming(&self, tier: &str, url: &str) -> Result<hyper::body::Incoming> {
        let unavailable = |detail: String| Error::Unavailable {
            tier: tier.to_owned(),
            detail,
        };
        let req = self
            .builder(Method::GET, url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| unavailable(e.to_string()))?;
        let resp = tokio::time::timeout(self.timeout, self.inner.request(req))
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| unavailable(e.to_string()))?;
        match resp.status() {
            s if s.is_success() => Ok(resp.into_body()),
            StatusCode::NOT_FOUND => Err(Error::NotFound),
            s => Err(unavailable(format!("status {s}"))),
        }
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Bytes a query-string value keeps as they are: RFC 3986's unreserved.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query-string value (everything but unreserved bytes).
pub fn encode_query(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// The `error` field of a JSON error body (`{"error": ..., "detail": ...}`),
/// borrowed from the body (no JSON tree is built).
fn error_code(body: &[u8]) -> Option<&str> {
    #[derive(serde::Deserialize)]
    struct ErrorBody<'a> {
        #[serde(borrow)]
        error: &'a str,
    }
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|e| e.error)
}

/// Maps a non-2xx reply to an error: 404 -> NotFound, 507 -> Full, a
/// corrupt needle -> Corrupt, other 5xx -> Unavailable.
pub fn check(tier: &str, r: &Reply) -> Result<()> {
    if r.status.is_success() {
        return Ok(());
    }
    let detail = format!("{}: {}", r.status, String::from_utf8_lossy(&r.body));
    Err(match r.status {
        StatusCode::NOT_FOUND => Error::NotFound,
        StatusCode::INSUFFICIENT_STORAGE => Error::Full {
            tier: tier.to_owned(),
            detail,
        },
        StatusCode::INTERNAL_SERVER_ERROR if error_code(&r.body) == Some("corrupt") => {
            Error::Corrupt {
                tier: tier.to_owned(),
                detail,
            }
        }
        s if s.is_server_error() => Error::Unavailable {
            tier: tier.to_owned(),
            detail,
        },
        _ => Error::Rejected {
            tier: tier.to_owned(),
            detail,
        },
    })
}

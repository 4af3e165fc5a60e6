//! The pooled HTTP/1.1 client under the internal roles' clients
//! (`index::client`, `store::client`, `queue::client`, `search::client`):
//! one member's base URL, keep-alive connections, a deadline per call, an
//! optional header on every call (the cluster secret), and the
//! `{error, detail}` body every strata API refuses with ([`Refusal`]). Each client keeps its own paths,
//! bodies and error mapping; this crate only carries bytes.
//!
//! Transport failures and missed deadlines are a `String` saying what
//! happened, for the caller to wrap in its own error enum; this crate has
//! none of its own.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// One member at `base`, with pooled keep-alive connections.
#[derive(Clone)]
pub struct Rpc {
    base: String,
    /// Boxed: the client carries its HTTP/2 settings inline (hundreds of
    /// bytes), and handles holding an `Rpc` sit in small enums.
    http: Box<Client<HttpConnector, Full<Bytes>>>,
    timeout: Duration,
    header: Option<(HeaderName, HeaderValue)>,
}

/// An answer read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// What a refusing answer said: its status, and the `error` code and
/// `detail` of its JSON body (the raw body as detail when it is not one).
#[derive(Debug, Clone)]
pub struct Refusal {
    /// HTTP status.
    pub status: StatusCode,
    /// The error code (`not_found`, `corrupt`, `full`, ...), or empty.
    pub code: String,
    /// What it said.
    pub detail: String,
}

impl Reply {
    /// The refusal this answer is (meaningful when it is not a 2xx).
    pub fn refusal(&self) -> Refusal {
        #[derive(serde::Deserialize)]
        struct Body {
            error: String,
            #[serde(default)]
            detail: String,
        }
        let (code, detail) = match serde_json::from_slice::<Body>(&self.body) {
            Ok(b) => (b.error, b.detail),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(&self.body).into_owned(),
            ),
        };
        Refusal {
            status: self.status,
            code,
            detail,
        }
    }

    /// Header `name` as a number.
    pub fn number(&self, name: &str) -> Option<u64> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }
}

impl Rpc {
    /// A client of the member at `base` (`http://host:port`) whose calls
    /// (connect and answer) give up after `timeout`.
    pub fn new(base: impl Into<String>, timeout: Duration) -> Rpc {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(timeout));
        conn.set_nodelay(true);
        Rpc {
            base: base.into(),
            // Idle connections go before the member's own idle cut-off.
            http: Box::new(
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(5))
                    .build(conn),
            ),
            timeout,
            header: None,
        }
    }

    /// The same client sending `name: value` with every call (the cluster
    /// secret); `None`, or a value that is not a valid header, sends
    /// nothing.
    pub fn with_header(mut self, name: &'static str, value: Option<&str>) -> Rpc {
        self.header = value
            .and_then(|v| HeaderValue::from_str(v).ok())
            .map(|v| (HeaderName::from_static(name), v));
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some((n, v)) = &self.header {
            b = b.header(n, v);
        }
        for (n, v) in headers {
            b = b.header(n, v);
        }
        b.body(Full::new(body)).map_err(|e| e.to_string())
    }

    /// Sends one call and reads the whole answer, within the timeout plus
    /// `wait` (a call the server holds on purpose, like a reservation).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, String)],
        body: Bytes,
        wait: Duration,
    ) -> Result<Reply, String> {
        let req = self.request(method, path, headers, body)?;
        let call = async {
            let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let limit = self.timeout + wait;
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| format!("no answer within {limit:?}"))?
    }

    /// A GET whose answer's headers have arrived and whose body is the
    /// caller's to stream.
    pub async fn open(&self, path: &str) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let req = self.request(Method::GET, path, &[], Bytes::new())?;
        tokio::time::timeout(self.timeout, self.http.request(req))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &'static str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).expect("status"),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn a_refusal_reads_strata_error_bodies_and_keeps_any_other_body_whole() {
        let f = reply(507, r#"{"error":"full","detail":"store full: 10 of 10"}"#).refusal();
        assert_eq!((f.status.as_u16(), f.code.as_str()), (507, "full"));
        assert_eq!(f.detail, "store full: 10 of 10");
        let f = reply(502, "Bad Gateway from a proxy").refusal();
        assert_eq!(
            (f.code.as_str(), f.detail.as_str()),
            ("", "Bad Gateway from a proxy")
        );
    }

    #[tokio::test]
    async fn a_member_that_is_not_there_is_a_transport_error_not_an_answer() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let c = Rpc::new(format!("http://{addr}"), Duration::from_secs(2));
        let r = c
            .call(Method::GET, "/healthz", &[], Bytes::new(), Duration::ZERO)
            .await;
        assert!(r.is_err(), "{r:?}");
    }
}

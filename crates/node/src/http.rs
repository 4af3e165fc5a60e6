//! A small pooled HTTP/1.1 client for the public API (`strata import`);
//! the internal roles' clients live beside their servers (`index::client`,
//! `store::client`, `queue::client`, `search::client`).

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
        }
    }

    fn builder(&self, method: Method, url: &str) -> hyper::http::request::Builder {
        Request::builder().method(method).uri(url)
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

//! A small HTTP client for tests.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Resp {
    /// A header as a string ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Pooled client against one base URL.
#[derive(Clone)]
pub struct Client {
    base: String,
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: impl Into<String>) -> Self {
        let inner = HyperClient::builder(TokioExecutor::new()).build(HttpConnector::new());
        Client {
            base: base.into(),
            inner,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; `path` starts with `/`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Resp> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body.into()))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.inner.request(req)).await??;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// GET.
    pub async fn get(&self, path: &str) -> anyhow::Result<Resp> {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    /// PUT with a body.
    pub async fn put(&self, path: &str, body: impl Into<Bytes>) -> anyhow::Result<Resp> {
        self.send(Method::PUT, path, &[], body).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Resp> {
        self.send(Method::DELETE, path, &[], Bytes::new()).await
    }

    /// The value of one series on `GET /metrics` (e.g.
    /// `strata_store_reads_total`), 0 when absent.
    pub async fn metric(&self, series: &str) -> anyhow::Result<u64> {
        let text = String::from_utf8_lossy(&self.get("/metrics").await?.body).into_owned();
        Ok(metric_value(&text, series).unwrap_or(0))
    }

    /// Polls `GET path` until it answers 200, for at most `limit`.
    pub async fn wait_ready(&self, path: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(r) = self.get(path).await {
                if r.status.is_success() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("{}{path} not ready within {limit:?}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The value of `series` (name plus labels, exactly as printed) in
/// Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

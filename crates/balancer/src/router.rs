//! L7 routes: rules by path prefix, method and header pick the pool a
//! request goes to (for example writes to one pool, `/v1/search` to
//! another), with a default pool. Each pool is a [`Gateway`] of its own
//! (backends, health, limits, upstream connections).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::proxy::{handle, spawn_checks, Gateway};

/// One rule; all its given conditions must hold.
#[derive(Debug, Clone)]
pub struct Route {
    /// The path starts with this.
    pub prefix: String,
    /// The method is this (any when `None`).
    pub method: Option<Method>,
    /// This header has this value (any when `None`).
    pub header: Option<(HeaderName, String)>,
    /// Index of the pool it sends to.
    pub pool: usize,
}

impl Route {
    fn matches(&self, req: &Request<Incoming>) -> bool {
        req.uri().path().starts_with(&self.prefix)
            && self.method.as_ref().is_none_or(|m| req.method() == m)
            && self.header.as_ref().is_none_or(|(n, v)| {
                req.headers().get(n).and_then(|x| x.to_str().ok()) == Some(v.as_str())
            })
    }
}

/// Pools and the rules that choose among them; the first matching rule
/// wins, else the default pool (the first).
pub struct Router {
    /// (name, gateway) per pool.
    pub pools: Vec<(String, Arc<Gateway>)>,
    /// Rules, in order.
    pub routes: Vec<Route>,
}

impl Router {
    /// The pool for `req`.
    pub fn choose(&self, req: &Request<Incoming>) -> &Arc<Gateway> {
        let i = self
            .routes
            .iter()
            .find(|r| r.matches(req))
            .map_or(0, |r| r.pool);
        &self.pools[i.min(self.pools.len() - 1)].1
    }

    fn render(&self, status: bool) -> String {
        let mut out = String::new();
        for (name, gw) in &self.pools {
            if status {
                out.push_str(&format!("<h2>pool {name}</h2>"));
                out.push_str(&gw.status_page());
            } else {
                out.push_str(&format!("# pool {name}\n"));
                gw.render_metrics(&mut out);
            }
        }
        out
    }
}

/// Serves the routed pools on `listener` until `shutdown` resolves.
pub async fn serve_routed(
    listener: TcpListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    for (_, gw) in &router.pools {
        spawn_checks(gw);
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            acc = listener.accept() => {
                let Ok((stream, peer)) = acc else { continue };
                let _ = stream.set_nodelay(true);
                let router = router.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let router = router.clone();
                        async move {
                            let path = req.uri().path();
                            if path == "/_strata/status" || path == "/_strata/metrics" {
                                let html = path.ends_with("status");
                                let mut r = crate::proxy::plain(StatusCode::OK, &router.render(html));
                                if html {
                                    r.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
                                }
                                return Ok::<_, Infallible>(r);
                            }
                            let gw = router.choose(&req).clone();
                            Ok(handle(gw, req, peer).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

//! The gateway at the edge, end to end over real sockets: TLS with SNI and
//! certificate reload, HTTP/2 over TLS (ALPN) and h2c, header rules and
//! request ids, compression negotiation, the HTTPS redirect, and access
//! log lines parsed back.
//!
//! Rules and the redirect are in `rules`; the access log and connection
//! limits in `conns`. One test binary: each more would be another link.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use balancer::edge::access_log::{AccessLog, LogFormat, Sink};
use balancer::edge::tls::{CertPair, Tls};
use balancer::edge::{CompressOptions, Edge, EdgeRules, HeaderOps};
use balancer::router::ClientLimits;
use balancer::GatewayOptions;
use balancer::{Algorithm, HealthOptions, Live, PoolSpec, Route};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

mod conns;
mod rules;

/// A backend that answers by path: `/img/*` a 4 KiB JPEG, `/text/*` 20 KB
/// of text, anything else a short text; every response echoes what the
/// gateway sent upstream in `x-seen-*` headers and says `Server: backend`.
async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_owned();
                        if path.starts_with("/chunked/") || path.starts_with("/big/") {
                            // 300 KB in 3 pieces, of unknown total length
                            // (chunked framing) or with a Content-Length
                            // too long for one read.
                            let parts = (0..3u8)
                                .map(|i| Bytes::from(vec![b'a' + i; 100_000]))
                                .collect();
                            let sized = path.starts_with("/big/");
                            let r = Response::new(Pieces { parts, sized }.boxed());
                            return Ok::<_, Infallible>(r);
                        }
                        let (ct, body): (&str, Vec<u8>) = if path.starts_with("/img/") {
                            ("image/jpeg", vec![0xAB; 4096])
                        } else if path.starts_with("/text/") {
                            (
                                "text/plain; charset=utf-8",
                                (0..2000)
                                    .flat_map(|i| format!("row {i:05}\n").into_bytes())
                                    .collect(),
                            )
                        } else {
                            ("text/plain", b"hello".to_vec())
                        };
                        let mut r = Response::new(
                            Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed(),
                        );
                        let h = r.headers_mut();
                        h.insert("content-type", ct.parse().expect("ct"));
                        h.insert("server", "backend".parse().expect("v"));
                        h.insert(
                            "x-seen-version",
                            format!("{:?}", req.version()).parse().expect("v"),
                        );
                        for (name, seen) in [
                            ("x-forwarded-proto", "x-seen-proto"),
                            ("x-request-id", "x-seen-request-id"),
                            ("x-tenant", "x-seen-tenant"),
                            ("x-debug", "x-seen-debug"),
                        ] {
                            if let Some(v) = req.headers().get(name) {
                                h.insert(seen, v.clone());
                            }
                        }
                        Ok(r)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A body sent in pieces, with or without its total size known.
struct Pieces {
    parts: std::collections::VecDeque<Bytes>,
    sized: bool,
}

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(
            self.parts
                .pop_front()
                .map(|b| Ok(hyper::body::Frame::data(b))),
        )
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.sized {
            hyper::body::SizeHint::with_exact(self.parts.iter().map(|p| p.len() as u64).sum())
        } else {
            hyper::body::SizeHint::default()
        }
    }
}

/// Edge rules for the tests' `/text/` and `/img/` routes.
fn rules() -> (EdgeRules, EdgeRules, EdgeRules) {
    let global = EdgeRules {
        request: HeaderOps::parse("g", &[], &["X-Tenant: acme".into()], &["x-debug".into()])
            .expect("ops"),
        response: HeaderOps::parse("g", &[], &[], &["server".into()]).expect("ops"),
        request_id: true,
        compress: None,
    };
    let images = EdgeRules {
        response: global.response.then(
            &HeaderOps::parse(
                "img",
                &["Cache-Control: public, max-age=31536000, immutable".into()],
                &[],
                &[],
            )
            .expect("ops"),
        ),
        compress: Some(Arc::new(CompressOptions::default())),
        ..global.clone()
    };
    let text = EdgeRules {
        compress: Some(Arc::new(CompressOptions::default())),
        ..global.clone()
    };
    (global, images, text)
}

struct Gw {
    plain: SocketAddr,
    tls: SocketAddr,
    live: Arc<Live>,
    certs: Arc<Tls>,
}

/// A gateway with a plain and a TLS listener in front of one backend.
async fn gateway(pairs: Vec<CertPair>, edge: Edge, edge_rules: bool) -> Gw {
    let b = backend().await;
    let (global, images, text) = if edge_rules {
        rules()
    } else {
        Default::default()
    };
    let router = balancer::router::build(
        vec![PoolSpec {
            name: "imgs".into(),
            backends: vec![(b, 1)],
            algorithm: Algorithm::RoundRobin,
            health: HealthOptions {
                check_interval: Duration::ZERO,
                ..HealthOptions::default()
            },
            options: GatewayOptions::default(),
        }],
        vec![
            Route {
                prefix: "/img/".into(),
                method: None,
                header: None,
                pool: 0,
                rules: Arc::new(images),
            },
            Route {
                prefix: "/text/".into(),
                method: None,
                header: None,
                pool: 0,
                rules: Arc::new(text),
            },
        ],
        global,
        None,
        &balancer::gateway::upstream(Duration::from_secs(1)),
    )
    .expect("router");
    let live = Live::with_edge(router, None, ClientLimits::default(), edge);
    let certs = Tls::new(pairs).expect("certs");
    let pl = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tl = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (plain, tls) = (pl.local_addr().expect("a"), tl.local_addr().expect("a"));
    tokio::spawn(balancer::serve_routed(
        pl,
        live.clone(),
        std::future::pending(),
    ));
    tokio::spawn(balancer::serve_tls(
        tl,
        live.clone(),
        certs.clone(),
        std::future::pending(),
    ));
    Gw {
        plain,
        tls,
        live,
        certs,
    }
}

/// A self-signed certificate for `names`, written as PEM files in `dir`.
fn cert(dir: &Path, tag: &str, names: &[&str]) -> (CertPair, CertificateDer<'static>) {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("cert");
    let pair = CertPair {
        cert: dir.join(format!("{tag}.pem")),
        key: dir.join(format!("{tag}.key")),
    };
    std::fs::write(&pair.cert, c.cert.pem()).expect("write");
    std::fs::write(&pair.key, c.signing_key.serialize_pem()).expect("write");
    (pair, c.cert.der().clone())
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("strata-edge-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

/// A TLS connection that trusts only `root`, offering `alpn`; returns the
/// stream and the certificate the server presented.
async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("root");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_owned()).expect("name");
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let presented = s.get_ref().1.peer_certificates().expect("certs")[0].clone();
    (s, presented)
}

type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn h2_over<I>(io: I) -> H2
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

async fn fetch(
    send: &mut H2,
    uri: &str,
    headers: &[(&str, &str)],
) -> (hyper::http::response::Parts, Vec<u8>) {
    let mut req = Request::get(uri);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    send.ready().await.expect("ready");
    let resp = send
        .send_request(req.body(Empty::new()).expect("req"))
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    (
        parts,
        body.collect().await.expect("body").to_bytes().to_vec(),
    )
}

#[tokio::test]
async fn tls_with_sni_serves_http2_and_many_images_on_one_connection() {
    let dir = scratch("sni");
    let (a, a_der) = cert(&dir, "a", &["a.test"]);
    let (b, b_der) = cert(&dir, "b", &["b.test", "*.b.test"]);
    let gw = gateway(vec![a, b], Edge::default(), true).await;

    // SNI picks the certificate valid for the name; an unknown name gets
    // the first (the default), which a client for that name then refuses.
    let (_, got) = tls_connect(gw.tls, "img.b.test", &b_der, &[b"h2"]).await;
    assert_eq!(got, b_der);
    let (s, got) = tls_connect(gw.tls, "a.test", &a_der, &[b"h2"]).await;
    assert_eq!(got, a_der);
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // A page of 50 thumbnails, multiplexed on this one HTTP/2 connection.
    let send = h2_over(s).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let mut send = send.clone();
        tasks.spawn(async move {
            let (parts, body) = fetch(&mut send, &format!("https://a.test/img/{i}.jpg"), &[]).await;
            (parts, body)
        });
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        let (parts, body) = r.expect("task");
        assert_eq!(parts.status, 200);
        assert_eq!(parts.version, hyper::Version::HTTP_2);
        assert_eq!(body, vec![0xAB; 4096]);
        // HTTP/1.1 to the backend, which saw the client came over TLS.
        assert_eq!(parts.headers["x-seen-version"], "HTTP/1.1");
        assert_eq!(parts.headers["x-seen-proto"], "https");
        n += 1;
    }
    assert_eq!(n, 50);
    // Large bodies stream from the backend: chunked and sized.
    let mut more = send.clone();
    for path in ["/chunked/a", "/big/a"] {
        let (parts, body) = fetch(&mut more, &format!("https://a.test{path}"), &[]).await;
        assert_eq!(parts.status, 200, "{path}");
        assert_eq!(body.len(), 300_000, "{path}");
        assert!(body[..100_000].iter().all(|&c| c == b'a'), "{path}");
        assert!(body[200_000..].iter().all(|&c| c == b'c'), "{path}");
        if path == "/big/a" {
            assert_eq!(parts.headers["content-length"], "300000");
        }
    }
    let m = &gw.live.edge.metrics;
    assert!(m.tls_connections.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    assert_eq!(m.h2_requests.load(std::sync::atomic::Ordering::Relaxed), 52);

    // HTTP/1.1 over TLS when the client offers only that.
    let (s, _) = tls_connect(gw.tls, "a.test", &a_der, &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let r = send
        .send_request(
            Request::get("/hello")
                .header("host", "a.test")
                .body(Empty::<Bytes>::new())
                .expect("req"),
        )
        .await
        .expect("resp");
    assert_eq!(r.version(), hyper::Version::HTTP_11);
    assert_eq!(r.headers()["x-seen-proto"], "https");

    // A client that does not speak TLS is cut off and counted.
    let mut raw = TcpStream::connect(gw.tls).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut buf).await;
    assert!(!buf.starts_with(b"HTTP/"));
    assert!(
        m.tls_handshake_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_certificate_reload_serves_new_handshakes_and_keeps_open_connections() {
    let dir = scratch("reload");
    let (old, old_der) = cert(&dir, "site", &["img.test"]);
    let gw = gateway(vec![old.clone()], Edge::default(), false).await;
    let (s, got) = tls_connect(gw.tls, "img.test", &old_der, &[b"h2"]).await;
    assert_eq!(got, old_der);
    let mut open = h2_over(s).await;
    assert_eq!(
        fetch(&mut open, "https://img.test/x", &[]).await.0.status,
        200
    );

    // The files are replaced in place (as a renewal does) and reloaded.
    let (_, new_der) = cert(&dir, "site", &["img.test"]);
    gw.certs.reload(None).expect("reload");
    let (_, got) = tls_connect(gw.tls, "img.test", &new_der, &[b"h2"]).await;
    assert_eq!(got, new_der);
    // The connection opened before the reload goes on working.
    assert_eq!(
        fetch(&mut open, "https://img.test/y", &[]).await.0.status,
        200
    );

    // A broken key file is refused and the running certificate stays.
    std::fs::write(&old.key, "not a key").expect("write");
    assert!(gw.certs.reload(None).is_err());
    let (_, got) = tls_connect(gw.tls, "img.test", &new_der, &[b"h2"]).await;
    assert_eq!(got, new_der);
    // A key that belongs to another certificate is refused too.
    let (other, _) = cert(&dir, "other", &["img.test"]);
    let mismatched = CertPair {
        cert: dir.join("site.pem"),
        key: other.key,
    };
    let e = gw
        .certs
        .reload(Some(vec![mismatched]))
        .expect_err("mismatch");
    assert!(e.to_string().contains("does not match"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn h2c_prior_knowledge_works_on_the_plain_listener() {
    let dir = scratch("h2c");
    let (a, _) = cert(&dir, "a", &["a.test"]);
    let gw = gateway(vec![a], Edge::default(), false).await;
    let mut send = h2_over(TcpStream::connect(gw.plain).await.expect("connect")).await;
    for i in 0..3 {
        let (parts, body) = fetch(&mut send, &format!("http://x/img/{i}"), &[]).await;
        assert_eq!(parts.version, hyper::Version::HTTP_2);
        assert_eq!(parts.headers["x-seen-proto"], "http");
        assert_eq!(body.len(), 4096);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 request on a new plain connection; the raw response.
async fn h1(addr: SocketAddr, head: &str) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    let mut body = buf.split_off(at);
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (head, body)
}

/// The payload of a chunked body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = std::str::from_utf8(&raw[..eol]).expect("utf8");
        let size = usize::from_str_radix(size.split(';').next().expect("size").trim(), 16)
            .expect("hex size");
        raw = &raw[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

//! The gateway at the edge, end to end over real sockets: TLS with SNI and
//! certificate reload, HTTP/2 over TLS (ALPN) and h2c, header rules and
//! request ids, compression negotiation, the HTTPS redirect, and access
//! log lines parsed back.

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

#[tokio::test]
async fn header_rules_request_ids_and_compression_per_route() {
    let dir = scratch("rules");
    let (a, _) = cert(&dir, "a", &["a.test"]);
    let gw = gateway(vec![a], Edge::default(), true).await;

    // Images: Cache-Control set, Server removed, request headers changed
    // upstream, a request id made and returned; never compressed, but
    // never marked Vary either (they cannot be).
    let (head, body) = h1(
        gw.plain,
        "GET /img/cat.jpg HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip, br\r\nX-Debug: 1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("cache-control: public, max-age=31536000, immutable"),
        "{head}"
    );
    assert!(!head.contains("server:"), "{head}");
    assert!(head.contains("x-seen-tenant: acme"), "{head}");
    assert!(!head.contains("x-seen-debug"), "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(!head.contains("vary"), "{head}");
    assert_eq!(body, vec![0xAB; 4096]);
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("request id")
        .to_owned();
    assert_eq!(id.len(), 32);
    assert!(head.contains(&format!("x-seen-request-id: {id}")), "{head}");

    // A client's own request id is kept and passed upstream.
    let (head, _) = h1(
        gw.plain,
        "GET /hello HTTP/1.1\r\nHost: a\r\nX-Request-Id: trace-42\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.contains("x-request-id: trace-42"), "{head}");
    assert!(head.contains("x-seen-request-id: trace-42"), "{head}");
    // The default rules have no Cache-Control.
    assert!(!head.contains("cache-control"), "{head}");

    // Text: brotli preferred, gzip when that is all the client takes,
    // identity (with Vary) when it takes neither.
    let text: Vec<u8> = (0..2000)
        .flat_map(|i| format!("row {i:05}\n").into_bytes())
        .collect();
    for (accept, coding) in [
        ("gzip, deflate, br", "br"),
        ("gzip", "gzip"),
        ("identity", ""),
    ] {
        let (head, body) = h1(
            gw.plain,
            &format!("GET /text/a HTTP/1.1\r\nHost: a\r\nAccept-Encoding: {accept}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(head.contains("vary: accept-encoding"), "{head}");
        let mut plain = Vec::new();
        match coding {
            "br" => {
                assert!(head.contains("content-encoding: br"), "{head}");
                brotli::Decompressor::new(&body[..], 4096)
                    .read_to_end(&mut plain)
                    .expect("unbrotli");
            }
            "gzip" => {
                assert!(head.contains("content-encoding: gzip"), "{head}");
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut plain)
                    .expect("gunzip");
            }
            _ => {
                assert!(!head.contains("content-encoding"), "{head}");
                plain = body.clone();
            }
        }
        assert_eq!(plain, text, "{accept}");
        if !coding.is_empty() {
            assert!(
                body.len() < text.len() / 3,
                "{accept}: {} bytes",
                body.len()
            );
        }
    }
    // The same over HTTP/2 (compressed bodies need no Content-Length).
    let mut send = h2_over(TcpStream::connect(gw.plain).await.expect("connect")).await;
    let (parts, body) = fetch(&mut send, "http://a/text/b", &[("accept-encoding", "gzip")]).await;
    assert_eq!(parts.headers["content-encoding"], "gzip");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut plain)
        .expect("gunzip");
    assert_eq!(plain, text);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn plain_http_redirects_to_https_but_not_the_gateway_pages() {
    let dir = scratch("redirect");
    let (a, _) = cert(&dir, "a", &["a.test"]);
    let edge = Edge {
        redirect_https: Some(8443),
        ..Edge::default()
    };
    let gw = gateway(vec![a], edge, false).await;
    let (head, _) = h1(
        gw.plain,
        "GET /img/cat.jpg?w=100 HTTP/1.1\r\nHost: img.example.com:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 308"), "{head}");
    assert!(
        head.contains("location: https://img.example.com:8443/img/cat.jpg?w=100"),
        "{head}"
    );
    let (head, _) = h1(gw.plain, "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 400"), "{head}");
    let (head, body) = h1(
        gw.plain,
        "GET /_strata/metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("strata_gateway_https_redirects_total 1"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn access_log_lines_parse_back_for_both_paths_and_both_formats() {
    for format in [LogFormat::Json, LogFormat::Combined] {
        let dir = scratch(&format!("log-{format:?}"));
        let (a, a_der) = cert(&dir, "a", &["a.test"]);
        let path = dir.join("access.log");
        let log =
            Arc::new(AccessLog::open(Sink::File(path.clone()), format, 1 << 20).expect("log"));
        let edge = Edge {
            access_log: Some(log.clone()),
            ..Edge::default()
        };
        let gw = gateway(vec![a], edge, false).await;
        // The fast path (plain HTTP/1.1, no rules on the default route).
        let (head, _) = h1(
            gw.plain,
            "GET /hello?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: probe \"1\"\r\nReferer: http://r/\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        // The full path: HTTP/2 over TLS.
        let (s, _) = tls_connect(gw.tls, "a.test", &a_der, &[b"h2"]).await;
        let mut send = h2_over(s).await;
        fetch(
            &mut send,
            "https://a.test/img/1.jpg",
            &[("user-agent", "h2client")],
        )
        .await;
        log.flush();
        let text = std::fs::read_to_string(&path).expect("read log");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        match format {
            LogFormat::Json => {
                let a: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
                assert_eq!(a["method"], "GET");
                assert_eq!(a["target"], "/hello?x=1");
                assert_eq!(a["protocol"], "HTTP/1.1");
                assert_eq!(a["status"], 200);
                assert_eq!(a["bytes"], 5);
                assert_eq!(a["user_agent"], "probe \"1\"");
                assert_eq!(a["referer"], "http://r/");
                assert_eq!(a["pool"], "imgs");
                assert!(a["upstream"]
                    .as_str()
                    .expect("upstream")
                    .starts_with("127.0.0.1:"));
                assert!(
                    a["request_time"].as_f64().expect("rt")
                        >= a["upstream_time"].as_f64().expect("urt")
                );
                let b: serde_json::Value = serde_json::from_str(lines[1]).expect("json");
                assert_eq!(b["protocol"], "HTTP/2.0");
                assert_eq!(b["target"], "/img/1.jpg");
                assert_eq!(b["bytes"], 4096);
                assert_eq!(b["user_agent"], "h2client");
            }
            LogFormat::Combined => {
                // host ident user [time] "request" status bytes "referer" "ua" …
                let re = |l: &str| -> Vec<String> {
                    let mut out = Vec::new();
                    let mut rest = l;
                    while !rest.is_empty() {
                        rest = rest.trim_start();
                        let (field, tail) = match rest.as_bytes()[0] {
                            b'"' => {
                                let end = rest[1..].find('"').expect("quote") + 1;
                                (&rest[1..end], &rest[end + 1..])
                            }
                            b'[' => {
                                let end = rest.find(']').expect("bracket");
                                (&rest[1..end], &rest[end + 1..])
                            }
                            _ => match rest.find(' ') {
                                Some(i) => (&rest[..i], &rest[i..]),
                                None => (rest, ""),
                            },
                        };
                        out.push(field.to_owned());
                        rest = tail;
                    }
                    out
                };
                let a = re(lines[0]);
                assert_eq!(a[0], "127.0.0.1");
                assert!(a[3].ends_with(" +0000"), "{a:?}");
                assert_eq!(a[4], "GET /hello?x=1 HTTP/1.1");
                assert_eq!(a[5], "200");
                assert_eq!(a[6], "5");
                assert_eq!(a[7], "http://r/");
                assert_eq!(a[8], "probe \\x221\\x22");
                assert!(
                    lines[0].contains(" pool=\"imgs\" upstream=\"127.0.0.1:"),
                    "{}",
                    lines[0]
                );
                let b = re(lines[1]);
                assert_eq!(b[4], "GET /img/1.jpg HTTP/2.0");
                assert_eq!(b[6], "4096");
            }
        }
        let mut metrics = String::new();
        gw.live.edge.render_metrics(&mut metrics);
        assert!(
            metrics.contains("strata_gateway_access_log_lines_total 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("strata_gateway_access_log_dropped_total 0"),
            "{metrics}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test]
async fn a_backend_that_closed_its_kept_alive_connection_costs_no_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers one request per connection, then closes it without saying
    // so (as an idle timeout would): the gateway's pooled connection is
    // dead when the next request takes it.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let b = l.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    let router = balancer::router::build(
        vec![PoolSpec {
            name: "one".into(),
            backends: vec![(b, 1)],
            algorithm: Algorithm::RoundRobin,
            health: HealthOptions {
                check_interval: Duration::ZERO,
                ..HealthOptions::default()
            },
            options: GatewayOptions::default(),
        }],
        Vec::new(),
        EdgeRules::default(),
        None,
        &balancer::gateway::upstream(Duration::from_secs(1)),
    )
    .expect("router");
    let live = Live::new(router, None);
    let pl = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let plain = pl.local_addr().expect("addr");
    tokio::spawn(balancer::serve_routed(
        pl,
        live.clone(),
        std::future::pending(),
    ));
    // HTTP/2 (the full path and its upstream client), one request at a
    // time so each finds the previous one's dead connection in the pool.
    let mut send = h2_over(TcpStream::connect(plain).await.expect("connect")).await;
    for i in 0..5 {
        let (parts, body) = fetch(&mut send, &format!("http://x/{i}"), &[]).await;
        assert_eq!(parts.status, 200, "request {i}");
        assert_eq!(body, b"ok");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
    let pool = live.router().pools[0].1.pool();
    assert_eq!(
        pool.backends[0]
            .failures
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "a stale pooled connection is not a backend failure"
    );
}

#[tokio::test]
async fn a_tls_handshake_must_finish_within_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = scratch("handshake");
    let (a, _) = cert(&dir, "a", &["a.test"]);
    let b = backend().await;
    let router = balancer::router::build(
        vec![PoolSpec {
            name: "one".into(),
            backends: vec![(b, 1)],
            algorithm: Algorithm::RoundRobin,
            health: HealthOptions {
                check_interval: Duration::ZERO,
                ..HealthOptions::default()
            },
            options: GatewayOptions::default(),
        }],
        Vec::new(),
        EdgeRules::default(),
        None,
        &balancer::gateway::upstream(Duration::from_secs(1)),
    )
    .expect("router");
    let limits = ClientLimits {
        header_timeout: Duration::from_millis(200),
        ..ClientLimits::default()
    };
    let live = Live::with_edge(router, None, limits, Edge::default());
    let tl = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tl.local_addr().expect("addr");
    let certs = Tls::new(vec![a]).expect("certs");
    tokio::spawn(balancer::serve_tls(
        tl,
        live.clone(),
        certs,
        std::future::pending(),
    ));
    // A client that connects and never says hello is cut off (a slowloris
    // on the handshake), well before the test's own bound.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("closed by the gateway within the header timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing is sent to a client that never said hello");
    let m = &live.edge.metrics;
    assert_eq!(
        m.tls_handshake_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        m.tls_connections.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

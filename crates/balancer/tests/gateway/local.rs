//! Backends in the gateway's own process: requests handed over as values,
//! and reads answered directly.

use super::*;

/// Backends served in the gateway's own process are handed each request
/// directly: nothing listens at their addresses, yet every request is
/// answered, spread over both, with the gateway's own headers added and
/// the request body passed along, on the relay's port (which hands such
/// connections to the full path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_in_this_process_are_handed_requests_without_http() {
    use balancer::{body::send_body, direct::LocalService};
    use http_body_util::BodyExt;
    // Two addresses nobody listens on.
    let silent: Vec<SocketAddr> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .expect("bind")
                .local_addr()
                .expect("addr")
        })
        .collect();
    let h = HealthOptions {
        check_interval: Duration::ZERO,
        ..HealthOptions::default()
    };
    let gw = Gateway::new(
        Arc::new(
            Pool::new(
                silent.iter().map(|a| Backend::new(*a, 1)).collect(),
                Algorithm::RoundRobin,
                h,
            )
            .expect("pool"),
        ),
        GatewayOptions::default(),
    );
    let mut local = std::collections::HashMap::new();
    for (i, a) in silent.iter().enumerate() {
        let svc: LocalService = Arc::new(move |req: hyper::Request<balancer::body::UpBody>| {
            Box::pin(async move {
                let xff = req
                    .headers()
                    .get("x-forwarded-for")
                    .map(|v| v.to_str().unwrap_or("").to_owned())
                    .unwrap_or_default();
                let target = req.uri().to_string();
                let body = req.into_body().collect().await.expect("body").to_bytes();
                let text = format!(
                    "local {i} {target} xff={xff} body={}",
                    String::from_utf8_lossy(&body)
                );
                hyper::Response::new(send_body(http_body_util::Full::new(bytes::Bytes::from(
                    text,
                ))))
            })
        });
        local.insert(
            *a,
            balancer::direct::LocalBackend {
                service: svc,
                reads: None,
            },
        );
    }
    gw.set_local(local);
    assert!(gw.has_local());
    let at = serve_pool(&gw).await;
    let mut seen = [0usize; 2];
    for _ in 0..10 {
        let r = get(
            at,
            "GET /v1/blobs/a?w=1 HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("/v1/blobs/a?w=1 xff=127.0.0.1 body="), "{r}");
        seen[usize::from(r.contains("local 1"))] += 1;
    }
    assert_eq!(seen, [5, 5], "round robin over both");
    let r = get(
        at,
        "PUT /v1/blobs/a HTTP/1.1\r\nHost: s\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(r.contains("body=hello"), "{r}");
    let pool = gw.pool();
    assert_eq!(
        pool.backends
            .iter()
            .map(|b| b.requests.load(Ordering::Relaxed))
            .sum::<u64>(),
        11
    );
    assert!(pool
        .backends
        .iter()
        .all(|b| b.in_flight.load(Ordering::Relaxed) == 0));
}

/// Direct reads of a backend in this process: what it answers without
/// waiting, what it answers later, what it declines (the full path takes
/// the connection from that request on), a read that outlives the
/// first-byte timeout (504), and the gateway's own lines on each answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_in_this_process_answer_reads_directly() {
    use balancer::direct::{Direct, DirectReads, Read, Reply};
    use balancer::{body::send_body, direct::LocalBackend, direct::LocalService};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Reads(Arc<std::fs::File>);
    impl DirectReads for Reads {
        fn takes(&self, r: &Read<'_>) -> bool {
            r.target != "/other"
        }
        fn read(&self, r: &Read<'_>) -> Direct {
            let reply = |status, body: &'static str| Reply {
                status,
                lines: bytes::Bytes::from_static(b"x-direct: yes\r\n"),
                more: r.range.map(|v| format!("x-range: {v}\r\n")),
                length: Some(body.len() as u64),
                body: if r.head {
                    bytes::Bytes::new()
                } else {
                    bytes::Bytes::from_static(body.as_bytes())
                },
                file: None,
                stream: None,
            };
            match r.target {
                "/now" => Direct::Now(reply(200, "now body")),
                "/later" => {
                    let r = reply(200, "later body");
                    Direct::Later(Box::pin(async move { r }))
                }
                "/hang" => Direct::Later(Box::pin(std::future::pending())),
                // Bytes 3..13 of the file, sent with sendfile.
                "/file" => Direct::Now(Reply {
                    length: Some(10),
                    file: Some(balancer::direct::FileBody {
                        file: self.0.clone(),
                        offset: 3,
                        len: 10,
                    }),
                    ..reply(200, "")
                }),
                _ => Direct::Declined,
            }
        }
    }
    let silent = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("f"), b"0123456789abcdefghij").expect("write");
    let file = std::fs::File::open(dir.path().join("f")).expect("open");
    let h = HealthOptions {
        check_interval: Duration::ZERO,
        ..HealthOptions::default()
    };
    let gw = Gateway::new(
        Arc::new(Pool::new(vec![Backend::new(silent, 1)], Algorithm::RoundRobin, h).expect("pool")),
        GatewayOptions {
            first_byte_timeout: Duration::from_millis(200),
            ..GatewayOptions::default()
        },
    );
    let svc: LocalService = Arc::new(|req: hyper::Request<balancer::body::UpBody>| {
        Box::pin(async move {
            let text = format!("service {}", req.uri());
            hyper::Response::new(send_body(http_body_util::Full::new(bytes::Bytes::from(
                text,
            ))))
        })
    });
    gw.set_local(
        [(
            silent,
            LocalBackend {
                service: svc,
                reads: Some(Arc::new(Reads(Arc::new(file)))),
            },
        )]
        .into_iter()
        .collect(),
    );
    let at = serve_pool(&gw).await;

    // One keep-alive connection; each answer read whole by its length.
    let mut s = tokio::net::TcpStream::connect(at).await.expect("connect");
    let mut pending = Vec::new();
    let mut exchange = async |req: &str| -> (String, String) {
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.parse().expect("length"));
                let len = if req.starts_with("HEAD") { 0 } else { len };
                if pending.len() >= end + 4 + len {
                    let body =
                        String::from_utf8_lossy(&pending[end + 4..end + 4 + len]).into_owned();
                    pending.drain(..end + 4 + len);
                    return (head, body);
                }
            }
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed; had {:?}", String::from_utf8_lossy(&pending));
            pending.extend_from_slice(&buf[..n]);
        }
    };
    let (head, body) = exchange("GET /now HTTP/1.1\r\nHost: s\r\nRange: bytes=0-1\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{head}");
    assert!(
        head.contains("\r\nx-direct: yes\r\nx-range: bytes=0-1\r\ncontent-length: 8"),
        "{head}"
    );
    assert_eq!(body, "now body");
    let (head, body) = exchange("HEAD /now HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert!(head.contains("content-length: 8"), "{head}");
    assert_eq!(body, "");
    let (_, body) = exchange("GET /later HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert_eq!(body, "later body");
    let (head, body) = exchange("GET /file HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert!(head.contains("content-length: 10"), "{head}");
    assert_eq!(body, "3456789abc");
    let (head, body) = exchange("GET /hang HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert_eq!(body, "backend timed out\n");
    // Declined: the full path answers, and keeps the connection.
    let (head, body) = exchange("GET /other HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "service /other");
    let (_, body) = exchange("GET /now HTTP/1.1\r\nHost: s\r\n\r\n").await;
    assert_eq!(body, "service /now", "the full path keeps the connection");

    let b = &gw.pool().backends[0];
    // now, now (HEAD), later, file, hang, other (full path), now (full
    // path).
    assert_eq!(b.requests.load(Ordering::Relaxed), 7);
    assert_eq!(b.in_flight.load(Ordering::Relaxed), 0);
    assert_eq!(gw.metrics.requests.load(Ordering::Relaxed), 7);
    assert_eq!(gw.metrics.gateway_errors.load(Ordering::Relaxed), 1);
}

//! The access log parsed back for both paths and both formats, and the
//! connections around a request: a backend's closed keep-alive connection,
//! the TLS handshake's time limit.

use super::*;

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
        let metrics = prom::render(&gw.live.registry);
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

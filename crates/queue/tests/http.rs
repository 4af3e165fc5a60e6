//! The HTTP/JSON API over a real socket: puts with idempotency keys,
//! reserve with lease tokens, complete, fail to the dead letters, kick,
//! delete, and every bad request's status.

use std::net::SocketAddr;
use std::sync::Arc;

use queue::{Broker, BrokerOptions, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start() -> (tempfile::TempDir, SocketAddr) {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = BrokerOptions {
        max_payload: 1000,
        ..BrokerOptions::default()
    };
    let b = Broker::open(dir.path(), opts, Arc::new(SystemClock)).expect("open");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(queue::http::serve(l, b, std::future::pending()));
    (dir, a)
}

/// (status, headers text, body) of one request.
async fn call(
    a: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(a).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: q\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(body).await.expect("body");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (h, b) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = h[9..12].parse().expect("status");
    (status, h.to_ascii_lowercase(), b.to_owned())
}

fn header(h: &str, name: &str) -> String {
    h.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or("")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_walks_a_job_through_its_states() {
    let (_d, a) = start().await;
    let (st, h, b) = call(
        a,
        "POST",
        "/v1/queues/img/jobs",
        "Idempotency-Key: k1\r\n",
        b"resize",
    )
    .await;
    assert_eq!(st, 201, "{b}");
    assert!(
        b.contains("\"id\":1") && b.contains("\"created\":true"),
        "{b}"
    );
    assert_eq!(header(&h, "location"), "/v1/jobs/1");
    let (st, _, b) = call(
        a,
        "POST",
        "/v1/queues/img/jobs",
        "Idempotency-Key: k1\r\n",
        b"resize",
    )
    .await;
    assert_eq!(
        (st, b.contains("\"id\":1"), b.contains("\"created\":false")),
        (200, true, true)
    );

    let (st, h, body) = call(a, "POST", "/v1/queues/img/reserve?timeout_ms=1000", "", b"").await;
    assert_eq!((st, body.as_str()), (200, "resize"));
    assert_eq!(
        (header(&h, "x-job-id"), header(&h, "x-job-lease")),
        ("1".into(), "1".into())
    );
    let (st, _, _) = call(a, "POST", "/v1/queues/img/reserve?timeout_ms=0", "", b"").await;
    assert_eq!(st, 204, "nothing else ready");
    assert_eq!(
        call(a, "POST", "/v1/jobs/1/complete", "", b"x").await.0,
        400,
        "no lease"
    );
    assert_eq!(
        call(a, "POST", "/v1/jobs/1/complete?lease=7", "", b"x")
            .await
            .0,
        409,
        "wrong lease"
    );
    assert_eq!(
        call(a, "POST", "/v1/jobs/1/touch?lease=1", "", b"").await.0,
        204
    );
    assert_eq!(
        call(a, "POST", "/v1/jobs/1/complete?lease=1", "", b"thumb ok")
            .await
            .0,
        204
    );
    let (st, _, b) = call(a, "GET", "/v1/jobs/1", "", b"").await;
    assert_eq!(st, 200);
    assert!(
        b.contains("\"state\":\"succeeded\"") && b.contains("\"result\":\"thumb ok\""),
        "{b}"
    );

    // A poison job: one attempt, fails, dead, listed; kicked back; deleted.
    let (_, _, b) = call(
        a,
        "POST",
        "/v1/queues/img/jobs?max_attempts=1&priority=3",
        "",
        b"bad",
    )
    .await;
    assert!(b.contains("\"id\":2"), "{b}");
    let (_, h, _) = call(a, "POST", "/v1/queues/img/reserve?timeout_ms=1000", "", b"").await;
    assert_eq!(header(&h, "x-job-id"), "2");
    let (st, _, b) = call(a, "POST", "/v1/jobs/2/fail?lease=1", "", b"cannot decode").await;
    assert_eq!((st, b.as_str()), (200, r#"{"state":"dead"}"#));
    let (_, _, b) = call(a, "GET", "/v1/queues/img/dead", "", b"").await;
    assert!(b.contains("\"id\":2") && b.contains("cannot decode"), "{b}");
    let (_, _, b) = call(a, "GET", "/v1/queues/img/stats", "", b"").await;
    assert!(
        b.contains("\"dead\":1") && b.contains("\"succeeded\":1"),
        "{b}"
    );
    let (st, _, b) = call(a, "POST", "/v1/queues/img/kick?bound=10", "", b"").await;
    assert_eq!((st, b.as_str()), (200, r#"{"kicked":1}"#));
    let (_, _, b) = call(a, "GET", "/v1/queues/img/peek?state=ready", "", b"").await;
    assert!(b.contains("\"id\":2"), "{b}");
    assert_eq!(call(a, "GET", "/v1/jobs/2/payload", "", b"").await.2, "bad");
    assert_eq!(call(a, "DELETE", "/v1/jobs/2", "", b"").await.0, 204);
    assert_eq!(call(a, "GET", "/v1/jobs/2", "", b"").await.0, 404);
    let (_, _, m) = call(a, "GET", "/metrics", "", b"").await;
    assert!(
        m.contains("strata_queue_jobs_total{queue=\"img\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let (_d, a) = start().await;
    let cases: [(&str, &str, &[u8], u16); 8] = [
        ("POST", "/v1/queues/img/jobs?priority=high", b"x", 400),
        ("POST", "/v1/queues/-bad/jobs", b"x", 400),
        ("POST", "/v1/queues/img/jobs", &[b'x'; 1001], 413),
        ("POST", "/v1/queues/img/reserve?timeout_ms=-1", b"", 400),
        ("POST", "/v1/jobs/99/complete?lease=1", b"", 404),
        ("POST", "/v1/jobs/99/explode?lease=1", b"", 404),
        ("GET", "/v1/queues/img/peek?state=odd", b"", 400),
        ("GET", "/v1/jobs/notanumber", b"", 400),
    ];
    for (m, p, body, want) in cases {
        let (st, _, b) = call(a, m, p, "", body).await;
        assert_eq!(st, want, "{m} {p}: {b}");
    }
    // Nothing was stored by any of them.
    let (_, _, b) = call(a, "GET", "/v1/queues", "", b"").await;
    assert_eq!(b, r#"{"queues":[]}"#);
}

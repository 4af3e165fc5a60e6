//! Every bad-input path of the public API: JSON errors, the body limit, an
//! interrupted upload, the write token.

use super::*;

#[tokio::test]
async fn bad_input_gets_json_errors() {
    let (_dir, s) = start().await;
    let c = &s.client;
    let long = "k".repeat(1025);
    let cases: Vec<(Method, String, StatusCode, &str)> = vec![
        (
            Method::PUT,
            format!("/v1/blobs/{long}"),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::PUT,
            "/v1/blobs/a%00b".into(),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::PUT,
            "/v1/blobs/a%0Ab".into(),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::GET,
            "/v1/blobs/%FF%FE".into(),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::GET,
            "/v1/blobs/bad%zzescape".into(),
            StatusCode::BAD_REQUEST,
            "bad_key",
        ),
        (
            Method::GET,
            "/v1/blobs/missing".into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PATCH,
            "/v1/blobs/x".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/v1/blobs?limit=0".into(),
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            Method::GET,
            "/v1/blobs?limit=abc".into(),
            StatusCode::BAD_REQUEST,
            "bad_limit",
        ),
        (
            Method::GET,
            "/nowhere".into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (m, path, status, code) in cases {
        let r = c.send(m.clone(), &path, &[], "x").await.expect("send");
        assert_eq!(r.status, status, "{m} {path}");
        assert_eq!(r.json()["error"], code, "{m} {path}: {:?}", r.body);
        assert!(r.json()["detail"].is_string());
    }
    let r = c
        .send(
            Method::PUT,
            "/v1/blobs/t",
            &[("x-strata-tags", &"t".repeat(200))],
            "x",
        )
        .await
        .expect("tags");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "bad_tags");
    // Nothing of the above was stored.
    assert_eq!(
        c.get("/v1/blobs").await.expect("list").json()["items"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = cluster::ClusterConfig::parse("[limits]\nmax_body_bytes = 1000\n").expect("cfg");
    let s = InProc::serve(&cfg, dir.path()).await.expect("serve");
    let r = s
        .client
        .put("/v1/blobs/big", blob(1, 1001))
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"], "too_large");
    // Chunked (no Content-Length): caught while reading.
    let mut sock = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    let mut req =
        b"PUT /v1/blobs/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"190\r\n");
        req.extend_from_slice(&[b'a'; 400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    sock.write_all(&req).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = sock.read(&mut buf).await.expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(
        s.client
            .put("/v1/blobs/ok", blob(1, 1000))
            .await
            .expect("put")
            .status,
        StatusCode::CREATED
    );
    assert_eq!(s.handle.store.len(), 1);
}

#[tokio::test]
async fn interrupted_upload_leaves_nothing_visible() {
    let (_dir, s) = start().await;
    let nodes = s.handle.node_addrs.len();
    let sum = |series: &'static str| {
        let s = &s;
        async move {
            let mut total = 0;
            for i in 0..nodes {
                total += s.node(i).metric(series).await.expect("metrics");
            }
            total
        }
    };
    // (target, declared length, bytes sent): straight to a node; through
    // the gateway with a large and with a small body. serve's gateway hands
    // requests to its in-process nodes with the body as it streams, so
    // every cut reaches a node, which must store nothing.
    let cases = [
        (s.handle.node_addrs[0], 100_000, 50_000),
        (s.addr(), 2 << 20, 1 << 20),
        (s.addr(), 100_000, 50_000),
    ];
    let mut errors = 0;
    for (target, declared, sent) in cases {
        let mut sock = tokio::net::TcpStream::connect(target)
            .await
            .expect("connect");
        let head =
            format!("PUT /v1/blobs/half HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n");
        sock.write_all(head.as_bytes()).await.expect("head");
        sock.write_all(&blob(1, sent))
            .await
            .expect("part of the body");
        drop(sock);
        // Barrier: wait until a node has finished that request (it
        // answers a cut-off body with a 400, a client error).
        errors += 1;
        testkit::until_async(
            "the node finishes the interrupted upload",
            std::time::Duration::from_secs(10),
            async || match sum("strata_node_client_errors_total").await {
                n if n == errors => Ok(()),
                n => Err(format!("{n} client errors")),
            },
        )
        .await;
        assert_eq!(
            s.client.get("/v1/blobs/half").await.expect("get").status,
            StatusCode::NOT_FOUND
        );
        errors += 1; // that 404
        assert!(s.handle.store.is_empty());
    }
    assert_eq!(sum("strata_node_puts_total").await, 3);
}

#[tokio::test]
async fn writes_need_the_token_when_one_is_set() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = cluster::ClusterConfig::parse("[auth]\nwrite_token = \"s3cret\"\n").expect("cfg");
    let s = InProc::serve(&cfg, dir.path()).await.expect("serve");
    let c = &s.client;
    let r = c.put("/v1/blobs/a", "x").await.expect("put");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), "Bearer");
    let r = c
        .send(
            Method::PUT,
            "/v1/blobs/a",
            &[("authorization", "Bearer nope")],
            "x",
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = c
        .send(
            Method::PUT,
            "/v1/blobs/a",
            &[("authorization", "Bearer s3cret")],
            "x",
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        c.get("/v1/blobs/a").await.expect("get").status,
        StatusCode::OK,
        "reads stay public"
    );
    assert_eq!(
        c.delete("/v1/blobs/a").await.expect("del").status,
        StatusCode::UNAUTHORIZED
    );
    let r = c
        .send(
            Method::DELETE,
            "/v1/blobs/a",
            &[("authorization", "Bearer s3cret")],
            vec![],
        )
        .await
        .expect("del");
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

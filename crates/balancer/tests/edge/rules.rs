//! Edge rules per route (header operations, request ids, compression) and
//! the HTTPS redirect.

use super::*;

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

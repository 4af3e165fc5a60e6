//! The gateway at the edge as a real process configured by its cluster
//! file: TLS with HTTP/2 in front of a node, a route's header rules, a
//! JSON access log parsed back, and a certificate renewed in place and
//! reloaded by SIGHUP while an open connection keeps working.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use testkit::{Procs, StatusCode};
use tokio::net::TcpStream;

mod common;
use common::bin;

/// Writes a new self-signed certificate for `img.test` over `dir`'s
/// `site.pem` / `site.key`; returns it.
fn renew(dir: &Path) -> CertificateDer<'static> {
    let c = rcgen::generate_simple_self_signed(vec!["img.test".to_owned()]).expect("cert");
    std::fs::write(dir.join("site.pem"), c.cert.pem()).expect("write cert");
    std::fs::write(dir.join("site.key"), c.signing_key.serialize_pem()).expect("write key");
    c.cert.der().clone()
}

type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// An HTTP/2 connection over TLS trusting only `root`, or the handshake
/// error; with the certificate the server presented.
async fn connect(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
) -> Result<(H2, CertificateDer<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|e| e.to_string())?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("img.test").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let presented = tls.get_ref().1.peer_certificates().ok_or("no cert")?[0].clone();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok((send, presented))
}

async fn get(send: &mut H2, path: &str) -> (hyper::http::response::Parts, Bytes) {
    send.ready().await.expect("ready");
    let req = hyper::Request::get(format!("https://img.test{path}"))
        .body(Empty::new())
        .expect("req");
    let (parts, body) = send.send_request(req).await.expect("response").into_parts();
    (parts, body.collect().await.expect("body").to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_h2_header_rules_access_log_and_certificate_reload_through_the_binary() {
    let certs = tempfile::tempdir().expect("dir");
    let first = renew(certs.path());
    let tls = testkit::Socket::free().expect("socket");
    let tls_addr = tls.addr();
    let log = certs.path().join("access.log");
    let extra = format!(
        r#"[gateway]
request_id = true
response_headers = {{ remove = ["Server"] }}
[gateway.access_log]
path = "{log}"
format = "json"
[gateway.tls]
listen = "{tls_addr}"
[[gateway.tls.cert]]
cert = "{dir}/site.pem"
key = "{dir}/site.key"
[[gateway.route]]
prefix = "/v1/blobs/"
pool = "nodes"
response_headers = {{ set = ["Cache-Control: public, max-age=31536000, immutable"] }}
"#,
        log = log.display(),
        dir = certs.path().display(),
    );
    let layout = testkit::Layout {
        stores: 1,
        replicas: 1,
        nodes: 1,
        sockets: vec![("gateway".into(), tls)],
        ..Default::default()
    };
    let p = Procs::launch(bin(), layout, &extra).await.expect("cluster");
    let image = testkit::blob(7, 20_000);
    let put = p
        .client()
        .put("/v1/blobs/cat.jpg", image.clone())
        .await
        .expect("put");
    assert_eq!(put.status, StatusCode::CREATED);

    let (mut open, presented) = connect(tls_addr, &first).await.expect("tls");
    assert_eq!(presented, first);
    let (parts, body) = get(&mut open, "/v1/blobs/cat.jpg").await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.version, hyper::Version::HTTP_2);
    assert_eq!(body, image);
    assert_eq!(
        parts.headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let id = parts.headers["x-request-id"]
        .to_str()
        .expect("id")
        .to_owned();

    // Renewal: new files in place, SIGHUP; new handshakes get the new
    // certificate (a client trusting only the old one now fails).
    let second = renew(certs.path());
    p.hangup("gateway").expect("hup");
    let mut renewed = None;
    for _ in 0..200 {
        if let Ok((send, got)) = connect(tls_addr, &second).await {
            assert_eq!(got, second);
            renewed = Some(send);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut renewed = renewed.expect("the renewed certificate was never served");
    assert!(connect(tls_addr, &first).await.is_err());
    assert_eq!(get(&mut renewed, "/v1/blobs/cat.jpg").await.1, image);
    // The connection from before the reload still works.
    assert_eq!(get(&mut open, "/v1/blobs/cat.jpg").await.1, image);

    // The access log has the first GET, parsed back; SIGHUP also reopened
    // it (same path), so lines keep coming.
    let lines = testkit::until_async(
        "three HTTP/2 GETs logged",
        Duration::from_secs(10),
        async || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect();
            let gets = lines
                .iter()
                .filter(|l| l["method"] == "GET" && l["protocol"] == "HTTP/2.0")
                .count();
            match gets {
                3.. => Ok(lines),
                _ => Err(text),
            }
        },
    )
    .await;
    let first_get = lines
        .iter()
        .find(|l| l["request_id"] == id.as_str())
        .expect("the first GET is logged with its request id");
    assert_eq!(first_get["status"], 200);
    assert_eq!(first_get["bytes"], 20_000);
    assert_eq!(first_get["target"], "/v1/blobs/cat.jpg");
    assert_eq!(first_get["pool"], "nodes");
    assert_eq!(first_get["upstream"], p.addr("node-1").to_string());
    let put_line = lines
        .iter()
        .find(|l| l["method"] == "PUT")
        .expect("the PUT is logged");
    assert_eq!(put_line["status"], 201);
    assert_eq!(put_line["protocol"], "HTTP/1.1");
    let metrics = p.client().get("/_strata/metrics").await.expect("metrics");
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("strata_gateway_access_log_dropped_total 0"),
        "{text}"
    );
    assert!(text.contains("strata_gateway_h2_requests_total"), "{text}");
}

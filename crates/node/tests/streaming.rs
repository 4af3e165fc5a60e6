//! Big blobs are streamed to many clients from one store read: followers
//! receive bytes while the store is still sending, and a store read cut
//! midway reaches every client as an error.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use collapse::SharedBody;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use index::{BlobMeta, IndexDb};
use node::{IndexHandle, Node, NodeOptions, StoreHandle, StoreMember};

/// A fake remote store whose one blob body the test feeds by hand.
async fn fake_store(body: Arc<SharedBody>, size: u64, reads: Arc<AtomicU64>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (body, reads) = (body.clone(), reads.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (body, reads) = (body.clone(), reads.clone());
                    async move {
                        if req.uri().path().starts_with("/blobs/") {
                            reads.fetch_add(1, Ordering::SeqCst);
                            let b = node::StreamBody::from_reader(body.reader(), size);
                            Ok::<_, Infallible>(hyper::Response::new(http_body_util::Either::Left(
                                b,
                            )))
                        } else {
                            Ok(hyper::Response::new(http_body_util::Either::Right(
                                http_body_util::Full::new(Bytes::from_static(b"ok")),
                            )))
                        }
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

async fn node_for(store: String, size: u64) -> (tempfile::TempDir, std::net::SocketAddr) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = IndexDb::open(dir.path()).expect("index");
    let meta = BlobMeta {
        id: 7,
        size,
        etag: "\"e\"".into(),
        content_type: "application/octet-stream".into(),
        created_ms: 0,
        replicas: vec!["s1".into()],
        tags: vec![],
        version: 0,
        page: None,
        ..Default::default()
    };
    db.put("big".into(), meta).await.expect("put meta");
    let n = Node::new(
        NodeOptions::default(),
        IndexHandle::new(db),
        vec![StoreMember {
            name: "s1".into(),
            handle: StoreHandle::Remote(store::client::StoreClient::new(
                store,
                Duration::from_secs(5),
            )),
        }],
        vec![],
        None,
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(node::api::serve(l, n, std::future::pending()));
    (dir, addr)
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<Bytes>,
>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_get_bytes_while_the_store_still_sends() {
    let chunk1 = Bytes::from(vec![1u8; 300_000]);
    let chunk2 = Bytes::from(vec![2u8; 200_000]);
    let size = (chunk1.len() + chunk2.len()) as u64;
    let body = SharedBody::new();
    let reads = Arc::new(AtomicU64::new(0));
    let store = fake_store(body.clone(), size, reads.clone()).await;
    let (_dir, addr) = node_for(store, size).await;
    body.push(chunk1.clone());

    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(64);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, tx) = (client.clone(), first_tx.clone());
        let url = format!("http://{addr}/v1/blobs/big");
        tasks.push(tokio::spawn(async move {
            let resp = c.get(url.parse().expect("url")).await.expect("get");
            assert_eq!(resp.status(), 200);
            let mut b = resp.into_body();
            let mut got = Vec::new();
            let mut told = false;
            while let Some(f) = b.frame().await {
                if let Ok(d) = f.expect("frame").into_data() {
                    got.extend_from_slice(&d);
                }
                if !told && got.len() >= 300_000 {
                    told = true;
                    tx.send(()).await.expect("signal");
                }
            }
            got
        }));
    }
    // Every client has the first chunk while the store has sent no more.
    for _ in 0..50 {
        first_rx.recv().await.expect("first chunk");
    }
    assert_eq!(
        reads.load(Ordering::SeqCst),
        1,
        "one store read for 50 clients"
    );
    body.push(chunk2.clone());
    body.finish();
    for t in tasks {
        let got = t.await.expect("client");
        assert_eq!(got.len() as u64, size);
        assert!(got[..300_000].iter().all(|&b| b == 1) && got[300_000..].iter().all(|&b| b == 2));
    }
    assert_eq!(reads.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_read_cut_midway_is_an_error_for_every_client() {
    let size = 500_000u64;
    let body = SharedBody::new();
    let reads = Arc::new(AtomicU64::new(0));
    let store = fake_store(body.clone(), size, reads.clone()).await;
    let (_dir, addr) = node_for(store, size).await;
    body.push(Bytes::from(vec![1u8; 100_000]));
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(16);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (c, tx) = (client.clone(), first_tx.clone());
        let url = format!("http://{addr}/v1/blobs/big");
        tasks.push(tokio::spawn(async move {
            let resp = c.get(url.parse().expect("url")).await.expect("get");
            let mut b = resp.into_body();
            let mut got = 0usize;
            let mut told = false;
            loop {
                match b.frame().await {
                    Some(Ok(f)) => {
                        got += f.into_data().map_or(0, |d| d.len());
                        if !told && got >= 100_000 {
                            told = true;
                            tx.send(()).await.expect("signal");
                        }
                    }
                    Some(Err(_)) => return Err(got),
                    None => return Ok(got),
                }
            }
        }));
    }
    for _ in 0..10 {
        first_rx.recv().await.expect("first bytes");
    }
    body.fail("store connection reset".into());
    for t in tasks {
        let r = t.await.expect("client");
        assert!(
            r.is_err(),
            "a cut-off body was presented as complete: {r:?}"
        );
    }
}

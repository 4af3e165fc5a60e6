//! `store::client::StoreClient` against its own server, over a real socket:
//! every call the request nodes make, and the answers for what is missing,
//! out of range, compacted away or unreachable.

use std::time::Duration;

use bytes::Bytes;
use store::client::StoreClient;
use store::{Error, Store, StoreOptions};

async fn served(dir: &std::path::Path) -> (StoreClient, std::sync::Arc<Store>) {
    let (s, _) = Store::open(dir, StoreOptions::default()).expect("open");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(store::server::serve(l, s.clone(), std::future::pending()));
    (
        StoreClient::new(format!("http://{addr}"), Duration::from_secs(5)),
        s,
    )
}

#[tokio::test]
async fn every_call_round_trips_through_the_stores_own_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let (c, s) = served(dir.path()).await;
    assert!(c.healthy().await);
    let body = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    c.put(7, Bytes::from_static(b"meta of 7"), body.clone())
        .await
        .expect("put");
    // Durable and in the store behind the server.
    assert_eq!(s.get(7).expect("local"), body);
    assert_eq!(c.get(7, None).await.expect("get"), body);
    assert_eq!(
        c.get(7, Some((100, 200))).await.expect("range"),
        body.slice(100..200)
    );
    assert!(c.get(7, Some((5, 5))).await.expect("empty").is_empty());
    assert_eq!(
        c.meta(7).await.expect("meta"),
        Bytes::from_static(b"meta of 7")
    );
    let vols = c.volumes().await.expect("volumes");
    assert_eq!(vols.len(), 1);
    let page = c.heads(vols[0].0, 0, None, 10).await.expect("heads");
    assert_eq!((page.heads.len(), page.generation), (1, vols[0].1));
    assert_eq!(page.heads[0].id, 7);
    // Streamed.
    use http_body_util::BodyExt;
    let streamed = c
        .open(7)
        .await
        .expect("open")
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(streamed, body);
    // A multi-get answers each id on its own.
    let items = c.mget(&[7, 8]).await.expect("mget");
    assert_eq!(items[0].0, 7);
    assert_eq!(items[0].1.as_ref().expect("found"), &body);
    assert!(matches!(items[1], (8, Err(Error::NotFound(8)))));
    // Missing, out of range, deleted.
    assert!(matches!(c.get(8, None).await, Err(Error::NotFound(8))));
    assert!(matches!(c.meta(8).await, Err(Error::NotFound(8))));
    assert!(matches!(c.open(8).await, Err(Error::NotFound(8))));
    match c.get(7, Some((20_000, 20_010))).await {
        Err(Error::Answered { status: 416, .. }) => {}
        other => panic!("out of range: {other:?}"),
    }
    c.delete(7, Bytes::from_static(b"gone"))
        .await
        .expect("delete");
    assert!(matches!(c.get(7, None).await, Err(Error::NotFound(7))));
    // A listing that outlived a compaction is told so.
    match c.heads(vols[0].0, 0, Some(vols[0].1 + 1), 10).await {
        Err(Error::Moved { .. }) => {}
        other => panic!("stale generation: {other:?}"),
    }
}

#[tokio::test]
async fn a_store_that_is_not_there_is_unreachable_not_missing() {
    // A port nothing listens on: bound, then closed.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    let c = StoreClient::new(format!("http://{addr}"), Duration::from_secs(2));
    assert!(!c.healthy().await);
    assert!(matches!(c.get(1, None).await, Err(Error::Unreachable(_))));
    assert!(matches!(
        c.put(1, Bytes::new(), Bytes::from_static(b"x")).await,
        Err(Error::Unreachable(_))
    ));
}

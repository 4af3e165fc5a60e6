//! The distributed-cache client against real servers: hot keys live on R
//! members, ordinary keys on one, and a delete reaches every copy.

use std::sync::Arc;

use bytes::Bytes;
use cache::client::{CacheClient, ClientOptions};
use cache::server::{serve, CacheServer, ServerOptions};
use cache::{Cache, CacheConfig, SystemClock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_get_r_copies_and_deletes_reach_them_all() {
    let mut members = Vec::new();
    let mut engines = Vec::new();
    for i in 0..3 {
        let engine = Arc::new(Cache::new(CacheConfig::default(), Arc::new(SystemClock)));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        members.push((format!("cache-{i}"), l.local_addr().expect("addr")));
        tokio::spawn(serve(
            l,
            CacheServer::new(engine.clone(), ServerOptions::default()),
            std::future::pending(),
        ));
        engines.push(engine);
    }
    let c = CacheClient::new(
        &members,
        ClientOptions {
            hot_replicas: 2,
            ..ClientOptions::default()
        },
    );
    let copies = |k: &[u8]| engines.iter().filter(|e| e.peek(k).is_some()).count();
    let v = Bytes::from_static(b"value");
    c.set(b"hot", &v, 0, true).await;
    c.set(b"cold", &v, 0, false).await;
    assert_eq!(copies(b"hot"), 2);
    assert_eq!(copies(b"cold"), 1);
    for _ in 0..10 {
        assert_eq!(c.get(b"hot", true).await.as_deref(), Some(&b"value"[..]));
    }
    assert_eq!(c.get(b"cold", false).await.as_deref(), Some(&b"value"[..]));
    c.delete(b"hot").await;
    c.delete(b"cold").await;
    assert_eq!(copies(b"hot"), 0);
    assert_eq!(copies(b"cold"), 0);
    assert_eq!(c.get(b"missing", false).await, None);
}

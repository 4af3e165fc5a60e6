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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_credential_only_authenticated_connections_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let engine = Arc::new(Cache::new(CacheConfig::default(), Arc::new(SystemClock)));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let cred = b"strata s3cret".to_vec();
    let opts = ServerOptions {
        auth: Some(cred.clone()),
        ..ServerOptions::default()
    };
    tokio::spawn(serve(
        l,
        CacheServer::new(engine.clone(), opts),
        std::future::pending(),
    ));

    // Raw: a command before logging in, and a wrong password, are refused
    // and the connection closed (memcached's ASCII authentication).
    async fn exchange(addr: std::net::SocketAddr, req: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(req).await.expect("write");
        let mut out = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }
    assert_eq!(
        exchange(addr, b"set k 0 0 1\r\nv\r\nget k\r\n").await,
        "CLIENT_ERROR authentication failure\r\n"
    );
    assert_eq!(
        exchange(addr, b"get k\r\n").await,
        "CLIENT_ERROR unauthenticated\r\n"
    );
    assert_eq!(
        exchange(addr, b"set auth 0 0 13\r\nstrata wrong!\r\n").await,
        "CLIENT_ERROR authentication failure\r\n"
    );
    assert!(engine.peek(b"k").is_none(), "nothing was stored");
    assert_eq!(
        exchange(
            addr,
            b"set auth 0 0 13\r\nstrata s3cret\r\nset k 0 0 1\r\nv\r\nget k\r\nquit\r\n"
        )
        .await,
        "STORED\r\nSTORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n"
    );

    // The client logs in on each new connection; without the credential
    // every call is a miss (and the server stays untouched).
    let members = vec![("cache-1".to_owned(), addr)];
    let good = CacheClient::new(
        &members,
        ClientOptions {
            auth: Some(cred),
            ..ClientOptions::default()
        },
    );
    good.set(b"a", &Bytes::from_static(b"1"), 0, false).await;
    assert_eq!(good.get(b"a", false).await.as_deref(), Some(&b"1"[..]));
    let bad = CacheClient::new(&members, ClientOptions::default());
    assert_eq!(bad.get(b"a", false).await, None);
    bad.set(b"b", &Bytes::from_static(b"2"), 0, false).await;
    assert!(engine.peek(b"b").is_none());
}

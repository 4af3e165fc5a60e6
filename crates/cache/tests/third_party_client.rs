//! The `memcache` crate (a third-party memcached client) against our server,
//! unchanged: the ASCII protocol as any memcached user would drive it.

use std::sync::Arc;

use cache::server::{serve, CacheServer, ServerOptions};
use cache::{Cache, CacheConfig, SystemClock};

#[test]
fn memcache_crate_works_unchanged() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let addr = rt.block_on(async {
        let cache = Arc::new(Cache::new(CacheConfig::default(), Arc::new(SystemClock)));
        let server = CacheServer::new(cache, ServerOptions::default());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(serve(l, server, std::future::pending()));
        addr
    });
    let client =
        memcache::Client::connect(format!("memcache://{addr}?protocol=ascii")).expect("connect");

    client.set("greeting", "hello", 0).expect("set");
    let v: Option<String> = client.get("greeting").expect("get");
    assert_eq!(v.as_deref(), Some("hello"));

    // The crate maps NOT_STORED to Ok; the value must be unchanged.
    client.add("greeting", "again", 0).expect("add");
    let v: Option<String> = client.get("greeting").expect("get");
    assert_eq!(v.as_deref(), Some("hello"), "add must not overwrite");
    client.add("fresh", "1", 0).expect("add");
    client.replace("fresh", "2", 0).expect("replace");
    client.append("fresh", "3").expect("append");
    client.prepend("fresh", "0").expect("prepend");
    let v: Option<String> = client.get("fresh").expect("get");
    assert_eq!(v.as_deref(), Some("023"));

    client.set("counter", 41u64, 0).expect("set");
    assert_eq!(client.increment("counter", 1).expect("incr"), 42);
    assert_eq!(client.decrement("counter", 50).expect("decr"), 0);

    let many: std::collections::HashMap<String, String> = client
        .gets(&["greeting", "fresh", "missing"])
        .expect("gets");
    assert_eq!(many.len(), 2);
    assert_eq!(many["fresh"], "023");

    assert!(client.touch("greeting", 100).expect("touch"));
    assert!(!client.touch("missing", 100).expect("touch"));
    assert!(client.delete("greeting").expect("delete"));
    assert!(!client.delete("greeting").expect("delete"));
    let v: Option<String> = client.get("greeting").expect("get");
    assert_eq!(v, None);

    let big = vec![7u8; 100_000];
    client.set("big", &big[..], 0).expect("set big");
    let v: Option<Vec<u8>> = client.get("big").expect("get big");
    assert_eq!(v.as_deref(), Some(&big[..]));

    let version = client.version().expect("version");
    assert!(!version.is_empty());
    // The crate's ASCII `stats` stops at the first line it reads (its loop
    // test is inverted), so it returns an empty map against any server,
    // memcached included; only check that the call succeeds. `stats` itself
    // is covered byte for byte in protocol.rs.
    client.stats().expect("stats");
    client.flush().expect("flush_all");
    let v: Option<String> = client.get("fresh").expect("get");
    assert_eq!(v, None);
}

//! Byte-exact conformance of the text protocol, over real sockets.
//!
//! The meta protocol, vivify, read-through and large values are in `meta`.
//! One test binary: each more would be another link.

use std::sync::Arc;
use std::time::Duration;

use cache::server::{serve, CacheServer, ServerOptions};
use cache::{Cache, CacheConfig, ManualClock, Policy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod meta;

const T0: u32 = 1_800_000_000;

struct Srv {
    addr: std::net::SocketAddr,
    clock: Arc<ManualClock>,
    server: Arc<CacheServer>,
}

async fn start(item_max: usize, max_connections: usize) -> Srv {
    let clock = Arc::new(ManualClock::new(T0));
    let cache = Arc::new(Cache::new(
        CacheConfig {
            max_bytes: 64 << 20,
            item_max,
            policy: Policy::S3Fifo,
        },
        clock.clone(),
    ));
    let server = CacheServer::new(
        cache,
        ServerOptions {
            max_connections,
            threads: 1,
            ..ServerOptions::default()
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(serve(l, server.clone(), std::future::pending()));
    Srv {
        addr,
        clock,
        server,
    }
}

struct Conn(TcpStream);

impl Conn {
    async fn new(s: &Srv) -> Conn {
        Conn(TcpStream::connect(s.addr).await.expect("connect"))
    }
    /// Sends `req` and expects exactly `want` back (and nothing more yet).
    async fn rt(&mut self, req: &[u8], want: &[u8]) {
        self.0.write_all(req).await.expect("write");
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(Duration::from_secs(5), self.0.read_exact(&mut got))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timeout waiting for {:?} after {:?}",
                    String::from_utf8_lossy(want),
                    String::from_utf8_lossy(req)
                )
            })
            .expect("read");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "reply to {:?}",
            String::from_utf8_lossy(req)
        );
    }
    /// Sends `req` and reads until `until` ends the reply.
    async fn read_until(&mut self, req: &[u8], until: &[u8]) -> String {
        self.0.write_all(req).await.expect("write");
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !got.ends_with(until) {
            let n = tokio::time::timeout(Duration::from_secs(5), self.0.read(&mut b))
                .await
                .expect("timeout")
                .expect("read");
            assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

#[tokio::test]
async fn storage_and_retrieval() {
    let s = start(1 << 20, 100).await;
    let mut c = Conn::new(&s).await;
    c.rt(b"set foo 5 0 3\r\nbar\r\n", b"STORED\r\n").await;
    c.rt(b"get foo\r\n", b"VALUE foo 5 3\r\nbar\r\nEND\r\n")
        .await;
    c.rt(b"get nope\r\n", b"END\r\n").await;
    c.rt(
        b"get foo nope foo\r\n",
        b"VALUE foo 5 3\r\nbar\r\nVALUE foo 5 3\r\nbar\r\nEND\r\n",
    )
    .await;
    let cas = s.server.cache.peek(b"foo").expect("item").cas;
    c.rt(
        b"gets foo\r\n",
        format!("VALUE foo 5 3 {cas}\r\nbar\r\nEND\r\n").as_bytes(),
    )
    .await;
    c.rt(b"add foo 0 0 1\r\nx\r\n", b"NOT_STORED\r\n").await;
    c.rt(b"add new 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    c.rt(b"replace nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
        .await;
    c.rt(b"replace new 9 0 2\r\nyy\r\n", b"STORED\r\n").await;
    c.rt(b"append new 0 0 2\r\n-a\r\n", b"STORED\r\n").await;
    c.rt(b"prepend new 0 0 2\r\np-\r\n", b"STORED\r\n").await;
    c.rt(b"append nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n").await;
    c.rt(b"get new\r\n", b"VALUE new 9 6\r\np-yy-a\r\nEND\r\n")
        .await;
    c.rt(
        format!("cas foo 0 0 1 {}\r\nz\r\n", cas + 1000).as_bytes(),
        b"EXISTS\r\n",
    )
    .await;
    c.rt(
        format!("cas foo 0 0 1 {cas}\r\nz\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await;
    c.rt(b"cas nope 0 0 1 1\r\nz\r\n", b"NOT_FOUND\r\n").await;
    c.rt(b"set empty 0 0 0\r\n\r\n", b"STORED\r\n").await;
    c.rt(b"get empty\r\n", b"VALUE empty 0 0\r\n\r\nEND\r\n")
        .await;
    c.rt(b"set bin 0 0 4\r\n\r\n\0\n\r\n", b"STORED\r\n").await;
    c.rt(b"get bin\r\n", b"VALUE bin 0 4\r\n\r\n\0\n\r\nEND\r\n")
        .await;
    c.rt(b"delete foo\r\n", b"DELETED\r\n").await;
    c.rt(b"delete foo\r\n", b"NOT_FOUND\r\n").await;
    c.rt(b"delete new 0\r\n", b"DELETED\r\n").await;
    c.rt(
        b"delete a b c\r\n",
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
    )
    .await;
}

#[tokio::test]
async fn arithmetic_touch_and_expiry() {
    let s = start(1 << 20, 100).await;
    let mut c = Conn::new(&s).await;
    c.rt(b"set n 0 0 2\r\n10\r\n", b"STORED\r\n").await;
    c.rt(b"incr n 5\r\n", b"15\r\n").await;
    c.rt(b"decr n 100\r\n", b"0\r\n").await;
    c.rt(
        b"incr n 18446744073709551615\r\n",
        b"18446744073709551615\r\n",
    )
    .await;
    c.rt(b"incr n 2\r\n", b"1\r\n").await;
    c.rt(b"incr nope 1\r\n", b"NOT_FOUND\r\n").await;
    c.rt(b"decr nope 1\r\n", b"NOT_FOUND\r\n").await;
    c.rt(
        b"incr n abc\r\n",
        b"CLIENT_ERROR invalid numeric delta argument\r\n",
    )
    .await;
    c.rt(b"set s 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    c.rt(
        b"incr s 1\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    )
    .await;

    c.rt(b"set t 0 10 1\r\nv\r\n", b"STORED\r\n").await;
    c.rt(b"touch t 100\r\n", b"TOUCHED\r\n").await;
    c.rt(b"touch nope 100\r\n", b"NOT_FOUND\r\n").await;
    c.rt(
        b"touch t x\r\n",
        b"CLIENT_ERROR invalid exptime argument\r\n",
    )
    .await;
    s.clock.advance(50);
    c.rt(b"get t\r\n", b"VALUE t 0 1\r\nv\r\nEND\r\n").await;
    c.rt(b"gat 10 t\r\n", b"VALUE t 0 1\r\nv\r\nEND\r\n").await;
    let cas = s.server.cache.peek(b"t").expect("item").cas;
    c.rt(
        b"gats 20 t nope\r\n",
        format!("VALUE t 0 1 {cas}\r\nv\r\nEND\r\n").as_bytes(),
    )
    .await;
    c.rt(b"gat x t\r\n", b"CLIENT_ERROR invalid exptime argument\r\n")
        .await;
    s.clock.advance(20);
    c.rt(b"get t\r\n", b"END\r\n").await;
    c.rt(b"set neg 0 -1 1\r\nv\r\n", b"STORED\r\n").await;
    c.rt(b"get neg\r\n", b"END\r\n").await;
    c.rt(
        format!("set abs 0 {} 1\r\nv\r\n", T0 + 100).as_bytes(),
        b"STORED\r\n",
    )
    .await;
    c.rt(b"get abs\r\n", b"VALUE abs 0 1\r\nv\r\nEND\r\n").await;
}

#[tokio::test]
async fn noreply_flush_version_verbosity_quit() {
    let s = start(1 << 20, 100).await;
    let mut c = Conn::new(&s).await;
    // noreply commands answer nothing; the get after them proves ordering.
    c.rt(b"set a 0 0 1 noreply\r\n1\r\nadd a 0 0 1 noreply\r\n2\r\nincr a 4 noreply\r\ntouch a 0 noreply\r\ndelete zz noreply\r\nget a\r\n", b"VALUE a 0 1\r\n5\r\nEND\r\n").await;
    c.rt(b"flush_all\r\n", b"OK\r\n").await;
    c.rt(b"get a\r\n", b"END\r\n").await;
    c.rt(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n").await;
    c.rt(
        b"flush_all 10 noreply\r\nget a\r\n",
        b"VALUE a 0 1\r\n1\r\nEND\r\n",
    )
    .await;
    s.clock.advance(10);
    c.rt(b"get a\r\n", b"END\r\n").await;
    c.rt(
        b"flush_all x\r\n",
        b"CLIENT_ERROR invalid exptime argument\r\n",
    )
    .await;
    c.rt(b"flush_all 0 0\r\n", b"OK\r\n").await;
    c.rt(b"version\r\n", b"VERSION 1.6.0-strata\r\n").await;
    c.rt(b"verbosity 1\r\n", b"OK\r\n").await;
    c.rt(b"verbosity\r\n", b"ERROR\r\n").await;
    c.rt(b"mn\r\n", b"MN\r\n").await;
    c.0.write_all(b"quit\r\n").await.expect("write");
    let mut b = [0u8; 16];
    assert_eq!(c.0.read(&mut b).await.expect("read"), 0, "quit closes");
}

#[tokio::test]
async fn error_paths() {
    let s = start(100, 100).await;
    let mut c = Conn::new(&s).await;
    let long = "k".repeat(251);
    c.rt(
        format!("get {long}\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    // A bad line is not followed by swallowing: the data line is then an
    // unknown command, exactly as memcached does.
    c.rt(
        format!("set {long} 0 0 1\r\nx\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
    )
    .await;
    c.rt(
        b"get a\x01b\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.rt(
        b"set k 0 0 abc\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.rt(b"set k 0 0\r\n", b"ERROR\r\n").await;
    c.rt(b"cas k 0 0 1\r\nx\r\n", b"ERROR\r\nERROR\r\n").await;
    c.rt(
        b"verbosity x\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.rt(b"gat 10\r\n", b"END\r\n").await;
    c.rt(b"bogus\r\n", b"ERROR\r\n").await;
    c.rt(b"\r\n", b"ERROR\r\n").await;
    c.rt(b"GET k\r\n", b"ERROR\r\n").await;
    c.rt(
        b"set k 0 0 3\r\nabcde\r\n",
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    )
    .await;
    c.rt(b"get k\r\n", b"END\r\n").await;
    // Too large: refused, the data is swallowed, and the old value is gone.
    c.rt(b"set big 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    let v = "v".repeat(101);
    c.rt(
        format!("set big 0 0 101\r\n{v}\r\n").as_bytes(),
        b"SERVER_ERROR object too large for cache\r\n",
    )
    .await;
    c.rt(b"get big\r\n", b"END\r\n").await;
    // Swallowing works when the data arrives in pieces.
    c.0.write_all(b"set big 0 0 101\r\n").await.expect("write");
    c.rt(
        &v.as_bytes()[..50],
        b"SERVER_ERROR object too large for cache\r\n",
    )
    .await;
    c.rt(
        format!("{}\r\nget big\r\n", &v[50..]).as_bytes(),
        b"END\r\n",
    )
    .await;
    c.rt(b"incr\r\n", b"ERROR\r\n").await;
}

#[tokio::test]
async fn pipelining_and_isolation() {
    let s = start(1 << 20, 100).await;
    let mut a = Conn::new(&s).await;
    let mut b = Conn::new(&s).await;
    // 200 commands in one write, replies in order.
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..100 {
        req.extend_from_slice(
            format!("set k{i} 0 0 {}\r\n{i}\r\n", i.to_string().len()).as_bytes(),
        );
        want.extend_from_slice(b"STORED\r\n");
    }
    for i in 0..100 {
        req.extend_from_slice(format!("get k{i}\r\n").as_bytes());
        want.extend_from_slice(
            format!("VALUE k{i} 0 {}\r\n{i}\r\nEND\r\n", i.to_string().len()).as_bytes(),
        );
    }
    a.rt(&req, &want).await;
    // Garbage on one connection does not disturb another.
    b.0.write_all(b"\xff\xfe garbage \0\0\r\nset x 0 0 99999999999\r\n")
        .await
        .expect("write");
    a.rt(b"get k7\r\n", b"VALUE k7 0 1\r\n7\r\nEND\r\n").await;
    // A line with no end, past the limit, closes only that connection.
    let mut c = Conn::new(&s).await;
    let junk = vec![b'x'; (1 << 20) + 10];
    let _ = c.0.write_all(&junk).await;
    let r = c.read_until(b"", b"\r\n").await;
    assert_eq!(r, "CLIENT_ERROR line too long\r\n");
    a.rt(b"get k8\r\n", b"VALUE k8 0 1\r\n8\r\nEND\r\n").await;
}

#[tokio::test]
async fn stats_use_memcached_names() {
    let s = start(1 << 20, 100).await;
    let mut c = Conn::new(&s).await;
    c.rt(
        b"set a 0 0 1\r\n1\r\nget a\r\nget b\r\n",
        b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\nEND\r\n",
    )
    .await;
    let text = c.read_until(b"stats\r\n", b"END\r\n").await;
    for name in [
        "pid",
        "uptime",
        "time",
        "version",
        "curr_items",
        "total_items",
        "bytes",
        "curr_connections",
        "total_connections",
        "cmd_get",
        "cmd_set",
        "get_hits",
        "get_misses",
        "evictions",
        "limit_maxbytes",
        "threads",
        "rusage_user",
        "delete_hits",
        "cas_badval",
        "touch_hits",
        "bytes_read",
        "bytes_written",
    ] {
        assert!(
            text.contains(&format!("STAT {name} ")),
            "missing {name} in {text}"
        );
    }
    assert!(
        text.contains("STAT get_hits 1\r\n") && text.contains("STAT get_misses 1\r\n"),
        "{text}"
    );
    assert!(text.contains("STAT curr_items 1\r\n"), "{text}");
    assert!(text.contains("STAT limit_maxbytes 67108864\r\n"), "{text}");
    let text = c.read_until(b"stats settings\r\n", b"END\r\n").await;
    assert!(text.contains("STAT item_size_max 1048576\r\n"), "{text}");
}

#[tokio::test]
async fn connection_limit() {
    let s = start(1 << 20, 2).await;
    let mut a = Conn::new(&s).await;
    let mut b = Conn::new(&s).await;
    a.rt(b"version\r\n", b"VERSION 1.6.0-strata\r\n").await;
    b.rt(b"version\r\n", b"VERSION 1.6.0-strata\r\n").await;
    let mut c = Conn::new(&s).await;
    let r = c.read_until(b"", b"\r\n").await;
    assert_eq!(r, "ERROR Too many open connections\r\n");
}

/// Thousands of concurrent connections each doing a round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections() {
    let s = start(1 << 20, 10_000).await;
    let mut conns = Vec::new();
    for _ in 0..2000 {
        conns.push(Conn::new(&s).await);
    }
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            c.rt(
                format!("set c{i} 0 0 1\r\nx\r\nget c{i}\r\n").as_bytes(),
                format!("STORED\r\nVALUE c{i} 0 1\r\nx\r\nEND\r\n").as_bytes(),
            )
            .await;
            c
        }));
    }
    let mut kept = Vec::new();
    for t in tasks {
        kept.push(t.await.expect("conn"));
    }
    assert_eq!(
        s.server
            .stats
            .curr_connections
            .load(std::sync::atomic::Ordering::Relaxed),
        2000
    );
}

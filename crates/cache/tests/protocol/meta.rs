//! The meta protocol (mg, ms, md, ma, mn and their flags), vivify races,
//! read-through collapsing, and large values pipelined past the socket
//! buffers.

use super::*;

/// Meta commands, byte for byte as memcached 1.6.18 answers them.
#[tokio::test]
async fn meta_commands() {
    let s = start(1 << 20, 100).await;
    let mut c = Conn::new(&s).await;
    c.rt(b"mg nokey v\r\n", b"EN\r\n").await;
    c.rt(b"mg nokey v k O123\r\n", b"EN knokey O123\r\n").await;
    c.rt(b"mg nokey v q\r\nmn\r\n", b"MN\r\n").await;
    c.rt(b"ms foo 3\r\nbar\r\n", b"HD\r\n").await;
    let cas = s.server.cache.peek(b"foo").expect("item").cas + 1;
    c.rt(
        b"ms foo 3 c k O9 T0 F5\r\nbar\r\n",
        format!("HD c{cas} kfoo O9\r\n").as_bytes(),
    )
    .await;
    c.rt(
        b"mg foo v c f k s t h l O7\r\n",
        format!("VA 3 c{cas} f5 kfoo s3 t-1 h0 l0 O7\r\nbar\r\n").as_bytes(),
    )
    .await;
    c.rt(b"mg foo k v\r\n", b"VA 3 kfoo\r\nbar\r\n").await;
    c.rt(b"mg foo\r\n", b"HD\r\n").await;
    c.rt(b"mg foo h\r\n", b"HD h1\r\n").await;
    c.rt(
        b"ms foo 3 MA\r\nbaz\r\nmg foo v\r\n",
        b"HD\r\nVA 6\r\nbarbaz\r\n",
    )
    .await;
    c.rt(b"ms nf 3 MR\r\nbaz\r\n", b"NS\r\n").await;
    c.rt(b"ms nf 3 ME\r\nbaz\r\n", b"HD\r\n").await;
    c.rt(b"ms nf 3 ME\r\nbaz\r\n", b"NS\r\n").await;
    c.rt(b"ms foo 3 C1\r\nbaz\r\n", b"EX\r\n").await;
    c.rt(b"ms nope 3 C1\r\nbaz\r\n", b"NF\r\n").await;
    c.rt(b"ms foo 3 q\r\nbaz\r\nmn\r\n", b"MN\r\n").await;
    c.rt(b"md foo\r\n", b"HD\r\n").await;
    c.rt(b"md foo\r\n", b"NF\r\n").await;
    c.rt(b"md foo q\r\nmn\r\n", b"NF\r\nMN\r\n").await;
    // Stampede control: one winner (W), everyone else sees Z.
    c.rt(b"mg viv N30 v t\r\n", b"VA 0 t30 W\r\n\r\n").await;
    c.rt(b"mg viv N30 v t\r\n", b"VA 0 t30 Z\r\n\r\n").await;
    c.rt(b"mg viv v\r\n", b"VA 0 Z\r\n\r\n").await;
    c.rt(
        b"ms r 1 T10\r\nx\r\nmg r R30 v t\r\nmg r R30 v t\r\n",
        b"HD\r\nVA 1 t10 W\r\nx\r\nVA 1 t10 Z\r\nx\r\n",
    )
    .await;
    // Invalidation: stale (X), the first reader wins the recache.
    c.rt(b"ms s 1\r\nx\r\nmd s I T30\r\n", b"HD\r\nHD\r\n")
        .await;
    let cas = s.server.cache.peek(b"s").expect("item").cas;
    c.rt(
        b"mg s v c\r\nmg s v\r\n",
        format!("VA 1 c{cas} X W\r\nx\r\nVA 1 Z X\r\nx\r\n").as_bytes(),
    )
    .await;
    c.rt(b"ma cnt\r\n", b"NF\r\n").await;
    c.rt(b"ma cnt N0 J10 v\r\n", b"VA 2\r\n10\r\n").await;
    c.rt(b"ma cnt v\r\n", b"VA 2\r\n11\r\n").await;
    let cas = s.server.cache.peek(b"cnt").expect("item").cas + 1;
    c.rt(
        b"ma cnt MD D5 v t c\r\n",
        format!("VA 1 t-1 c{cas}\r\n6\r\n").as_bytes(),
    )
    .await;
    c.rt(
        b"ms t 1\r\nx\r\nma t\r\n",
        b"HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    )
    .await;
    c.rt(b"ma cnt q\r\nmn\r\n", b"MN\r\n").await;
    c.rt(b"ma nope N0 MI D3 v\r\n", b"VA 1\r\n0\r\n").await;
    // Errors.
    let long = "k".repeat(251);
    c.rt(
        format!("mg {long} v\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.rt(b"mg foo v Q\r\n", b"CLIENT_ERROR invalid flag\r\n")
        .await;
    c.rt(b"mg foo v v\r\n", b"CLIENT_ERROR duplicate flag\r\n")
        .await;
    c.rt(b"mg\r\n", b"ERROR\r\n").await;
    c.rt(b"ms foo\r\n", b"CLIENT_ERROR bad command line format\r\n")
        .await;
    c.rt(
        b"ms foo 2 S\r\nxx\r\nmn\r\n",
        b"CLIENT_ERROR invalid flag\r\nMN\r\n",
    )
    .await;
    c.rt(
        b"ms foo 3 MX\r\nabc\r\nmn\r\n",
        b"CLIENT_ERROR invalid mode for ms M token\r\nMN\r\n",
    )
    .await;
    c.rt(
        b"ms foo S3\r\nabc\r\n",
        b"CLIENT_ERROR bad command line format\r\nERROR\r\n",
    )
    .await;
    c.rt(
        b"ms foo 2\r\nabcd\r\n",
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    )
    .await;
    // Base64 keys.
    c.rt(b"mg Zm9v b v k\r\n", b"EN kZm9v b\r\n").await;
    c.rt(
        b"ms Zm9v 3 b\r\nabc\r\nmg foo v\r\n",
        b"HD\r\nVA 3\r\nabc\r\n",
    )
    .await;
    c.rt(b"mg !!! b v\r\n", b"CLIENT_ERROR error decoding key\r\n")
        .await;
    // TTLs follow the injected clock.
    c.rt(b"ms ttl 1 T5\r\nx\r\n", b"HD\r\n").await;
    s.clock.advance(5);
    c.rt(b"mg ttl v\r\n", b"EN\r\n").await;
}

/// Many clients miss one key at once: exactly one wins the recache right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_client_wins_a_vivify() {
    let s = start(1 << 20, 1000).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut c = Conn::new(&s).await;
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            c.read_until(b"mg hot N30 v\r\n", b"\r\n\r\n").await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        let r = t.await.expect("task");
        if r.contains(" W\r\n") {
            winners += 1;
        } else {
            assert!(r.contains(" Z\r\n"), "{r}");
        }
    }
    assert_eq!(winners, 1);
}

/// Read-through: 100 clients miss one cold key at once; the origin is asked
/// once and every client gets the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_through_collapses_concurrent_misses() {
    /// Answers once the test opens its gate.
    struct GatedOrigin(std::sync::atomic::AtomicU64, tokio::sync::Notify);
    impl cache::through::Origin for GatedOrigin {
        fn fetch<'a>(
            &'a self,
            key: &'a [u8],
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bytes::Bytes>> + Send + 'a>>
        {
            Box::pin(async move {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if key == b"d:7" {
                    self.1.notified().await;
                }
                (key == b"d:7").then(|| bytes::Bytes::from_static(b"seven"))
            })
        }
    }
    let origin = Arc::new(GatedOrigin(Default::default(), tokio::sync::Notify::new()));
    let cache = Arc::new(Cache::new(
        CacheConfig::default(),
        Arc::new(cache::SystemClock),
    ));
    let server = CacheServer::with_origin(cache, ServerOptions::default(), origin.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(serve(l, server.clone(), std::future::pending()));
    let srv = Srv {
        addr,
        clock: Arc::new(ManualClock::new(T0)),
        server,
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut c = Conn::new(&srv).await;
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            c.rt(b"get d:7\r\n", b"VALUE d:7 0 5\r\nseven\r\nEND\r\n")
                .await;
        }));
    }
    // The gate opens once the other 99 misses follow the first one's read
    // (a condition, not a guess at how long that takes).
    let through = srv.server.through.as_ref().expect("read-through");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while through.waiting(b"d:7") < 99 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} misses joined the read",
            through.waiting(b"d:7")
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    origin.1.notify_one();
    for t in tasks {
        t.await.expect("client");
    }
    assert_eq!(origin.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A key the origin does not have is a plain miss.
    let mut c = Conn::new(&srv).await;
    c.rt(b"get d:8\r\n", b"END\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_pipelined_past_the_socket_buffers_arrive_whole_and_in_order() {
    // Values of 1 KiB and more go out by reference in one writev; a reply
    // of ~40 MiB cannot fit the socket buffers, so the server's writes are
    // short and must resume mid-value.
    let s = start(1 << 20, 100).await;
    let mut a = Conn::new(&s).await;
    let sizes = [1023usize, 1024, 4096, 300_000, 1 << 20];
    let mut want = Vec::new();
    let mut req = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let v: Vec<u8> = (0..*n).map(|j| (j * 7 + i) as u8).collect();
        a.rt(
            &[format!("set k{i} 5 0 {n}\r\n").as_bytes(), &v, b"\r\n"].concat(),
            b"STORED\r\n",
        )
        .await;
        want.push((format!("k{i}"), v));
    }
    let mut expect = Vec::new();
    for round in 0..30 {
        req.extend_from_slice(b"get");
        for (k, _) in want.iter().skip(round % 2) {
            req.extend_from_slice(format!(" {k}").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        for (k, v) in want.iter().skip(round % 2) {
            expect.extend_from_slice(format!("VALUE {k} 5 {}\r\n", v.len()).as_bytes());
            expect.extend_from_slice(v);
            expect.extend_from_slice(b"\r\n");
        }
        expect.extend_from_slice(b"END\r\n");
    }
    a.0.write_all(&req).await.expect("write");
    let mut got = vec![0u8; expect.len()];
    tokio::time::timeout(Duration::from_secs(30), a.0.read_exact(&mut got))
        .await
        .expect("reply in time")
        .expect("read");
    assert!(got == expect, "the pipelined reply differs");
    a.rt(
        b"get k0\r\n",
        &[
            b"VALUE k0 5 1023\r\n".as_slice(),
            &want[0].1,
            b"\r\nEND\r\n",
        ]
        .concat(),
    )
    .await;
}

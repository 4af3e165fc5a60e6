//! The fault proxy itself: each fault does what it says to a real TCP
//! echo server behind it.

use std::time::{Duration, Instant};

use testkit::{Fault, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn echo(s: &mut TcpStream, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
    s.write_all(msg).await.ok()?;
    let mut buf = vec![0u8; msg.len()];
    match tokio::time::timeout(wait, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

#[tokio::test]
async fn each_fault_acts_on_open_and_new_connections() {
    let target = echo_server().await;
    let p = FaultProxy::start("127.0.0.1:0".parse().unwrap(), target)
        .await
        .unwrap();
    let long = Duration::from_secs(5);
    let mut c = TcpStream::connect(p.addr()).await.unwrap();
    assert_eq!(
        echo(&mut c, b"hello", long).await.as_deref(),
        Some(&b"hello"[..])
    );

    // Latency: each way waits.
    p.set(Fault::Latency(Duration::from_millis(100)));
    let t0 = Instant::now();
    assert_eq!(
        echo(&mut c, b"slow", long).await.as_deref(),
        Some(&b"slow"[..])
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );

    // Blackhole: the connection stays open, nothing crosses; once it
    // heals, what was held crosses, as TCP retransmission would deliver
    // it after a short partition.
    p.set(Fault::Blackhole);
    assert_eq!(
        echo(&mut c, b"held", Duration::from_millis(300)).await,
        None
    );
    let mut during = TcpStream::connect(p.addr())
        .await
        .expect("connect during partition");
    assert_eq!(
        echo(&mut during, b"x", Duration::from_millis(300)).await,
        None
    );
    p.set(Fault::Pass);
    let mut held = [0u8; 4];
    tokio::time::timeout(long, c.read_exact(&mut held))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&held, b"held");
    assert_eq!(
        echo(&mut c, b"back", long).await.as_deref(),
        Some(&b"back"[..])
    );

    // Reset: the open connection is reset, new ones too.
    p.set(Fault::Reset);
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(long, c.read(&mut buf))
        .await
        .expect("reset in time");
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    let mut n = TcpStream::connect(p.addr()).await.unwrap();
    let r = tokio::time::timeout(long, n.read(&mut buf))
        .await
        .expect("reset in time");
    assert!(r.is_err() || r.is_ok_and(|n| n == 0));

    // Drop: new connections are closed at once.
    p.set(Fault::Drop);
    let mut n = TcpStream::connect(p.addr()).await.unwrap();
    let r = tokio::time::timeout(long, n.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(r, Ok(0)) || r.is_err());
    p.set(Fault::Pass);
    let mut n = TcpStream::connect(p.addr()).await.unwrap();
    assert_eq!(echo(&mut n, b"ok", long).await.as_deref(), Some(&b"ok"[..]));
}

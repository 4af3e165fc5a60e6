//! A fake backend for the gateway's tests, shared by the test files that
//! name this module: raw HTTP/1.1 over keep-alive connections, answering
//! its name; [`backend`] adds `+xff` when the gateway sent
//! `X-Forwarded-For: 127.0.0.1`, [`held_backend`] holds requests for
//! `/hold...` until the test hands out a permit.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// A running fake backend; [`Fake::kill`] stops it and every connection
/// it holds.
pub struct Fake {
    task: tokio::task::JoinHandle<()>,
    /// One clone per live connection task.
    live: Arc<()>,
}

impl Fake {
    /// Stops accepting and waits until no connection task is left: an
    /// aborted task that was mid-poll on another worker may still answer
    /// one request, so the abort alone does not make the backend dead.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        while Arc::strong_count(&self.live) > 1 {
            tokio::task::yield_now().await;
        }
    }
}

/// A fake backend answering `name`, or `name+xff` when the request came
/// with `X-Forwarded-For: 127.0.0.1`.
#[allow(dead_code)] // each test file uses one of the two
pub async fn backend(name: &'static str) -> (SocketAddr, Fake) {
    start(name, None, true).await
}

/// A fake backend answering `name`; a request for a path starting with
/// `/hold` waits for a permit of `hold` first.
#[allow(dead_code)]
pub async fn held_backend(name: &'static str, hold: Arc<Semaphore>) -> (SocketAddr, Fake) {
    start(name, Some(hold), false).await
}

async fn start(
    name: &'static str,
    hold: Option<Arc<Semaphore>>,
    mark_xff: bool,
) -> (SocketAddr, Fake) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    let live = Arc::new(());
    let held = live.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (alive, hold) = (held.clone(), hold.clone());
            conns.spawn(async move {
                let _alive = alive;
                let mut buf = vec![0u8; 8192];
                loop {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    if let (Some(hold), true) = (&hold, got.starts_with(b"GET /hold")) {
                        let Ok(p) = hold.acquire().await else { return };
                        p.forget();
                    }
                    let xff = mark_xff
                        && String::from_utf8_lossy(&got).lines().any(|l| {
                            l.to_ascii_lowercase()
                                .starts_with("x-forwarded-for: 127.0.0.1")
                        });
                    let body = format!("{name}{}", if xff { "+xff" } else { "" });
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (a, Fake { task, live })
}

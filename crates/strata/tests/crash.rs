//! kill -9 while PUTs stream in: every acknowledged blob survives bit-exact,
//! and no torn blob is ever served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use testkit::{blob, Procs, StatusCode};

fn size_of(i: u64) -> usize {
    // 1 KiB .. ~200 KiB, so some writes are large enough to tear.
    1024 + ((i * 7919) % 200) as usize * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_blobs_survive_kill_9() {
    let mut p = Procs::serve(env!("CARGO_BIN_EXE_strata").as_ref())
        .await
        .expect("serve");
    let c = p.client();
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    // Kill once this many writes are acknowledged, with writers still going.
    let kill_after = 300;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (c, acked, next, tx) = (c.clone(), acked.clone(), next.clone(), tx.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match c
                    .put(&format!("/v1/blobs/crash/{i}"), blob(i, size_of(i)))
                    .await
                {
                    Ok(r) if r.status == StatusCode::CREATED => {
                        let n = {
                            let mut a = acked.lock().expect("lock");
                            a.push(i);
                            a.len()
                        };
                        if n == kill_after {
                            let _ = tx.send(()).await;
                        }
                    }
                    // The server is gone: stop writing.
                    _ => return,
                }
            }
        }));
    }
    drop(tx);
    rx.recv().await.expect("enough writes acknowledged");
    p.kill("serve").expect("kill -9");
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    let attempted = next.load(Ordering::Relaxed);
    assert!(acked.len() >= kill_after);

    p.restart("serve").await.expect("restart");
    let c = p.client();
    for &i in &acked {
        let r = c.get(&format!("/v1/blobs/crash/{i}")).await.expect("get");
        assert_eq!(r.status, StatusCode::OK, "acknowledged blob {i} lost");
        assert!(
            r.body[..] == blob(i, size_of(i))[..],
            "acknowledged blob {i} corrupt"
        );
    }
    // Writes in flight at the kill may or may not have landed, but none may
    // come back torn.
    for i in 0..attempted {
        let r = c.get(&format!("/v1/blobs/crash/{i}")).await.expect("get");
        match r.status {
            StatusCode::OK => assert!(
                r.body[..] == blob(i, size_of(i))[..],
                "torn blob {i} served"
            ),
            StatusCode::NOT_FOUND => assert!(!acked.contains(&i)),
            s => panic!("blob {i}: unexpected {s}"),
        }
    }
    // And the restarted server takes writes again.
    assert_eq!(
        c.put("/v1/blobs/after", "x").await.expect("put").status,
        StatusCode::CREATED
    );
}

//! The queue as a real process: SIGKILL during a stream of puts loses no
//! acknowledged job; a queue member serves nodes' asynchronous uploads.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::{Client, Method, Procs, StatusCode};

mod common;
use common::bin;

/// A standalone broker on `listener` (held by the test since its port
/// was chosen, or bound again for a restart), handed over as the kit
/// hands members theirs.
fn start_queue(data: &std::path::Path, listener: std::net::TcpListener) -> std::process::Child {
    let addr = listener.local_addr().expect("addr");
    let mut cmd = Command::new(bin());
    cmd.args([
        "queue",
        "--listen",
        &addr.to_string(),
        "--threads",
        "2",
        "--data",
    ])
    .arg(data)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null());
    strata::sockets::hand_over(&mut cmd, &[listener]).expect("hand over");
    cmd.spawn().expect("spawn queue")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tmp");
    let listener = testkit::ports::listen_free().expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut child = start_queue(dir.path(), listener);
    let c = Client::new(format!("http://{addr}"));
    c.wait_ready("/healthz", Duration::from_secs(20))
        .await
        .expect("ready");

    // Writers put jobs as fast as they are acknowledged, and remember every
    // acknowledged id with its payload.
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (c, acked) = (c.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let payload = format!("writer {w} job {i}");
                match c
                    .send(Method::POST, "/v1/queues/crash/jobs", &[], payload.clone())
                    .await
                {
                    Ok(r) if r.status == StatusCode::CREATED => {
                        let id = r.json()["id"].as_u64().expect("id");
                        acked.lock().expect("lock").push((id, payload));
                    }
                    _ => return,
                }
            }
        }));
    }
    // Let it run until a good number are acknowledged, then SIGKILL. A
    // writer stops at its first refusal; if all stopped before that, the
    // broker failed, and waiting on would wait forever.
    testkit::until_async(
        "2000 jobs acknowledged",
        Duration::from_secs(120),
        async || {
            let n = acked.lock().expect("lock").len();
            assert!(
                writers.iter().any(|w| !w.is_finished()),
                "every writer was refused after {n} jobs"
            );
            match n {
                2000.. => Ok(()),
                _ => Err(format!("{n} acknowledged")),
            }
        },
    )
    .await;
    child.kill().expect("kill");
    child.wait().expect("wait");
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();

    let again = std::net::TcpListener::bind(addr).expect("bind the port again");
    let mut child = start_queue(dir.path(), again);
    c.wait_ready("/healthz", Duration::from_secs(20))
        .await
        .expect("ready again");
    for (id, payload) in &acked {
        let r = c
            .get(&format!("/v1/jobs/{id}/payload"))
            .await
            .expect("payload");
        assert_eq!(r.status, StatusCode::OK, "acknowledged job {id} lost");
        assert_eq!(&r.body[..], payload.as_bytes(), "job {id}");
    }
    let stats = c.get("/v1/queues/crash/stats").await.expect("stats").json();
    assert!(stats["ready"].as_u64().expect("ready") >= acked.len() as u64);
    child.kill().expect("kill");
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_member_serves_the_nodes_async_uploads() {
    let p = Procs::cluster_with_queue(bin(), 2, 2, "")
        .await
        .expect("cluster");
    let c = p.client();
    let r = c
        .send(
            Method::PUT,
            "/v1/blobs/q/dog.png",
            &[("prefer", "respond-async")],
            testkit::blob(3, 50_000),
        )
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let loc = r.header("location");
    let j = testkit::until_async("the job succeeds", Duration::from_secs(10), async || {
        let j = c.get(&loc).await.expect("status").json();
        match j["state"] == "succeeded" {
            true => Ok(j),
            false => Err(j.to_string()),
        }
    })
    .await;
    assert_eq!(j["result"]["size"], 50_000);
    let g = c.get("/v1/blobs/q/dog.png").await.expect("get");
    assert!(g.status == StatusCode::OK && g.body[..] == testkit::blob(3, 50_000)[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replica_is_copied_back_by_a_repair_job() {
    // No caches: every GET reads the stores.
    let p = Procs::cluster_with_queue(bin(), 2, 2, "[cache]\nenabled = false\n")
        .await
        .expect("cluster");
    let c = p.client();
    let body = testkit::blob(9, 40_000);
    let r = c.put("/v1/blobs/keep/me", body.clone()).await.expect("put");
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.json()["id"].as_u64().expect("id");
    // The replica read first loses its copy (as a disk replaced empty
    // would).
    let first = cluster::rendezvous(&["store-1", "store-2"], id)[0].to_owned();
    let store = Client::new(format!("http://{}", p.addr(&first)));
    let path = format!("/blobs/{id}");
    assert_eq!(
        store.delete(&path).await.expect("delete").status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        store.get(&path).await.expect("get").status,
        StatusCode::NOT_FOUND
    );
    // A read still succeeds (the other replica) and queues the repair ...
    let g = c.get("/v1/blobs/keep/me").await.expect("get");
    assert!(g.status == StatusCode::OK && g.body[..] == body[..]);
    // ... whose worker puts the copy back.
    let r = testkit::until_async(
        "the lost replica is restored",
        Duration::from_secs(10),
        async || {
            let r = store.get(&path).await.expect("get");
            match r.status {
                StatusCode::OK => Ok(r),
                st => Err(st.to_string()),
            }
        },
    )
    .await;
    assert!(r.body[..] == body[..]);
}

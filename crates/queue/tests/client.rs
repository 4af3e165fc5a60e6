//! `queue::client::QueueClient` against its own server (the jobs API over
//! the built-in broker), over a real socket: what the nodes' workers do,
//! and the answers for a wrong lease, a missing job and a member that is
//! not there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use queue::client::QueueClient;
use queue::{Broker, BrokerOptions, Error, Handle, SystemClock};

#[tokio::test]
async fn workers_put_reserve_complete_and_fail_through_the_jobs_api() {
    let dir = tempfile::tempdir().expect("tmp");
    let b =
        Broker::open(dir.path(), BrokerOptions::default(), Arc::new(SystemClock)).expect("open");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(queue::http::serve(l, b, std::future::pending()));
    let c = QueueClient::new(format!("http://{addr}"), Duration::from_secs(5));

    // An empty queue answers no job after the wait.
    assert!(c
        .reserve("uploads", Duration::from_millis(10))
        .await
        .expect("reserve")
        .is_none());
    let id = c
        .put("uploads", Bytes::from_static(b"one"), Some("k1".into()), 3)
        .await
        .expect("put");
    // The same idempotency key is the same job.
    let again = c
        .put("uploads", Bytes::from_static(b"one"), Some("k1".into()), 3)
        .await
        .expect("put again");
    assert_eq!(again, id);
    let j = c
        .reserve("uploads", Duration::from_secs(1))
        .await
        .expect("reserve")
        .expect("a job");
    assert_eq!((j.id, &j.payload[..]), (id, &b"one"[..]));
    // A wrong lease is refused as such, the right one completes it.
    assert!(matches!(
        c.complete(id, j.lease + 7, Bytes::new()).await,
        Err(Error::NotReserved(_))
    ));
    c.complete(id, j.lease, Bytes::from_static(b"{\"ok\":true}"))
        .await
        .expect("complete");
    let st = c.status(id).await.expect("status").expect("known");
    assert_eq!(st["state"], "succeeded", "{st}");
    // A failed attempt goes back for a retry.
    let id2 = c
        .put("uploads", Bytes::from_static(b"two"), None, 3)
        .await
        .expect("put");
    let j = c
        .reserve("uploads", Duration::from_secs(1))
        .await
        .expect("reserve")
        .expect("a job");
    c.fail(id2, j.lease, "disk on fire").await.expect("fail");
    let st = c.status(id2).await.expect("status").expect("known");
    assert_eq!(st["state"], "retrying", "{st}");
    // Unknown jobs.
    assert!(c.status(999).await.expect("status").is_none());
    assert!(matches!(
        c.complete(999, 1, Bytes::new()).await,
        Err(Error::NotFound(999))
    ));
}

#[tokio::test]
async fn a_queue_that_is_not_there_is_unreachable() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    let c = QueueClient::new(format!("http://{addr}"), Duration::from_secs(2));
    assert!(matches!(
        c.put("q", Bytes::from_static(b"x"), None, 1).await,
        Err(Error::Unreachable(_))
    ));
}

/// One producer's, worker's and operator's session through `h`; what it
/// saw, as plain values to compare between the two ways of reaching a
/// queue.
async fn session(h: &Handle) -> Vec<String> {
    let mut seen = Vec::new();
    let id = h
        .put("uploads", Bytes::from_static(b"one"), Some("k".into()), 3)
        .await
        .expect("put");
    let again = h
        .put("uploads", Bytes::from_static(b"one"), Some("k".into()), 3)
        .await
        .expect("put again");
    seen.push(format!("idempotent: {}", id == again));
    let j = h
        .reserve("uploads", Duration::from_secs(1))
        .await
        .expect("reserve")
        .expect("a job");
    seen.push(format!("leased {} {:?}", j.id == id, j.payload));
    h.finish(&j, Ok(Bytes::from_static(b"{}")))
        .await
        .expect("complete");
    let st = h.status(id).await.expect("status").expect("known");
    seen.push(format!("state {}", st["state"]));
    // Out of attempts at the first failure: a dead letter.
    let d = h
        .put("thumbs", Bytes::from_static(b"two"), None, 1)
        .await
        .expect("put");
    let j = h
        .reserve("thumbs", Duration::from_secs(1))
        .await
        .expect("reserve")
        .expect("a job");
    h.finish(&j, Err("no such image".into()))
        .await
        .expect("fail");
    seen.push(format!(
        "state {}",
        h.status(d).await.unwrap().unwrap()["state"]
    ));
    // A lease that is not the job's is refused, not applied.
    let stale = queue::client::Reserved {
        lease: j.lease + 5,
        ..j.clone()
    };
    seen.push(format!("{:?}", h.finish(&stale, Ok(Bytes::new())).await));
    let mut view = h.overview(10).await.expect("overview");
    view.sort_by_key(|v| v["name"].as_str().unwrap_or_default().to_owned());
    for v in &view {
        let dead: Vec<_> = v["dead_jobs"]
            .as_array()
            .expect("dead list")
            .iter()
            .map(|s| s["id"].as_u64() == Some(d))
            .collect();
        seen.push(format!(
            "{} ready {} dead {} succeeded {} dead_jobs {dead:?}",
            v["name"], v["ready"], v["dead"], v["succeeded"]
        ));
    }
    h.kick_job(d).await.expect("kick");
    seen.push(format!(
        "state {}",
        h.status(d).await.unwrap().unwrap()["state"]
    ));
    h.delete(d).await.expect("delete");
    seen.push(format!("gone {}", h.status(d).await.unwrap().is_none()));
    seen.push(format!(
        "{:?}",
        h.kick_job(d).await.map_err(|e| e.to_string())
    ));
    seen.push(format!(
        "{:?}",
        h.delete(d).await.map_err(|e| e.to_string())
    ));
    seen
}

#[tokio::test]
async fn a_handle_acts_the_same_on_the_broker_in_process_and_over_http() {
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let open = |d: &std::path::Path| {
        Broker::open(d, BrokerOptions::default(), Arc::new(SystemClock)).expect("open")
    };
    let local = Handle::Local(open(d1.path()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(queue::http::serve(
        l,
        open(d2.path()),
        std::future::pending(),
    ));
    let remote = Handle::Remote(QueueClient::new(
        format!("http://{addr}"),
        Duration::from_secs(5),
    ));
    let here = session(&local).await;
    let there = session(&remote).await;
    assert_eq!(here, there);
    // And what they agree on is what a queue should do.
    assert_eq!(here[0], "idempotent: true");
    assert_eq!(here[2], "state \"succeeded\"");
    assert_eq!(here[3], "state \"dead\"");
    assert!(here[4].starts_with("Err(NotReserved"), "{}", here[4]);
    assert!(
        here.iter()
            .any(|s| s.contains("\"thumbs\" ready 0 dead 1") && s.ends_with("[true]")),
        "{here:?}"
    );
    assert_eq!(here[here.len() - 4], "state \"ready\"");
    assert_eq!(here[here.len() - 3], "gone true");
    assert!(here[here.len() - 2].starts_with("Err("), "{here:?}");
}

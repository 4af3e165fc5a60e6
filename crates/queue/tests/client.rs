//! `queue::client::QueueClient` against its own server (the jobs API over
//! the built-in broker), over a real socket: what the nodes' workers do,
//! and the answers for a wrong lease, a missing job and a member that is
//! not there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use queue::client::QueueClient;
use queue::{Broker, BrokerOptions, Error, SystemClock};

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

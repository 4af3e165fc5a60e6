//! `search::client::ShardClient` against its own server, over a real
//! socket: page changes applied in order (a stale one dropped), a search
//! found by book, a query that does not parse, a member that is not there.

use std::time::Duration;

use search::client::ShardClient;
use search::{Applied, Error, PageOp, Query, Shard, ShardOptions};

fn upsert(key: &str, book: &str, page: u64, text: &str, version: u64) -> PageOp {
    PageOp::Upsert {
        key: key.into(),
        book: book.into(),
        page,
        text: text.into(),
        version,
    }
}

#[tokio::test]
async fn pages_go_in_and_searches_come_back_through_the_shards_own_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let shard = Shard::open(dir.path(), ShardOptions::default()).expect("open");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(search::server::serve(l, shard, std::future::pending()));
    let c = ShardClient::new(format!("http://{addr}"), Duration::from_secs(10));

    let applied = c
        .apply(&[
            upsert("moby/1", "moby dick", 1, "call me ishmael", 2),
            upsert("moby/1", "moby dick", 1, "an older text", 1),
            upsert("walden/1", "walden", 1, "i went to the woods", 1),
        ])
        .await
        .expect("apply");
    assert_eq!(
        applied,
        vec![Applied::Applied, Applied::Stale, Applied::Applied]
    );
    let q = Query {
        q: "ishmael".into(),
        book: None,
        limit: 10,
        pages: 3,
    };
    let r = c.search(&q).await.expect("search");
    assert_eq!(r.books.len(), 1, "{r:?}");
    assert_eq!(r.books[0].book, "moby dick");
    // A book name that needs escaping in the query string.
    let only = Query {
        q: "woods".into(),
        book: Some("walden".into()),
        ..q.clone()
    };
    assert_eq!(
        c.search(&only).await.expect("search").books[0].book,
        "walden"
    );
    // The stale text never went in.
    let old = Query {
        q: "older".into(),
        ..q.clone()
    };
    assert!(c.search(&old).await.expect("search").books.is_empty());
    // A query that cannot parse is the shard's own error.
    let bad = Query {
        q: "\"unbalanced".into(),
        ..q
    };
    match c.search(&bad).await {
        Err(Error::BadQuery(_)) => {}
        other => panic!("bad query: {other:?}"),
    }
}

#[tokio::test]
async fn a_member_that_is_not_there_is_unreachable() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    let c = ShardClient::new(format!("http://{addr}"), Duration::from_secs(2));
    assert!(matches!(c.apply(&[]).await, Err(Error::Unreachable(_))));
}

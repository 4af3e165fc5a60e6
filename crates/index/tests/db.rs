//! The redb index across restarts (ids and commit numbers go on). The
//! model test against a BTreeMap, views and replica compare-and-set run
//! against every backend in `testkit/tests/index_backends.rs`.

use index::{BlobMeta, IndexDb};

fn meta(id: u64, tags: &[&str]) -> BlobMeta {
    BlobMeta {
        id,
        size: id * 10,
        etag: format!("\"{id:016x}\""),
        content_type: "image/jpeg".into(),
        created_ms: 1_700_000_000_000 + id,
        replicas: vec!["s1".into()],
        tags: tags.iter().map(|t| t.to_string()).collect(),
        version: 0,
        page: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn ids_and_commit_numbers_are_unique_across_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = IndexDb::open(dir.path()).expect("open");
    let a = db.alloc_ids(100).await.expect("alloc");
    let b = db.alloc_ids(100).await.expect("alloc");
    assert_eq!(a, 1);
    assert_eq!(b, 101);
    assert!(db.alloc_ids(0).await.is_err());
    db.put("k".into(), meta(1, &["t"])).await.expect("put");
    drop(db);
    // Dropping the handle joins its writer, so the file reopens at once.
    let db = IndexDb::open(dir.path()).expect("reopen");
    assert_eq!(db.alloc_ids(1).await.expect("alloc"), 201);
    let mut want = meta(1, &["t"]);
    want.version = 1;
    assert_eq!(db.get("k").expect("get"), Some(want));
    // Commit numbers go on from where they were.
    let c = db
        .put_versioned("k".into(), meta(2, &[]))
        .await
        .expect("put");
    assert_eq!(c.version, 2);
}

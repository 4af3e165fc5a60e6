//! Index: model-based check against a BTreeMap, views, ids, durability.

use std::collections::BTreeMap;

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
    }
}

#[tokio::test]
async fn agrees_with_a_btreemap_model() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = IndexDb::open(dir.path()).expect("open");
    let mut model: BTreeMap<String, BlobMeta> = BTreeMap::new();
    let mut x: u64 = 12345;
    // Every put and every delete of a present key takes the next commit
    // number; the model counts them the same way.
    let mut version = 0;
    for step in 0..600u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = format!(
            "{}/{:03}",
            ["cats", "dogs", "cat", "z"][(x >> 60) as usize % 4],
            (x >> 40) % 200
        );
        if (x >> 33) % 5 == 0 {
            let c = db.delete_versioned(key.clone()).await.expect("delete");
            let had = model.remove(&key);
            if had.is_some() {
                version += 1;
                assert_eq!(c.version, version);
            } else {
                assert_eq!(c.version, 0);
            }
            assert_eq!(c.previous, had);
        } else {
            let tags: &[&str] = if step % 2 == 0 {
                &["even"]
            } else {
                &["odd", "all"]
            };
            let mut m = meta(step, tags);
            version += 1;
            let c = db.put_versioned(key.clone(), m.clone()).await.expect("put");
            assert_eq!(c.version, version);
            m.version = version;
            assert_eq!(db.get(&key).expect("get").as_ref(), Some(&m));
            assert_eq!(c.previous, model.insert(key, m));
        }
    }
    // Prefix listing, page by page, equals the model's range.
    for prefix in ["", "cat", "cats/", "dogs/1", "nothing"] {
        let want: Vec<String> = model
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = db.list(prefix, after.as_deref(), 7).expect("list");
            assert!(page.items.len() <= 7);
            got.extend(page.items.iter().map(|e| e.key.clone()));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(got, want, "prefix {prefix:?}");
    }
    // Tag view equals the model filtered by tag; overwrites moved tags.
    for tag in ["even", "odd", "all", "none"] {
        let want: Vec<String> = model
            .iter()
            .filter(|(_, m)| m.tags.iter().any(|t| t == tag))
            .map(|(k, _)| k.clone())
            .collect();
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = db.list_tag(tag, after.as_deref(), 11).expect("tag");
            got.extend(page.items.iter().map(|e| e.key.clone()));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(got, want, "tag {tag}");
    }
    for (k, m) in &model {
        assert_eq!(db.get(k).expect("get").as_ref(), Some(m));
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

#[tokio::test]
async fn replica_lists_change_only_while_the_key_names_the_same_blob() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = IndexDb::open(dir.path()).expect("open");
    let v = db
        .put_versioned("k".into(), meta(7, &["t"]))
        .await
        .expect("put")
        .version;
    let moved = vec!["s2".to_owned(), "s3".to_owned()];
    assert!(db
        .set_replicas("k".into(), 7, moved.clone())
        .await
        .expect("cas"));
    let m = db.get("k").expect("get").expect("present");
    assert_eq!(m.replicas, moved);
    // Not a content change: version and tags stay.
    assert_eq!(m.version, v);
    assert_eq!(db.list_tag("t", None, 10).expect("tag").items.len(), 1);
    // Overwritten with another blob: the stale change is refused.
    db.put("k".into(), meta(8, &[])).await.expect("overwrite");
    assert!(!db
        .set_replicas("k".into(), 7, vec!["s9".into()])
        .await
        .expect("cas"));
    assert_eq!(db.get("k").expect("get").expect("present").id, 8);
    assert!(!db
        .set_replicas("gone".into(), 1, vec![])
        .await
        .expect("cas"));
}

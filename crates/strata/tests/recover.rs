//! `strata recover-index`: the name index of `strata serve` is deleted and
//! rebuilt from the stores' needles by the real binary (a first run
//! crashing halfway, a second finishing); every key reads
//! back with its metadata, listings and tag listings are what they were,
//! deleted keys stay deleted, and new writes get ids no needle holds.

use std::collections::BTreeMap;
use std::process::Command;

use testkit::{blob, Client, InProc, Method, StatusCode};

const KEYS: u64 = 1000;

fn tags_of(i: u64) -> String {
    match i % 4 {
        0 => "cats,pets".into(),
        1 => "dogs".into(),
        2 => String::new(),
        _ => format!("batch-{}", i % 7),
    }
}

async fn put(c: &Client, key: &str, body: Vec<u8>, tags: &str, ctype: &str) {
    let mut h = vec![("content-type", ctype)];
    if !tags.is_empty() {
        h.push(("x-strata-tags", tags));
    }
    let r = c
        .send(Method::PUT, &format!("/v1/blobs/{key}"), &h, body)
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::CREATED, "{key}: {}", r.text());
}

/// Every key with its bytes, etag and type; and the listings.
type Snapshot = (
    BTreeMap<String, (Vec<u8>, String, String)>,
    Vec<Vec<String>>,
);

/// What a reader sees of every key, and the listings.
async fn snapshot(c: &Client) -> Snapshot {
    let mut listings = Vec::new();
    for q in [
        "prefix=",
        "prefix=photos/1",
        "tag=cats",
        "tag=dogs",
        "tag=batch-3",
    ] {
        let mut keys = Vec::new();
        let mut after = String::new();
        loop {
            let r = c
                .get(&format!("/v1/blobs?{q}&limit=97&after={after}"))
                .await
                .expect("list");
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            let j = r.json();
            for e in j["items"].as_array().expect("items") {
                keys.push(e["key"].as_str().expect("key").to_owned());
            }
            match j["next"].as_str() {
                Some(n) => after = n.to_owned(),
                None => break,
            }
        }
        listings.push(keys);
    }
    let mut all = BTreeMap::new();
    for k in &listings[0] {
        let r = c.get(&format!("/v1/blobs/{k}")).await.expect("get");
        assert_eq!(r.status, StatusCode::OK, "{k}: {}", r.text());
        all.insert(
            k.clone(),
            (r.body.to_vec(), r.header("etag"), r.header("content-type")),
        );
    }
    (all, listings)
}

/// Overwrites every `over`-th of keys `0..n` (other body, tags and type)
/// and deletes every `del`-th from 3 on; returns the deleted keys.
async fn overwrite_and_delete(c: &Client, n: u64, over: usize, del: usize) -> Vec<String> {
    for i in (0..n).step_by(over) {
        let key = format!("photos/{i}.img");
        put(
            c,
            &key,
            blob(60_000 + i, 99),
            "dogs,overwritten",
            "image/webp",
        )
        .await;
    }
    let mut deleted = Vec::new();
    for i in (3..n).step_by(del) {
        let key = format!("photos/{i}.img");
        let r = c.delete(&format!("/v1/blobs/{key}")).await.expect("delete");
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{key}");
        deleted.push(key);
    }
    deleted
}

/// What readers see is what they saw before the index was lost, and
/// deleted keys stay deleted.
async fn assert_as_before(c: &Client, before: &Snapshot, deleted: &[String]) {
    let after = snapshot(c).await;
    assert_eq!(after.1, before.1, "listings and tag listings");
    assert_eq!(after.0, before.0, "every key with its bytes, etag and type");
    for k in deleted {
        let r = c.get(&format!("/v1/blobs/{k}")).await.expect("get");
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{k} stays deleted");
    }
}

/// The run succeeded and says it recovered `keys` keys.
fn assert_recovered(out: &std::process::Output, keys: usize) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("recovered {keys} keys")), "{text}");
}

fn recover(data: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(testkit::strata_bin().expect("strata binary"))
        .args(["recover-index", "--quiet", "--data"])
        .arg(data)
        .args(extra)
        .output()
        .expect("run recover-index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_index_is_rebuilt_from_the_stores() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let s = InProc::serve_default(&data).await.expect("serve");
    let c = s.client.clone();
    let mut load = tokio::task::JoinSet::new();
    for i in 0..KEYS {
        let c = c.clone();
        load.spawn(async move {
            let ctype = if i % 2 == 0 {
                "image/png"
            } else {
                "image/jpeg"
            };
            put(
                &c,
                &format!("photos/{i}.img"),
                blob(i, 100 + (i as usize * 13) % 900),
                &tags_of(i),
                ctype,
            )
            .await;
        });
        if load.len() >= 16 {
            load.join_next().await.expect("task").expect("put");
        }
    }
    while let Some(r) = load.join_next().await {
        r.expect("put");
    }
    // Overwrites (new body, other tags), deletes, and a key deleted and
    // written again.
    let mut deleted = overwrite_and_delete(&c, KEYS, 9, 17).await;
    let back = deleted.pop().expect("one");
    put(&c, &back, blob(77_777, 10), "cats", "image/png").await;
    let before = snapshot(&c).await;
    assert_eq!(before.0.len() as u64, KEYS - deleted.len() as u64);
    s.stop().await.expect("stop");

    std::fs::remove_dir_all(data.join("index")).expect("the index is lost");
    // The first run crashes with 300 entries written.
    let crashed = Command::new(testkit::strata_bin().expect("strata binary"))
        .args(["recover-index", "--quiet", "--data"])
        .arg(&data)
        .env("STRATA_CRASH_AFTER_KEYS", "300")
        .output()
        .expect("run recover-index");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(crashed.status.signal(), Some(6), "aborted: {crashed:?}");
    // What it left holds keys: a run is refused unless told to write
    // over them, and then finishes the job.
    let again = recover(&data, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--replace"));
    let finished = recover(&data, &["--replace"]);
    assert_recovered(&finished, before.0.len());

    let s = InProc::serve_default(&data).await.expect("serve again");
    let c = s.client.clone();
    assert_as_before(&c, &before, &deleted).await;
    // New writes take ids above every needle's: nothing old is shadowed.
    for i in 0..50 {
        put(
            &c,
            &format!("new/{i}"),
            blob(90_000 + i, 64),
            "",
            "image/png",
        )
        .await;
    }
    assert_eq!(snapshot(&c).await.0.len(), before.0.len() + 50);
    for (k, (body, _, _)) in &before.0 {
        let r = c.get(&format!("/v1/blobs/{k}")).await.expect("get");
        assert_eq!(&r.body[..], &body[..], "{k} after new writes");
    }
    s.stop().await.expect("stop");
}

/// A cluster whose name index lives in PostgreSQL loses it (every table
/// dropped); `recover-index --config` reads the three stores while they
/// serve and writes the index back into the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_postgres_index_is_rebuilt_from_the_stores() {
    let pg = testkit::PgCluster::single().expect("PostgreSQL for the test");
    let extra = format!(
        "[index]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_env = \"STRATA_PG_PASSWORD\"\n",
        pg.url()
    );
    let layout = testkit::Layout {
        stores: 3,
        replicas: 2,
        external_index: true,
        ..Default::default()
    };
    let env = [("STRATA_PG_PASSWORD", pg.password.as_str())];
    let bin = testkit::strata_bin().expect("strata binary");
    let mut procs = testkit::Procs::launch_with_env(&bin, layout, &extra, &env)
        .await
        .expect("cluster");
    let c = procs.client();
    for i in 0..300u64 {
        put(
            &c,
            &format!("photos/{i}.img"),
            blob(i, 200 + i as usize),
            &tags_of(i),
            "image/png",
        )
        .await;
    }
    let deleted = overwrite_and_delete(&c, 300, 7, 11).await;
    let before = snapshot(&c).await;

    procs.kill("node").expect("stop the node");
    pg.sql_primary("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        .expect("the index is lost");
    let out = Command::new(&bin)
        .args(["recover-index", "--quiet", "--config"])
        .arg(procs.cfg_path())
        .env("STRATA_PG_PASSWORD", &pg.password)
        .output()
        .expect("run recover-index");
    assert_recovered(&out, before.0.len());
    procs.start("node").expect("node");
    procs.wait_ready("node").await.expect("node ready");
    let c = procs.client();
    assert_as_before(&c, &before, &deleted).await;
    put(&c, "new/after-recovery", blob(1, 10), "", "image/png").await;
    let commit: u64 = pg
        .sql_primary("SELECT last_value FROM strata_commit_seq")
        .expect("psql")
        .trim()
        .parse()
        .expect("number");
    assert!(
        commit > 300,
        "commit numbers continue above the recovered ones: {commit}"
    );
}

/// An object stored in chunks comes back whole: its record's chunk list
/// is read from the manifest needle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_in_chunks_is_recovered_with_its_chunk_list() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let cfg = cluster::ClusterConfig::parse("[limits]\nchunk_mb = 1\n").expect("cfg");
    let s = InProc::serve(&cfg, &data).await.expect("serve");
    let body = blob(5, (3 << 20) + 12_345);
    put(
        &s.client,
        "big/obj.bin",
        body.clone(),
        "",
        "application/x-tar",
    )
    .await;
    let before = s
        .client
        .get("/v1/blobs?prefix=")
        .await
        .expect("list")
        .json();
    s.stop().await.expect("stop");

    std::fs::remove_dir_all(data.join("index")).expect("the index is lost");
    // The object and its four chunks.
    assert_recovered(&recover(&data, &[]), 5);
    let s = InProc::serve(&cfg, &data).await.expect("serve again");
    let after = s
        .client
        .get("/v1/blobs?prefix=")
        .await
        .expect("list")
        .json();
    let chunks = |v: &serde_json::Value| {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| (e["key"].clone(), e["size"].clone(), e["chunks"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(chunks(&after), chunks(&before));
    let r = s.client.get("/v1/blobs/big/obj.bin").await.expect("get");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body[..] == body[..], "the object reads back whole");
    s.stop().await.expect("stop");
}

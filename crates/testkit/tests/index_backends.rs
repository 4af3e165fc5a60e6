//! One model test suite for every name-index backend: redb in-process, an
//! index member over HTTP, and PostgreSQL (a real server made by
//! `testkit::postgres`). Then what only PostgreSQL has: byte-order keys
//! under a locale that sorts otherwise, schema versions, retried puts, and
//! a failover to the promoted standby under writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use index::client::IndexClient;
use index::pg::{PgIndex, PgOptions};
use index::{BlobMeta, Index, IndexDb};
use testkit::PgCluster;

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

async fn pages(
    db: &dyn Index,
    prefix: Option<&str>,
    tag: Option<&str>,
    size: usize,
) -> Vec<String> {
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = match tag {
            Some(t) => db.list_tag(t, after.as_deref(), size).await,
            None => db.list(prefix.unwrap_or(""), after.as_deref(), size).await,
        }
        .expect("list");
        assert!(page.items.len() <= size);
        got.extend(page.items.iter().map(|e| e.key.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => return got,
        }
    }
}

/// Puts, overwrites and deletes drawn from a seeded generator, checked step
/// by step against a BTreeMap, then every listing page by page. Keys mix
/// cases, punctuation and non-ASCII so that byte order differs from a
/// locale's.
async fn model(db: &dyn Index) {
    let mut model: BTreeMap<String, BlobMeta> = BTreeMap::new();
    let mut x: u64 = 12345;
    let mut last_version = 0;
    let dirs = ["cats", "Cats", "cat", "z", "é", "f", "a_b", "aB"];
    for step in 1..=400u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = format!(
            "{}/{:03}",
            dirs[(x >> 59) as usize % dirs.len()],
            (x >> 40) % 60
        );
        if (x >> 33) % 5 == 0 {
            let c = db.delete(&key).await.expect("delete");
            let had = model.remove(&key);
            match &had {
                Some(_) => {
                    assert!(c.version > last_version, "delete takes a new number");
                    last_version = c.version;
                }
                None => assert_eq!(c.version, 0),
            }
            assert_eq!(c.previous, had, "delete {key}");
        } else {
            let tags: &[&str] = if step % 2 == 0 {
                &["even"]
            } else {
                &["odd", "all"]
            };
            let mut m = meta(step, tags);
            // A node takes the number before writing the needles (they
            // carry it), and the put commits with it.
            let ahead = step % 3 == 0;
            if ahead {
                m.version = db.next_version().await.expect("next version");
                assert!(m.version > last_version, "taken above every commit");
            }
            let c = db.put(&key, &m).await.expect("put");
            if ahead {
                assert_eq!(c.version, m.version, "committed with its number");
            }
            assert!(c.version > last_version, "commit numbers grow");
            last_version = c.version;
            m.version = c.version;
            assert_eq!(db.get(&key).await.expect("get").as_ref(), Some(&m));
            assert_eq!(c.previous, model.insert(key, m));
        }
    }
    for prefix in ["", "cat", "cats/", "Cats/", "é", "a", "f/0", "nothing"] {
        let want: Vec<String> = model
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        assert_eq!(
            pages(db, Some(prefix), None, 7).await,
            want,
            "prefix {prefix:?}"
        );
    }
    for tag in ["even", "odd", "all", "none"] {
        let want: Vec<String> = model
            .iter()
            .filter(|(_, m)| m.tags.iter().any(|t| t == tag))
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(pages(db, None, Some(tag), 11).await, want, "tag {tag}");
    }
    for (k, m) in &model {
        assert_eq!(db.get(k).await.expect("get").as_ref(), Some(m));
    }
    // A cursor that is not itself a key resumes after it.
    let want: Vec<String> = model
        .keys()
        .filter(|k| k.as_str() > "cats/03")
        .cloned()
        .collect();
    let page = db.list("", Some("cats/03"), 1000).await.expect("list");
    let got: Vec<String> = page.items.into_iter().map(|e| e.key).collect();
    assert_eq!(got, want);

    // Numbers taken ahead and committed out of order: the key keeps the
    // higher, whichever commits last, and a delete numbered after a put's
    // number keeps the key deleted.
    let early = db.next_version().await.expect("number");
    let late = db.next_version().await.expect("number");
    let mut newer = meta(8_001, &["race"]);
    newer.version = late;
    let c = db.put("race", &newer).await.expect("put");
    assert!(!c.superseded);
    let mut older = meta(8_000, &["race"]);
    older.version = early;
    let c = db.put("race", &older).await.expect("put");
    assert!(c.superseded, "an older number does not replace a newer one");
    assert_eq!(
        db.get("race").await.expect("get").map(|m| m.id),
        Some(8_001)
    );
    let before_delete = db.next_version().await.expect("number");
    db.delete("race").await.expect("delete");
    let mut stale = meta(8_002, &[]);
    stale.version = before_delete;
    assert!(db.put("race", &stale).await.expect("put").superseded);
    assert_eq!(db.get("race").await.expect("get"), None, "stays deleted");
    let mut fresh = meta(8_003, &[]);
    fresh.version = db.next_version().await.expect("number");
    assert!(!db.put("race", &fresh).await.expect("put").superseded);
    assert_eq!(
        db.get("race").await.expect("get").map(|m| m.id),
        Some(8_003)
    );
    db.delete("race").await.expect("delete");

    // Ids: leases never overlap, also when taken concurrently.
    let a = db.alloc_ids(100).await.expect("alloc");
    let b = db.alloc_ids(100).await.expect("alloc");
    assert!(a >= 1 && b >= a + 100);
    assert!(db.alloc_ids(0).await.is_err());

    // Replica compare-and-set.
    let v = db
        .put("r", &meta(7_000, &["t"]))
        .await
        .expect("put")
        .version;
    let moved = vec!["s2".to_owned(), "s3".to_owned()];
    assert!(db.set_replicas("r", 7_000, &moved).await.expect("cas"));
    let m = db.get("r").await.expect("get").expect("present");
    assert_eq!((m.replicas, m.version), (moved, v));
    db.put("r", &meta(7_001, &[])).await.expect("overwrite");
    assert!(!db
        .set_replicas("r", 7_000, &["s9".into()])
        .await
        .expect("cas"));
    assert!(!db.set_replicas("gone", 1, &[]).await.expect("cas"));
}

#[tokio::test]
async fn redb_backend_agrees_with_the_model() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = IndexDb::open(dir.path()).expect("open");
    model(db.as_ref()).await;
}

#[tokio::test]
async fn index_member_over_http_agrees_with_the_model() {
    let dir = tempfile::tempdir().expect("tmp");
    let db: Arc<dyn Index> = IndexDb::open(dir.path()).expect("open");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(index::server::serve(l, db, std::future::pending()));
    let client = IndexClient::new(format!("http://{addr}"), Duration::from_secs(5));
    model(&client).await;
}

fn options(pg: &PgCluster) -> PgOptions {
    let mut o = PgOptions::new("index", &pg.url());
    o.password = Some(pg.password.clone());
    o.pool_size = 8;
    o
}

#[tokio::test]
async fn postgres_backend_agrees_with_the_model_in_byte_order() {
    let pg = PgCluster::single().expect("PostgreSQL for the test");
    // The database's own collation sorts "a" before "B"; strata's keys
    // must not follow it.
    assert_eq!(
        pg.sql_primary("SELECT 'a' < 'B'").expect("psql").trim(),
        "t"
    );
    let db = PgIndex::connect(options(&pg)).await.expect("connect");
    model(db.as_ref()).await;
    let keys = pages(db.as_ref(), Some(""), None, 1000).await;
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "listing in byte order");
    assert!(
        keys.iter().position(|k| k.starts_with("Cats/"))
            < keys.iter().position(|k| k.starts_with("a"))
    );
}

#[tokio::test]
async fn postgres_schema_is_migrated_once_and_a_newer_one_is_refused() {
    let pg = PgCluster::single().expect("PostgreSQL for the test");
    // Two nodes starting together: one migrates, the other sees it done.
    let (a, b) = tokio::join!(
        PgIndex::connect(options(&pg)),
        PgIndex::connect(options(&pg))
    );
    let (a, _b) = (a.expect("first"), b.expect("second"));
    a.put("k", &meta(1, &[])).await.expect("put");
    assert_eq!(
        pg.sql_primary("SELECT version FROM strata_schema WHERE component = 'index'")
            .expect("psql")
            .trim(),
        "2"
    );
    pg.sql_primary("UPDATE strata_schema SET version = 99 WHERE component = 'index'")
        .expect("psql");
    let err = PgIndex::connect(options(&pg)).await.err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("schema is version 99") && text.contains("upgrade strata"),
        "{text}"
    );
    // A wrong password is an error that says so, not a hang.
    let mut o = options(&pg);
    o.password = Some("wrong".into());
    o.retry_for = Duration::from_millis(300);
    let err = PgIndex::connect(o).await.err().expect("refused");
    assert!(err.to_string().contains("password"), "{err}");
}

#[tokio::test]
async fn a_retried_put_is_not_applied_twice() {
    let pg = PgCluster::single().expect("PostgreSQL for the test");
    let db = PgIndex::connect(options(&pg)).await.expect("connect");
    db.put("k", &meta(1, &["x"])).await.expect("first");
    let c1 = db.put("k", &meta(2, &["y"])).await.expect("put");
    assert_eq!(c1.previous.map(|m| m.id), Some(1));
    // The same put again (its answer was lost, the client retries): same
    // commit number, nothing replaced, no new number taken.
    let c2 = db.put("k", &meta(2, &["y"])).await.expect("retry");
    assert_eq!((c2.version, c2.previous), (c1.version, None));
    let next = db.put("other", &meta(3, &[])).await.expect("put").version;
    assert_eq!(next, c1.version + 1);
    assert_eq!(
        pages(db.as_ref(), None, Some("y"), 10).await,
        vec!["k".to_owned()]
    );
    assert!(pages(db.as_ref(), None, Some("x"), 10).await.is_empty());
}

/// Writers keep putting while the primary is killed; the standby is
/// promoted; the same `PgIndex` (no restart) carries on against it, and
/// every put it acknowledged is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_on_the_promoted_standby_and_none_acknowledged_is_lost() {
    let mut pg = PgCluster::replicated().expect("PostgreSQL primary and standby");
    let mut o = options(&pg);
    o.call_timeout = Duration::from_secs(2);
    o.retry_for = Duration::from_secs(60);
    let db = PgIndex::connect(o).await.expect("connect");
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, u64)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (db, acked, stop) = (db.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = db
                    .alloc_ids(1)
                    .await
                    .expect("an id, before or after the failover");
                let key = format!("w{w}/{i:05}");
                db.put(&key, &meta(id, &["f"])).await.expect("put");
                acked.lock().expect("lock").push((key, id));
                i += 1;
            }
        }));
    }
    let count = |a: &Arc<std::sync::Mutex<Vec<(String, u64)>>>| a.lock().expect("lock").len();
    testkit::until_async(
        "200 writes acknowledged",
        Duration::from_secs(60),
        async || match count(&acked) {
            200.. => Ok(()),
            n => Err(format!("{n} acknowledged")),
        },
    )
    .await;
    pg.primary.kill();
    let lost_at = Instant::now();
    let before = count(&acked);
    pg.promote().expect("promote");
    // Writes resume by themselves against the new primary.
    while count(&acked) < before + 200 {
        assert!(
            lost_at.elapsed() < Duration::from_secs(60),
            "writes did not resume"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "writes resumed {:?} after the primary's loss",
        lost_at.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    let mut ids = std::collections::HashSet::new();
    for (key, id) in &acked {
        let m = db
            .get(key)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(m.id, *id, "{key}");
        assert!(ids.insert(*id), "id {id} handed out twice");
    }
    assert_eq!(
        pages(db.as_ref(), None, Some("f"), 1000).await.len(),
        acked.len()
    );
}

/// The limits a caller can count on: a statement over `statement_timeout`
/// is cut by the server (and not retried: it would fail again); a call
/// with no answer within `call_timeout` is given up on, retried on fresh
/// connections, and reported unavailable once `retry_for` has passed.
#[tokio::test]
async fn statement_and_call_timeouts_are_kept() {
    let pg = PgCluster::single().expect("PostgreSQL for the test");
    let mut o = options(&pg);
    o.statement_timeout = Duration::from_millis(200);
    let db = pg::Db::new(o).expect("db");
    let t = Instant::now();
    let e = db.query("SELECT pg_sleep(3)", &[]).await.expect_err("cut");
    assert!(matches!(e, pg::Error::Database(_)), "{e}");
    assert!(e.to_string().contains("statement timeout"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));

    let mut o = options(&pg);
    o.call_timeout = Duration::from_millis(300);
    o.retry_for = Duration::from_millis(1000);
    let db = pg::Db::new(o).expect("db");
    let t = Instant::now();
    let e = db
        .query("SELECT pg_sleep(3)", &[])
        .await
        .expect_err("gave up");
    assert!(matches!(e, pg::Error::Unavailable(_)), "{e}");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
}

/// A URL whose first host has vanished (its machine cut off: no refusal,
/// no answer) does not cost each connection its connect timeout: the next
/// host is tried after a short wait, and later connections go straight to
/// the host that accepted. A call its caller gave up on (a request whose
/// client left) still finishes the connection attempt it started, so a
/// failover is found even when every caller is impatient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_first_host_is_passed_over() {
    let net = testkit::netns::Net::new(&["gone"]).expect("a machine to lose");
    net.cut("gone").expect("link down");
    let pg = PgCluster::single().expect("PostgreSQL for the test");
    let gone = format!("{}:5432", net.machine("gone").ip);
    let url = pg.url().replacen('@', &format!("@{gone},"), 1);
    let call_timeout = Duration::from_secs(5);
    let db_with = |url: &str| {
        let mut o = options(&pg);
        o.url = url.to_owned();
        o.call_timeout = call_timeout;
        pg::Db::new(o).expect("db")
    };
    let quick = call_timeout / 2;

    let db = db_with(&url);
    assert_eq!(db.writable_host(), gone);
    let t = Instant::now();
    db.query("SELECT 1", &[])
        .await
        .expect("past the vanished host");
    assert!(t.elapsed() < quick, "{:?}", t.elapsed());
    assert_ne!(db.writable_host(), gone);
    // Every pooled connection is closed by the server: new ones are made,
    // straight to the live host.
    pg.sql_primary(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'strata'",
    )
    .expect("terminate");
    for _ in 0..3 {
        db.query("SELECT 1", &[]).await.expect("reconnected");
        assert_ne!(db.writable_host(), gone);
    }

    // A caller that gives up before any host has answered.
    let db = db_with(&url);
    let impatient = tokio::time::timeout(Duration::from_millis(50), db.query("SELECT 1", &[]));
    assert!(impatient.await.is_err(), "answered before the timeout");
    // The abandoned call's connection attempt carries on and finds the
    // live host within one call timeout.
    testkit::until_async(
        "the attempt goes on to the live host",
        call_timeout,
        async || match db.writable_host() {
            h if h == gone => Err(format!("{h:?}")),
            _ => Ok(()),
        },
    )
    .await;
}

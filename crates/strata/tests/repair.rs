//! Repair through the queue, with real processes: a store gone past
//! `dead_after_ms` has its blobs re-replicated (then a second store can
//! die and nothing is lost), and a scrub finds a flipped byte on disk and
//! rewrites the needle from a good replica.

use std::time::Duration;

use testkit::{blob, until_async, Client, Method, Procs, StatusCode};

const SECRET: &str = "repair-secret";
const ADMIN: &str = "repair-admin";

mod common;
use common::bin;

fn extra(dead_after_ms: u64) -> String {
    format!(
        "[auth]\nsecret = \"{SECRET}\"\nadmin_token = \"{ADMIN}\"\n\
         [store]\ndead_after_ms = {dead_after_ms}\n\
         [queue]\nthumbnail_widths = []\n"
    )
}

/// A key's metadata from the index's internal API.
async fn meta(p: &Procs, key: &str) -> serde_json::Value {
    let r = p
        .client_of("index")
        .send(
            Method::GET,
            &format!("/key?key={key}"),
            &[("x-strata-secret", SECRET)],
            vec![],
        )
        .await
        .expect("index");
    assert_eq!(r.status, StatusCode::OK, "{key}: {}", r.text());
    r.json()
}

/// Barrier: the node sees `n` stores up. A store it found down (still
/// starting, or slow to answer a probe on a loaded machine) is written
/// last, and CI saw store-1 get none of a test's blobs, in two tests.
async fn stores_up(c: &testkit::Client, n: u64) {
    until_async(
        &format!("the node sees {n} stores up"),
        Duration::from_secs(30),
        async || {
            let up = c
                .metric("strata_node_healthy_stores")
                .await
                .expect("metrics");
            if up >= n {
                Ok(())
            } else {
                Err(format!("{up} up"))
            }
        },
    )
    .await;
}

fn replicas(m: &serde_json::Value) -> Vec<String> {
    m["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| r.as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_stores_blobs_get_new_copies_and_survive_a_second_loss() {
    let mut p = Procs::cluster_with_queue(bin(), 3, 2, &extra(500))
        .await
        .expect("cluster");
    let c = p.client();
    stores_up(&c, 3).await;
    let keys: Vec<String> = (0..40).map(|i| format!("dead/{i}.jpg")).collect();
    for (i, k) in keys.iter().enumerate() {
        let r = c
            .put(&format!("/v1/blobs/{k}"), blob(i as u64, 3000))
            .await
            .expect("put");
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let mut on_first = 0;
    for k in &keys {
        on_first += usize::from(replicas(&meta(&p, k).await).contains(&"store-1".to_owned()));
    }
    assert!(on_first > 0, "store-1 holds some of the blobs");

    p.kill("store-1").expect("kill");
    // Past dead_after the node sweeps the index and queues a job per blob;
    // each ends with two live copies recorded.
    until_async(
        "every blob has two live copies",
        Duration::from_secs(60),
        async || {
            let mut pending = 0;
            for k in &keys {
                let r = replicas(&meta(&p, k).await);
                if r.iter().any(|n| n == "store-1") || r.len() != 2 {
                    pending += 1;
                }
            }
            match pending {
                0 => Ok(()),
                _ => Err(format!("{pending} blobs still name store-1")),
            }
        },
    )
    .await;
    // Every blob now has copies on store-2 and store-3: lose store-2 too.
    p.kill("store-2").expect("kill second");
    for (i, k) in keys.iter().enumerate() {
        let r = c.get(&format!("/v1/blobs/{k}")).await.expect("get");
        assert_eq!(r.status, StatusCode::OK, "{k}");
        assert_eq!(&r.body[..], &blob(i as u64, 3000)[..], "{k}");
    }
}

/// Stores blob `n` under `key`; its id, the replica whose copy gets one
/// byte flipped in place in its volume file, and the body.
async fn put_and_flip(p: &Procs, key: &str, n: u64) -> (u64, String, Vec<u8>) {
    let body = blob(n, 20_000);
    let r = p
        .client()
        .put(&format!("/v1/blobs/{key}"), body.clone())
        .await
        .expect("put");
    assert_eq!(r.status, StatusCode::CREATED);
    let m = meta(p, key).await;
    let id = m["id"].as_u64().expect("id");
    let victim = replicas(&m)[0].clone();
    let path = p.dir().join(&victim).join("vol-000001.dat");
    let bytes = std::fs::read(&path).expect("volume");
    let at = bytes
        .windows(64)
        .position(|w| w == &body[5000..5064])
        .expect("the blob is on disk");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    std::os::unix::fs::FileExt::write_at(&f, &[bytes[at] ^ 0x01], at as u64).expect("flip");
    (id, victim, body)
}

/// Waits until `store` serves blob `id` intact again.
async fn wait_repaired(store: &Client, id: u64, body: &[u8]) {
    let r = until_async(
        "the needle is repaired",
        Duration::from_secs(30),
        async || {
            let r = store
                .send(
                    Method::GET,
                    &format!("/blobs/{id}"),
                    &[("x-strata-secret", SECRET)],
                    vec![],
                )
                .await
                .expect("direct read");
            match r.status {
                StatusCode::OK => Ok(r),
                s => Err(format!("{s} {}", r.text())),
            }
        },
    )
    .await;
    assert_eq!(&r.body[..], body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrub_finds_a_flipped_byte_and_the_needle_is_rewritten_from_a_replica() {
    let p = Procs::cluster_with_queue(bin(), 2, 2, &extra(0))
        .await
        .expect("cluster");
    let (id, victim, body) = put_and_flip(&p, "scrub/me.png", 77).await;
    let store = p.client_of(&victim);
    // The admin API wants the admin token as well as the secret.
    let r = store
        .send(
            Method::POST,
            "/admin/scrub",
            &[("x-strata-secret", SECRET)],
            vec![],
        )
        .await
        .expect("scrub");
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let report = scrub(&store).await;
    assert_eq!(report["corrupt"], serde_json::json!([id]), "{report}");
    assert_eq!(report["repairs_queued"], 1, "{report}");
    // A repair worker copies the good replica over it; the next scrub is
    // clean.
    wait_repaired(&store, id, &body).await;
    assert_eq!(scrub(&store).await["corrupt"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_meets_a_corrupt_copy_is_served_another_and_queues_its_repair() {
    let p = Procs::cluster_with_queue(bin(), 2, 2, &extra(0))
        .await
        .expect("cluster");
    let (id, victim, body) = put_and_flip(&p, "read/me.png", 78).await;
    // Reads are never served the bad copy: the node reads the other one
    // (the victim is first in the replica order, so it is tried first)
    // without marking the victim's store down.
    for _ in 0..3 {
        let r = p.client().get("/v1/blobs/read/me.png").await.expect("get");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], &body[..]);
    }
    wait_repaired(&p.client_of(&victim), id, &body).await;
}

/// `POST /admin/scrub` with the secret and the admin token: the report.
async fn scrub(store: &Client) -> serde_json::Value {
    let bearer = format!("Bearer {ADMIN}");
    let r = store
        .send(
            Method::POST,
            "/admin/scrub",
            &[
                ("x-strata-secret", SECRET),
                ("authorization", bearer.as_str()),
            ],
            vec![],
        )
        .await
        .expect("scrub");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

/// Store-1 dies, its blobs get new homes, and it comes back holding
/// copies no index entry names. Garbage collection (`POST /admin/gc`)
/// deletes exactly those: blobs written to store-1 after it came back
/// stay, every key reads back, and afterwards every live copy on every
/// store is named by the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_brought_back_has_its_orphaned_copies_collected() {
    let extra = format!(
        "[auth]\nsecret = \"{SECRET}\"\nadmin_token = \"{ADMIN}\"\n\
         [store]\ndead_after_ms = 500\ngc_grace_secs = 1\ngc_interval_secs = 0\n\
         [queue]\nthumbnail_widths = []\n"
    );
    let mut p = Procs::cluster_with_queue(bin(), 3, 2, &extra)
        .await
        .expect("cluster");
    let c = p.client();
    stores_up(&c, 3).await;
    let keys: Vec<String> = (0..30).map(|i| format!("gc/{i}.jpg")).collect();
    for (i, k) in keys.iter().enumerate() {
        let r = c
            .put(&format!("/v1/blobs/{k}"), blob(i as u64, 2000))
            .await
            .expect("put");
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let mut on_first = 0u64;
    for k in &keys {
        on_first += u64::from(replicas(&meta(&p, k).await).contains(&"store-1".to_owned()));
    }
    assert!(on_first > 0, "store-1 holds some of the blobs");
    p.kill("store-1").expect("kill");
    until_async(
        "no blob names store-1",
        Duration::from_secs(60),
        async || {
            let mut pending = 0;
            for k in &keys {
                if replicas(&meta(&p, k).await).iter().any(|n| n == "store-1") {
                    pending += 1;
                }
            }
            match pending {
                0 => Ok(()),
                _ => Err(format!("{pending} blobs still name store-1")),
            }
        },
    )
    .await;
    p.start("store-1").expect("restart");
    p.wait_ready("store-1").await.expect("ready");
    // New blobs, some of them on store-1 again: named, never collected.
    let fresh: Vec<String> = (0..20).map(|i| format!("gc/new/{i}.jpg")).collect();
    for (i, k) in fresh.iter().enumerate() {
        let r = c
            .put(&format!("/v1/blobs/{k}"), blob(100 + i as u64, 500))
            .await
            .expect("put");
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    let mut fresh_on_first = 0u64;
    for k in &fresh {
        fresh_on_first += u64::from(replicas(&meta(&p, k).await).contains(&"store-1".to_owned()));
    }

    let store1 = p.client_of("store-1");
    let admin = format!("Bearer {ADMIN}");
    let gc = |s: Client| {
        let admin = admin.clone();
        async move {
            let r = s
                .send(
                    Method::POST,
                    "/admin/gc",
                    &[("x-strata-secret", SECRET), ("authorization", &admin)],
                    vec![],
                )
                .await
                .expect("gc");
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.json()
        }
    };
    // The first pass only notes the unnamed copies; a pass a grace period
    // later collects them.
    let mut reclaimed = 0;
    until_async(
        "the orphaned copies are collected",
        Duration::from_secs(30),
        async || {
            let r = gc(store1.clone()).await;
            reclaimed += r["reclaimed"].as_u64().expect("reclaimed");
            if reclaimed >= on_first {
                Ok(())
            } else {
                Err(format!("collected {reclaimed} of {on_first}: {r}"))
            }
        },
    )
    .await;
    assert_eq!(reclaimed, on_first, "exactly the orphaned copies");
    let blobs = store1
        .send(
            Method::GET,
            "/stats",
            &[("x-strata-secret", SECRET)],
            vec![],
        )
        .await
        .expect("stats")
        .json()["blobs"]
        .as_u64()
        .expect("blobs");
    assert_eq!(
        blobs, fresh_on_first,
        "store-1 keeps only what the index names"
    );
    // Nothing live was touched, on any store.
    for name in ["store-2", "store-3"] {
        let r = gc(p.client_of(name)).await;
        assert_eq!(r["reclaimed"], 0, "{name}: {r}");
        assert_eq!(r["unnamed"], 0, "{name}: {r}");
    }
    for (i, k) in keys.iter().enumerate() {
        let r = c.get(&format!("/v1/blobs/{k}")).await.expect("get");
        assert_eq!(&r.body[..], &blob(i as u64, 2000)[..], "{k}");
    }
    for (i, k) in fresh.iter().enumerate() {
        let r = c.get(&format!("/v1/blobs/{k}")).await.expect("get");
        assert_eq!(&r.body[..], &blob(100 + i as u64, 500)[..], "{k}");
    }
}

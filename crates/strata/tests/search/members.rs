//! Search members lost and rebuilt: with two copies a dead member leaves
//! answers whole, and `strata reindex` rebuilds a lost member or the lost
//! shards of a stopped `serve`.

use super::*;

/// Two search members, each book on both: with one dead, answers are
/// whole (`partial: false`) and pages still get indexed (the dead one is
/// caught up when back); a member whose data directory is lost comes back
/// empty, answers stay whole through the replica, and `strata reindex`
/// rebuilds it: alone, it gives the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_search_member_leaves_answers_whole_and_reindex_rebuilds_a_lost_one() {
    let mut p = Procs::cluster_with_search(bin(), 2, 2, 2, "")
        .await
        .expect("cluster");
    let c = p.client();
    let mut jobs = Vec::new();
    for b in 0..12u64 {
        for pg in 1..=2u64 {
            // The second page says it twice: pages of a book rank alike
            // on every replica, whatever order a shard holds them in.
            let text = format!(
                "harbour volume {b} page {pg} {}",
                "lighthouse ".repeat(pg as usize)
            );
            jobs.push(
                put_page(
                    &c,
                    &format!("b{b}/{pg}.png"),
                    &format!("book {b}"),
                    pg,
                    &text,
                )
                .await,
            );
        }
    }
    for j in &jobs {
        assert_eq!(wait_job(&c, j).await["state"], "succeeded");
    }
    let full = all_books(&c, "lighthouse").await;
    assert_eq!(full["partial"], false);
    let names = sorted(books(&full));
    assert_eq!(names.len(), 12);
    let pages = per_book(&c, "lighthouse", &names).await;
    assert!(pages.iter().all(|(_, p)| p.len() == 2), "{pages:?}");

    // One member dead: every book still answered, and not partial.
    p.kill("search-2").expect("kill");
    let v = all_books(&c, "lighthouse").await;
    assert_eq!(v["partial"], false, "{v}");
    assert_eq!(sorted(books(&v)), names);
    assert_eq!(per_book(&c, "lighthouse", &names).await, pages);
    // A page uploaded meanwhile is searchable at once; the dead member
    // gets it from a catch-up job.
    let job = put_page(&c, "late/1.png", "late book", 1, "lighthouse keeper").await;
    assert_eq!(wait_job(&c, &job).await["state"], "succeeded");
    assert_eq!(books(&search(&c, "keeper").await), ["late book"]);

    // Back with its data, the member is caught up: alone, it finds the
    // page it missed (its job retries with backoff; a few seconds).
    p.restart("search-2").await.expect("restart");
    p.kill("search-1").expect("kill");
    testkit::until_async(
        "search-2 catches up",
        Duration::from_secs(60),
        async || match books(&search(&c, "keeper").await) {
            b if b.is_empty() => Err("no book yet".to_owned()),
            _ => Ok(()),
        },
    )
    .await;
    p.restart("search-1").await.expect("restart");

    // The member's disk is lost: it comes back empty.
    p.kill("search-2").expect("kill");
    std::fs::remove_dir_all(p.dir().join("search-2")).expect("rm");
    std::fs::create_dir_all(p.dir().join("search-2")).expect("mkdir");
    p.restart("search-2").await.expect("restart");
    let v = all_books(&c, "lighthouse").await;
    assert_eq!(v["partial"], false, "{v}");
    assert_eq!(
        books(&v).len(),
        13,
        "the replica answers for the lost member"
    );

    let said = reindex(&["--member", "search-2", "--config"], p.cfg_path());
    assert!(said.contains("reindexed 25 pages"), "{said}");

    // The rebuilt member alone gives the answers both gave.
    p.kill("search-1").expect("kill");
    let v = all_books(&c, "lighthouse").await;
    assert_eq!(v["partial"], false, "{v}");
    let mut want = names.clone();
    want.push("late book".into());
    assert_eq!(sorted(books(&v)), sorted(want));
    assert_eq!(per_book(&c, "lighthouse", &names).await, pages);
    assert_eq!(books(&search(&c, "keeper").await), ["late book"]);

    // Both dead: now books are missing, and the answer says so.
    p.kill("search-2").expect("kill");
    let v = all_books(&c, "lighthouse").await;
    assert_eq!(v["partial"], true, "{v}");
}

/// `strata reindex --data` rebuilds the shards of a stopped `strata
/// serve` whose search directory was lost: the same queries give the same
/// answers as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_rebuilds_the_lost_shards_of_a_stopped_serve() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = InProc::serve_default(dir.path()).await.expect("serve");
    let c = s.client.clone();
    for b in 0..6u64 {
        let text = format!("compass {} north", "needle ".repeat(b as usize + 1));
        let job = put_page(&c, &format!("nav/{b}.png"), &format!("nav {b}"), b, &text).await;
        assert_eq!(wait_job(&c, &job).await["state"], "succeeded");
    }
    let before = search(&c, "needle").await;
    assert_eq!(books(&before).len(), 6);
    s.stop().await.expect("stop");

    std::fs::remove_dir_all(dir.path().join("search")).expect("rm");
    let said = reindex(&["--data"], dir.path());
    assert!(said.contains("reindexed 6 pages"), "{said}");
    assert!(said.contains("6 page copies applied"), "{said}");

    let s = InProc::serve_default(dir.path())
        .await
        .expect("serve again");
    let after = search(&s.client, "needle").await;
    assert_eq!(books(&after), books(&before));
    for (a, b) in after["books"]
        .as_array()
        .expect("books")
        .iter()
        .zip(before["books"].as_array().expect("books"))
    {
        assert_eq!(a["pages"][0]["key"], b["pages"][0]["key"]);
        assert_eq!(a["pages"][0]["snippet"], b["pages"][0]["snippet"]);
    }
    s.stop().await.expect("stop");
}

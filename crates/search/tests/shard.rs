//! A shard on its own: ranking, nesting by book, phrases, versions, restart.

use search::{Applied, PageOp, Query, Shard, ShardOptions};

fn up(key: &str, book: &str, page: u64, text: &str, version: u64) -> PageOp {
    PageOp::Upsert {
        key: key.into(),
        book: book.into(),
        page,
        text: text.into(),
        version,
    }
}

fn open(dir: &std::path::Path) -> std::sync::Arc<Shard> {
    Shard::open(dir, ShardOptions::default()).expect("open shard")
}

fn q(text: &str) -> Query {
    Query::new(text)
}

#[tokio::test]
async fn books_ranked_by_best_page_and_pages_nested_under_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let filler = "the river ran past the old mill and the town slept ".repeat(3);
    s.apply(vec![
        // Moby: one page full of whales, one that mentions one.
        up(
            "moby/1",
            "moby",
            1,
            "whale whale whale whale the white whale",
            1,
        ),
        up("moby/2", "moby", 2, &format!("a whale {filler}"), 1),
        up("moby/3", "moby", 3, &filler, 1),
        // Ahab: a single page that mentions the whale once among much else.
        up("ahab/7", "ahab", 7, &format!("whale {filler} {filler}"), 1),
        up("other/1", "other", 1, "no such animal here", 1),
    ])
    .await
    .unwrap();

    let r = s.search(&q("whale")).unwrap();
    let books: Vec<&str> = r.books.iter().map(|b| b.book.as_str()).collect();
    assert_eq!(books, ["moby", "ahab"], "{r:#?}");
    let moby = &r.books[0];
    let pages: Vec<u64> = moby.pages.iter().map(|p| p.page).collect();
    assert_eq!(pages, [1, 2], "best page first, page 3 does not match");
    assert_eq!(moby.score, moby.pages[0].score);
    assert!(moby.pages[0].score > moby.pages[1].score);
    assert!(moby.score > r.books[1].score);
    assert_eq!(moby.pages[0].key, "moby/1");
    assert!(
        moby.pages[0].snippet.contains("<b>whale</b>"),
        "{}",
        moby.pages[0].snippet
    );
    assert!(!r.partial);

    // At most `pages` pages per book, and `limit` books.
    let mut one = q("whale");
    one.pages = 1;
    one.limit = 1;
    let r = s.search(&one).unwrap();
    assert_eq!(r.books.len(), 1);
    assert_eq!(r.books[0].pages.len(), 1);

    // Restricting to a book keeps the scores the same.
    let mut only = q("whale");
    only.book = Some("ahab".into());
    let r2 = s.search(&only).unwrap();
    assert_eq!(r2.books.len(), 1);
    assert_eq!(r2.books[0].book, "ahab");
    let full = s.search(&q("whale")).unwrap();
    assert_eq!(r2.books[0].score, full.books[1].score);
}

#[tokio::test]
async fn all_words_must_match_and_phrases_keep_word_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.apply(vec![
        up("a/1", "a", 1, "call me ishmael some years ago", 1),
        up("b/1", "b", 1, "ishmael did not call me", 1),
        up("c/1", "c", 1, "call the doctor", 1),
    ])
    .await
    .unwrap();
    let books = |text: &str| -> Vec<String> {
        let mut v: Vec<String> = s
            .search(&q(text))
            .unwrap()
            .books
            .into_iter()
            .map(|b| b.book)
            .collect();
        v.sort();
        v
    };
    assert_eq!(books("call ishmael"), ["a", "b"]);
    assert_eq!(books("\"call me ishmael\""), ["a"]);
    assert_eq!(books("\"me ishmael\""), ["a"]);
    assert_eq!(books("call -ishmael"), ["c"]);
    assert_eq!(books("doctor OR ishmael"), ["a", "b", "c"]);
    assert_eq!(books("CALL Ishmael"), ["a", "b"], "case does not matter");
    let hit = s.search(&q("\"call me ishmael\"")).unwrap();
    assert!(hit.books[0].pages[0].snippet.contains("<b>ishmael</b>"));
}

#[tokio::test]
async fn bad_queries_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for (text, why) in [("", "empty"), ("   ", "empty"), ("nosuchfield:x", "field")] {
        let e = s.search(&q(text)).unwrap_err();
        assert!(
            matches!(e, search::Error::BadQuery(_) | search::Error::Invalid(_)),
            "{text:?} ({why}): {e}"
        );
    }
    let mut big = q("x");
    big.limit = 0;
    assert!(s.search(&big).is_err());
    big.limit = search::MAX_LIMIT + 1;
    assert!(s.search(&big).is_err());
    assert!(s
        .search(&q(&"x".repeat(search::MAX_QUERY_BYTES + 1)))
        .is_err());
    assert!(s.apply(vec![up("", "b", 1, "t", 1)]).await.is_err());
    assert!(s.apply(vec![up("k", "b", 1, "t", 0)]).await.is_err());
}

#[tokio::test]
async fn older_changes_lose_to_newer_ones_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // Newest first: the older upsert arriving later is dropped.
    let r = s
        .apply(vec![up("p", "b", 1, "second draft", 2)])
        .await
        .unwrap();
    assert_eq!(r, [Applied::Applied]);
    let r = s
        .apply(vec![up("p", "b", 1, "first draft", 1)])
        .await
        .unwrap();
    assert_eq!(r, [Applied::Stale]);
    assert_eq!(s.search(&q("second")).unwrap().books.len(), 1);
    assert_eq!(s.search(&q("first")).unwrap().books.len(), 0);
    assert_eq!(s.num_pages(), 1, "an update replaces, never duplicates");

    // A delete is a tombstone: an older upsert cannot bring the page back.
    s.apply(vec![PageOp::Delete {
        key: "p".into(),
        version: 4,
    }])
    .await
    .unwrap();
    let r = s
        .apply(vec![up("p", "b", 1, "third draft", 3)])
        .await
        .unwrap();
    assert_eq!(r, [Applied::Stale]);
    assert_eq!(s.num_pages(), 0);
    // A newer one can.
    s.apply(vec![up("p", "b", 1, "fifth draft", 5)])
        .await
        .unwrap();
    assert_eq!(s.search(&q("fifth")).unwrap().books.len(), 1);

    // Several changes of one key in one batch: the highest version wins.
    s.apply(vec![
        up("k", "b", 2, "alpha", 7),
        up("k", "b", 2, "beta", 9),
        up("k", "b", 2, "gamma", 8),
    ])
    .await
    .unwrap();
    assert_eq!(s.search(&q("beta")).unwrap().books.len(), 1);
    assert_eq!(s.search(&q("alpha OR gamma")).unwrap().books.len(), 0);
}

#[tokio::test]
async fn concurrent_updates_end_with_the_highest_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // 16 writers send versions 1..=64 of one page in scrambled order.
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..4u64 {
                let v = ((w * 4 + i) * 37) % 64 + 1;
                s.apply(vec![up("page", "b", 1, &format!("v{v}"), v)])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.num_pages(), 1);
    assert_eq!(s.search(&q("v64")).unwrap().books.len(), 1);
}

#[tokio::test]
async fn pages_and_versions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        s.apply(vec![
            up("x/1", "x", 1, "persistent words", 3),
            PageOp::Delete {
                key: "gone".into(),
                version: 5,
            },
        ])
        .await
        .unwrap();
    }
    let s = open(dir.path());
    assert_eq!(
        s.search(&q("persistent")).unwrap().books[0].pages[0].key,
        "x/1"
    );
    assert_eq!(
        s.apply(vec![
            up("x/1", "x", 1, "older", 2),
            up("gone", "x", 2, "older", 4)
        ])
        .await
        .unwrap(),
        [Applied::Stale, Applied::Stale]
    );
    assert!(s.disk_bytes() > 0);
}

#[tokio::test]
async fn a_book_with_many_matching_pages_does_not_hide_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // 500 strongly matching pages in one book, then 5 weaker books.
    let mut ops: Vec<PageOp> = (0..500)
        .map(|i| up(&format!("big/{i}"), "big", i, "lantern lantern lantern", 1))
        .collect();
    for b in 0..5 {
        ops.push(up(
            &format!("s{b}/1"),
            &format!("s{b}"),
            1,
            "a lantern among many other words here",
            1,
        ));
    }
    s.apply(ops).await.unwrap();
    let mut query = q("lantern");
    query.limit = 6;
    let r = s.search(&query).unwrap();
    assert_eq!(
        r.books.len(),
        6,
        "{:?}",
        r.books.iter().map(|b| &b.book).collect::<Vec<_>>()
    );
    assert_eq!(r.books[0].book, "big");
    assert_eq!(r.books[0].pages.len(), 3);
}

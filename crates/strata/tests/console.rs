//! The web console in a real browser: headless Chromium (Debian's
//! `chromium`, which `.ci/run` installs) driven over the DevTools protocol
//! against a real `strata serve` with data, and against a multi-process
//! cluster whose node is killed. Every page must load without a console
//! error. Screenshots of each page are taken every run; with
//! `STRATA_SCREENSHOTS=1` they replace the ones in docs/console/.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::bin;
use testkit::{until, Browser, Served};

const WRITE: &str = "console-write-token";
const ADMIN: &str = "console-admin-token";

/// Where screenshots go: docs/console/ with `STRATA_SCREENSHOTS=1` (to
/// refresh the committed ones), else the test's scratch directory, so a
/// test run leaves the tree as it was.
fn docs(name: &str) -> PathBuf {
    let dir = if std::env::var_os("STRATA_SCREENSHOTS").is_some_and(|v| v == "1") {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/console")).to_owned()
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
    };
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir.join(name)
}

/// `curl` with `args`: (status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A PNG of `w` x `h` pixels, a gradient tinted by `seed`.
fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8 ^ seed,
            (y * 255 / h) as u8,
            seed.wrapping_mul(37),
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

/// PUTs `body` as `key` through the upload queue (so thumbnails are
/// made) with extra headers; waits for the job to succeed.
fn upload_async(api: &str, dir: &Path, key: &str, body: &[u8], headers: &[&str]) {
    let f = dir.join("upload.bin");
    std::fs::write(&f, body).expect("write body");
    let url = format!("{api}/v1/blobs/{key}");
    let auth = format!("Authorization: Bearer {WRITE}");
    let data = format!("@{}", f.display());
    let mut args = vec![
        "-X",
        "PUT",
        "--data-binary",
        &data,
        "-H",
        "Prefer: respond-async",
        "-H",
        "Content-Type: image/png",
        "-H",
        &auth,
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(&url);
    let (code, body) = curl(&args);
    assert_eq!(code, 202, "{key}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("job JSON");
    let loc = format!("{api}{}", v["location"].as_str().expect("location"));
    until(
        &format!("{key}'s upload job"),
        Duration::from_secs(30),
        || {
            let (_, b) = curl(&[&loc]);
            let v: serde_json::Value = serde_json::from_str(&b).map_err(|e| e.to_string())?;
            match v["state"].as_str() {
                Some("succeeded") => Ok(()),
                s => Err(format!("state {s:?}")),
            }
        },
    );
}

/// Waits until `key`'s 128-pixel thumbnail exists.
fn await_thumbnail(api: &str, key: &str) {
    until(
        &format!("{key}'s thumbnail"),
        Duration::from_secs(30),
        || match curl(&["-o", "/dev/null", &format!("{api}/v1/blobs/{key}?w=128")]).0 {
            200 => Ok(()),
            c => Err(format!("status {c}")),
        },
    );
}

/// A dead letter on queue `q` of the queue member at `addr`: put with one
/// attempt, reserved and failed. Its id.
fn dead_letter(addr: &str, q: &str, error: &str) -> u64 {
    let (code, body) = curl(&[
        "-X",
        "POST",
        "--data-binary",
        "payload",
        &format!("http://{addr}/v1/queues/{q}/jobs?max_attempts=1"),
    ]);
    assert_eq!(code, 201, "{body}");
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            &format!("http://{addr}/v1/queues/{q}/reserve?timeout_ms=2000"),
        ])
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let field = |name: &str| -> String {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {head}"))
            .trim()
            .to_owned()
    };
    let (id, lease) = (field("x-job-id"), field("x-job-lease"));
    let (code, body) = curl(&[
        "-X",
        "POST",
        "--data-binary",
        error,
        &format!("http://{addr}/v1/jobs/{id}/fail?lease={lease}"),
    ]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("dead"), "{body}");
    id.parse().expect("job id")
}

/// Loads `url` and checks that the page produced no console error.
fn open(b: &mut Browser, url: &str) {
    b.goto(url).expect("navigate");
}

fn no_errors(b: &mut Browser, page: &str) {
    let errors = b.take_errors().expect("errors");
    assert!(errors.is_empty(), "{page}: console errors: {errors:#?}");
}

#[test]
fn every_console_page_works_in_a_real_browser_on_serve() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Served::start_with_config(
        bin(),
        dir.path(),
        &format!(
            "[auth]\nwrite_token = \"{WRITE}\"\nadmin_token = \"{ADMIN}\"\n\n[console]\nsample_ms = 250\n"
        ),
    )
    .expect("serve");
    let api = format!("http://{}", s.http);

    // Data: photos, book pages with text, a blob that is not an image, and
    // a dead letter.
    for (i, name) in ["harbour", "lighthouse", "meadow"].iter().enumerate() {
        let tags = format!("X-Strata-Tags: {name},sample");
        upload_async(
            &api,
            dir.path(),
            &format!("photos/{name}.png"),
            &png(320, 200, i as u8 * 70),
            &[&tags],
        );
    }
    let pages = [
        (
            "atlas-of-tides",
            1,
            "the tides of the northern sea rise twice a day",
        ),
        (
            "atlas-of-tides",
            2,
            "a lighthouse keeper records every quetzal that lands",
        ),
        (
            "garden-notes",
            1,
            "tomatoes and beans share the bed with marigolds",
        ),
    ];
    for (book, page, text) in pages {
        let (b, p, t) = (
            format!("X-Strata-Book: {book}"),
            format!("X-Strata-Page: {page}"),
            format!("X-Strata-Text: {text}"),
        );
        upload_async(
            &api,
            dir.path(),
            &format!("books/{book}/{page}.png"),
            &png(200, 300, page as u8 * 90),
            &[&b, &p, &t],
        );
    }
    let (code, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Authorization: Bearer {WRITE}"),
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        "not an image",
        &format!("{api}/v1/blobs/notes/readme.txt"),
    ]);
    assert_eq!(code, 201, "{body}");
    for key in [
        "photos/harbour.png",
        "photos/lighthouse.png",
        "photos/meadow.png",
        "books/atlas-of-tides/1.png",
        "books/atlas-of-tides/2.png",
        "books/garden-notes/1.png",
    ] {
        await_thumbnail(&api, key);
    }
    until("the search index", Duration::from_secs(30), || {
        let (_, b) = curl(&[&format!("{api}/v1/search?q=quetzal")]);
        b.contains("atlas-of-tides").then_some(()).ok_or(b)
    });
    let queue = s
        .listeners
        .get("queue")
        .expect("queue listener")
        .to_string();
    let dead = dead_letter(
        &queue,
        "console-test",
        "thumbnailer: cannot decode the image",
    );

    let mut b = Browser::launch(1280, 900).expect("chromium");

    // Cluster: every role of serve, up, with figures and charts.
    open(&mut b, &format!("{api}/_strata/#cluster"));
    let members = b
        .wait_for(
            "(() => { const r = [...document.querySelectorAll('#members tr.member')];
               return r.length === 9 && r.every(x => x.querySelector('[data-state]').dataset.state === 'up')
                 && r.map(x => x.dataset.role + ':' + x.dataset.member).join(' '); })()",
            Duration::from_secs(20),
        )
        .expect("every member up");
    let members = members.as_str().expect("names").to_owned();
    for want in [
        "gateway:gateway",
        "node:node-1",
        "node:node-2",
        "cache:cache",
        "store:store-1",
        "index:index",
        "queue:queue",
        "search:search-0",
        "search:search-1",
    ] {
        assert!(members.contains(want), "{want} missing from {members}");
    }
    // Traffic in waves, one per sample, so that the charts and rates have
    // something to show.
    let samples = || -> usize {
        let (_, b) = curl(&[&format!("{api}/_strata/api/cluster")]);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
        v["members"][0]["history"]["t"]
            .as_array()
            .map_or(0, Vec::len)
    };
    for wave in 0..8 {
        let before = samples();
        for i in 0..(4 + 3 * (wave % 4)) {
            let key = [
                "photos/harbour.png",
                "photos/meadow.png",
                "notes/readme.txt",
                "none",
            ][i % 4];
            curl(&["-o", "/dev/null", &format!("{api}/v1/blobs/{key}")]);
        }
        until("the next sample", Duration::from_secs(5), || {
            (samples() > before)
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        });
    }
    let store_row = b
        .wait_for(
            "(() => { const t = document.querySelector('tr[data-member=\"store-1\"]')?.innerText || '';
               return /blobs\\s+\\d+/.test(t) && /disk free/.test(t) && t; })()",
            Duration::from_secs(10),
        )
        .expect("store figures");
    assert!(
        !store_row.as_str().unwrap_or_default().contains("blobs –"),
        "{store_row}"
    );
    b.wait_for(
        "document.querySelectorAll('.panel path').length >= 3 && [...document.querySelectorAll('.panel path')].some(p => (p.getAttribute('d') || '').includes('L'))",
        Duration::from_secs(10),
    )
    .expect("charts drawn");
    b.wait_for(
        "(document.querySelector('tr[data-member=\"queue\"]')?.innerText || '').includes('console-test')",
        Duration::from_secs(10),
    )
    .expect("queue row lists its queues");
    no_errors(&mut b, "cluster");
    b.screenshot(&docs("cluster.png")).expect("screenshot");

    // Upload: a file dropped on the drop zone, with the write token.
    open(&mut b, &format!("{api}/_strata/#upload"));
    b.wait_for(
        "!!document.querySelector('#drop') && !!document.querySelector('#write-token')",
        Duration::from_secs(10),
    )
    .expect("upload page with a token field");
    let dropped = png(400, 260, 200);
    let b64 = base64_of(&dropped);
    b.eval(&format!(
        "(() => {{
            const t = document.querySelector('#write-token'); t.value = '{WRITE}'; t.dispatchEvent(new Event('input'));
            const p = document.querySelector('#upload-prefix'); p.value = 'dropped/'; p.dispatchEvent(new Event('input'));
            const bin = Uint8Array.from(atob('{b64}'), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bin], 'sunrise.png', {{ type: 'image/png' }}));
            dt.items.add(new File(['plain words'], 'words.txt', {{ type: 'text/plain' }}));
            const z = document.querySelector('#drop');
            z.dispatchEvent(new DragEvent('dragover', {{ dataTransfer: dt, bubbles: true, cancelable: true }}));
            z.dispatchEvent(new DragEvent('drop', {{ dataTransfer: dt, bubbles: true, cancelable: true }}));
            return true; }})()"
    ))
    .expect("drop");
    b.wait_for(
        "document.querySelectorAll('li.upload.done').length === 2 && document.querySelector('li.upload[data-key=\"dropped/sunrise.png\"]').innerText.includes('succeeded')",
        Duration::from_secs(30),
    )
    .expect("both uploads done, the image through its job");
    no_errors(&mut b, "upload");
    b.screenshot(&docs("upload.png")).expect("screenshot");
    let (code, got) = curl(&[
        "-o",
        "/dev/null",
        &format!("{api}/v1/blobs/dropped/sunrise.png"),
    ]);
    assert_eq!(code, 200, "{got}");
    await_thumbnail(&api, "dropped/sunrise.png");

    // Browse: the dropped image in the grid with its 128-pixel thumbnail.
    open(&mut b, &format!("{api}/_strata/#browse?prefix=dropped%2F"));
    let w = b
        .wait_for(
            "(() => { const i = document.querySelector('a.card[data-key=\"dropped/sunrise.png\"] img');
               return i && i.complete && !i.dataset.fallback && i.src.includes('?w=128') && i.naturalWidth; })()",
            Duration::from_secs(15),
        )
        .expect("thumbnail in the grid");
    assert_eq!(w, 128, "the grid shows the 128-pixel variant");
    open(&mut b, &format!("{api}/_strata/#browse"));
    b.wait_for(
        "(() => { const c = [...document.querySelectorAll('a.card')].map(a => a.dataset.key);
           return c.includes('photos/harbour.png') && c.includes('notes/readme.txt') && !c.some(k => k.startsWith('_'))
             && [...document.querySelectorAll('a.card img')].every(i => i.complete && i.naturalWidth > 0); })()",
        Duration::from_secs(15),
    )
    .expect("every blob but the system's, images loaded");
    no_errors(&mut b, "browse");
    b.screenshot(&docs("browse.png")).expect("screenshot");

    // One blob: full size, metadata, replicas.
    b.eval("document.querySelector('a.card[data-key=\"photos/harbour.png\"]').click()")
        .expect("click");
    let meta = b
        .wait_for(
            "(() => { const i = document.querySelector('img.full'); const t = document.querySelector('.meta-table')?.innerText || '';
               return i && i.complete && i.naturalWidth === 320 && t.includes('store-1') && t.includes('harbour') && t; })()",
            Duration::from_secs(10),
        )
        .expect("blob page");
    assert!(
        meta.as_str().unwrap_or_default().contains("image/png"),
        "{meta}"
    );
    no_errors(&mut b, "blob");

    // Search: the book with the word first, its snippet highlighted.
    open(&mut b, &format!("{api}/_strata/#search?q=quetzal"));
    let first = b
        .wait_for(
            "(() => { const s = document.querySelector('section.book'); const m = s && s.querySelector('.snippet b');
               const img = s && s.querySelector('.hit img');
               return m && img && img.complete && img.naturalWidth > 0 && s.dataset.book + '|' + m.textContent; })()",
            Duration::from_secs(15),
        )
        .expect("search results");
    assert_eq!(first, "atlas-of-tides|quetzal");
    no_errors(&mut b, "search");
    b.screenshot(&docs("search.png")).expect("screenshot");

    // Jobs: the dead letter with its error; retry needs the admin token.
    let kick = format!("{api}/_strata/api/jobs/{dead}/kick");
    assert_eq!(curl(&["-X", "POST", &kick]).0, 401, "no token");
    // The console's own API takes small bodies only (64 KiB).
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 70 * 1024]).expect("write");
    let auth = format!("Authorization: Bearer {ADMIN}");
    let data = format!("@{}", big.display());
    assert_eq!(
        curl(&["-X", "POST", "-H", &auth, "--data-binary", &data, &kick]).0,
        413,
        "oversized body"
    );
    assert_eq!(
        curl(&["-X", "POST", "-H", "Authorization: Bearer wrong", &kick]).0,
        403,
        "wrong token"
    );
    open(&mut b, &format!("{api}/_strata/#jobs"));
    let err = b
        .wait_for(
            &format!("document.querySelector('tr[data-job=\"{dead}\"] td.err')?.textContent"),
            Duration::from_secs(10),
        )
        .expect("dead letter listed");
    assert_eq!(err, "thumbnailer: cannot decode the image");
    no_errors(&mut b, "jobs");
    b.screenshot(&docs("jobs.png")).expect("screenshot");
    b.eval(&format!(
        "(() => {{ const t = document.querySelector('#admin-token'); t.value = '{ADMIN}'; t.dispatchEvent(new Event('input'));
            document.querySelector('tr[data-job=\"{dead}\"] button.kick').click(); return true; }})()"
    ))
    .expect("retry");
    b.wait_for(
        &format!("!document.querySelector('tr[data-job=\"{dead}\"]') && document.querySelector('#job-msg').textContent.includes('kicked')"),
        Duration::from_secs(10),
    )
    .expect("the job left the dead letters");
    let (_, status) = curl(&[&format!("http://{queue}/v1/jobs/{dead}")]);
    assert!(status.contains("\"ready\""), "{status}");
    no_errors(&mut b, "jobs after retry");

    // A phone-sized window: nothing wider than the screen.
    b.viewport(390, 844, true).expect("viewport");
    for view in ["cluster", "browse"] {
        open(&mut b, &format!("{api}/_strata/#{view}"));
        b.wait_for(
            "document.querySelectorAll('#members tr.member, a.card').length > 0",
            Duration::from_secs(10),
        )
        .expect("page drawn");
        let fits = b
            .eval("document.documentElement.scrollWidth <= window.innerWidth + 1")
            .expect("width");
        assert_eq!(fits, true, "{view} is wider than a phone");
        no_errors(&mut b, view);
    }
    b.screenshot(&docs("phone-browse.png")).expect("screenshot");
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_turns_down_on_the_cluster_page() {
    let layout = testkit::Layout {
        stores: 2,
        replicas: 2,
        caches: 1,
        nodes: 2,
        queue: true,
        shards: 1,
        ..testkit::Layout::default()
    };
    let mut p = testkit::Procs::launch(bin(), layout, "[console]\nsample_ms = 250\n")
        .await
        .expect("cluster");
    let gw = p.addr("gateway");
    let c = p.client();
    for i in 0..4 {
        let r = c
            .put(&format!("/v1/blobs/k{i}"), testkit::blob(i, 2000))
            .await
            .expect("put");
        assert_eq!(r.status, testkit::StatusCode::CREATED);
    }
    let url = format!("http://{gw}/_strata/#cluster");
    let mut b = tokio::task::spawn_blocking(move || {
        let mut b = Browser::launch(1280, 900).expect("chromium");
        open(&mut b, &url);
        let all = b
            .wait_for(
                "(() => { const r = [...document.querySelectorAll('#members tr.member')];
                   return r.length >= 9 && r.every(x => x.querySelector('[data-state]').dataset.state === 'up')
                     && r.map(x => x.dataset.member).join(' '); })()",
                Duration::from_secs(20),
            )
            .expect("every member up");
        let all = all.as_str().expect("names").to_owned();
        for m in ["gateway", "node-1", "node-2", "store-1", "store-2", "index", "cache-1", "queue", "search-1"] {
            assert!(all.split(' ').any(|x| x == m), "{m} missing from {all}");
        }
        b.wait_for(
            "/blobs\\s+\\d/.test(document.querySelector('tr[data-member=\"store-1\"]')?.innerText || '')",
            Duration::from_secs(10),
        )
        .expect("store figures");
        no_errors(&mut b, "cluster");
        b
    })
    .await
    .expect("browser");
    p.kill("node-2").expect("kill node-2");
    let b2 = tokio::task::spawn_blocking(move || {
        // Within a few samples (and the gateway's health checks).
        b.wait_for(
            "document.querySelector('tr[data-member=\"node-2\"] [data-state]')?.dataset.state === 'down'
               && document.querySelector('tr[data-member=\"node-1\"] [data-state]')?.dataset.state === 'up'",
            Duration::from_secs(5),
        )
        .expect("node-2 down, node-1 up");
        let summary = b
            .eval("document.querySelector('.summary').innerText")
            .expect("summary");
        assert!(summary.as_str().unwrap_or_default().contains("1 down"), "{summary}");
        no_errors(&mut b, "cluster after a kill");
        b.screenshot(&docs("cluster-node-down.png")).expect("screenshot");
        b
    })
    .await
    .expect("browser");
    drop(b2);
    // The cluster still serves through the gateway.
    let r = c.get("/v1/blobs/k1").await.expect("get");
    assert_eq!(r.status, testkit::StatusCode::OK);
}

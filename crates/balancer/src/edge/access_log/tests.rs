use std::time::UNIX_EPOCH;

use super::format::{push_int, seconds};
use super::*;

fn entry() -> Entry<'static> {
    Entry {
        time: UNIX_EPOCH + Duration::from_millis(971_185_736_250),
        remote: "10.0.0.7",
        method: "GET",
        target: "/v1/blobs/a\"b",
        protocol: "HTTP/1.1",
        status: 200,
        bytes: 1024,
        referer: None,
        user_agent: Some("curl/8 \"x\""),
        pool: "reads",
        upstream: Some("127.0.0.1:9001".parse().expect("addr")),
        request_time: Duration::from_micros(1500),
        upstream_time: Some(Duration::from_micros(900)),
        request_id: Some("abc"),
    }
}

#[test]
fn integers_and_seconds_are_written_by_hand_correctly() {
    let mut s = String::new();
    for (n, w, want) in [
        (0, 1, "0"),
        (7, 3, "007"),
        (1234, 3, "1234"),
        (u64::MAX, 1, "18446744073709551615"),
    ] {
        s.clear();
        push_int(&mut s, n, w);
        assert_eq!(s, want);
    }
    s.clear();
    seconds(Duration::from_micros(1_234_567), 6, &mut s);
    assert_eq!(s, "1.234567");
    s.clear();
    seconds(Duration::from_micros(5), 3, &mut s);
    assert_eq!(s, "0.000");
}

#[test]
fn times_are_civil() {
    let t = UNIX_EPOCH + Duration::from_millis(971_185_736_250);
    assert_eq!(clf_time(t), "10/Oct/2000:13:48:56 +0000");
    assert_eq!(iso_time(t), "2000-10-10T13:48:56.250Z");
    assert_eq!(iso_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    // A leap day.
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(iso_time(leap), "2000-02-29T00:00:00.000Z");
}

#[test]
fn lines_quote_what_a_client_controls() {
    let mut s = String::new();
    format_entry(&entry(), LogFormat::Combined, &mut s);
    assert_eq!(
        s,
        "10.0.0.7 - - [10/Oct/2000:13:48:56 +0000] \"GET /v1/blobs/a\\x22b HTTP/1.1\" 200 1024 \"-\" \"curl/8 \\x22x\\x22\" pool=\"reads\" upstream=\"127.0.0.1:9001\" rt=0.001 urt=0.000 rid=\"abc\""
    );
    s.clear();
    format_entry(&entry(), LogFormat::Json, &mut s);
    assert!(s.starts_with("{\"time\":\"2000-10-10T13:48:56.250Z\",\"remote\":\"10.0.0.7\",\"method\":\"GET\",\"target\":\"/v1/blobs/a\\\"b\""), "{s}");
    assert!(
        s.contains("\"referer\":null,\"user_agent\":\"curl/8 \\\"x\\\"\""),
        "{s}"
    );
    assert!(
        s.ends_with("\"request_time\":0.001500,\"upstream_time\":0.000900,\"request_id\":\"abc\"}"),
        "{s}"
    );
}

#[test]
fn a_full_buffer_drops_and_counts_instead_of_waiting() {
    let dir = std::env::temp_dir().join(format!("strata-al-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    // Room for a few lines only: the rest of a burst is dropped.
    let log = AccessLog::open(Sink::File(path.clone()), LogFormat::Json, 2000).expect("open");
    for _ in 0..10_000 {
        log.log(&entry());
    }
    log.flush();
    let lines = log.metrics().lines.load(Ordering::Relaxed);
    let dropped = log.metrics().dropped.load(Ordering::Relaxed);
    assert_eq!(lines + dropped, 10_000);
    assert!(dropped > 0);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count() as u64, lines);
    // Rotation: rename, reopen, and new lines go to a new file.
    std::fs::rename(&path, dir.join("access.log.1")).expect("rename");
    log.reopen();
    log.log(&entry());
    log.flush();
    assert_eq!(
        std::fs::read_to_string(&path).expect("new").lines().count(),
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

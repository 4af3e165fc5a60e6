//! Objects of any size: a body longer than a chunk is stored as chunks plus
//! a manifest, through `/v1/blobs` and through S3 alike; ranges read only
//! the chunks they cover; deletes, overwrites and cut-off uploads leave no
//! chunk behind.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::Served;

mod common;
use common::bin;

const MIB: u64 = 1 << 20;

/// `n` MiB that differ in every MiB (a random MiB, each copy stamped with
/// its index), written fast.
fn make_file(path: &Path, n: u64) {
    let block = testkit::blob(42, MIB as usize);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for i in 0..n {
        let mut b = block.clone();
        b[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all(&b).expect("write");
    }
    f.flush().expect("flush");
}

/// MD5 (hex) of what `cmd` writes to stdout, read as it streams (a 1 GiB
/// download never lands on disk).
fn md5_of_output(mut cmd: Command) -> String {
    use md5::{Digest, Md5};
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = out.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    assert!(child.wait().expect("wait").success(), "{shown}");
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn md5sum(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sum")
        .to_owned()
}

fn slice(path: &Path, from: u64, len: u64) -> Vec<u8> {
    let mut f = std::fs::File::open(path).expect("open");
    f.seek(SeekFrom::Start(from)).expect("seek");
    let mut b = vec![0u8; len as usize];
    f.read_exact(&mut b).expect("read");
    b
}

fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-s", "-f", "-g"])
        .args(args)
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    out.stdout
}

fn aws(s: &Served, home: &Path, args: &[&str]) {
    let out = s.aws(home, args).output().expect("aws");
    assert!(out.status.success(), "aws {args:?}: {out:?}");
}

/// Keys under `prefix`, through the native listing.
fn keys_under(s: &Served, prefix: &str) -> Vec<String> {
    let raw = curl(&[&format!(
        "http://{}/v1/blobs?prefix={prefix}&limit=1000",
        s.http
    )]);
    let v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["key"].as_str().expect("key").to_owned())
        .collect()
}

/// Waits until no chunk blob is left but `keep` (chunks of replaced and
/// deleted objects are deleted in the background).
fn until_no_chunks(s: &Served, keep: &[String]) {
    testkit::until("chunks deleted", Duration::from_secs(30), || {
        let left: Vec<String> = keys_under(s, "_chunks/")
            .into_iter()
            .filter(|k| !keep.contains(k))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}

#[test]
fn a_gibibyte_object_round_trips_through_both_apis_in_chunks() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Served::start(bin(), &dir.path().join("data"), &[]).expect("serve");
    let home = dir.path();
    let file = dir.path().join("one.bin");
    let size = 1024 * MIB;
    make_file(&file, 1024);
    let want = md5sum(&file);
    aws(&s, home, &["s3", "mb", "s3://big"]);

    // Native PUT (streamed by curl), read back through S3 (aws-cli's
    // download is ranged GETs that cross the 64 MiB chunks).
    let f = file.to_str().expect("path");
    curl(&[
        "-T",
        f,
        &format!("http://{}/v1/blobs/big/native.bin", s.http),
    ]);
    let chunks = keys_under(&s, "_chunks/");
    assert_eq!(chunks.len(), 16, "1 GiB in 64 MiB chunks: {chunks:?}");
    let down = s.aws(
        home,
        &["s3", "cp", "--only-show-errors", "s3://big/native.bin", "-"],
    );
    assert_eq!(md5_of_output(down), want, "native PUT, S3 GET");

    // One S3 PUT of the whole body (chunked by the server as it arrives),
    // read back through /v1/blobs.
    aws(
        &s,
        home,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "big",
            "--key",
            "s3.bin",
            "--body",
            f,
        ],
    );
    let mut down = Command::new("curl");
    down.args(["-s", "-f"])
        .arg(format!("http://{}/v1/blobs/big/s3.bin", s.http));
    assert_eq!(md5_of_output(down), want, "S3 PUT, native GET");

    // Ranges across chunk boundaries, both APIs.
    for (from, len) in [
        (64 * MIB - 10, 20),
        (60 * MIB, 140 * MIB),
        (size - 5, 5),
        (0, 1),
        (128 * MIB, 64 * MIB),
    ] {
        let expect = slice(&file, from, len);
        let r = format!("{from}-{}", from + len - 1);
        let native = curl(&[
            "-r",
            &r,
            &format!("http://{}/v1/blobs/big/native.bin", s.http),
        ]);
        assert!(native == expect, "native range {r}");
        let out = dir.path().join("range.bin");
        aws(
            &s,
            home,
            &[
                "s3api",
                "get-object",
                "--bucket",
                "big",
                "--key",
                "s3.bin",
                "--range",
                &format!("bytes={r}"),
                out.to_str().expect("path"),
            ],
        );
        assert!(std::fs::read(&out).expect("read") == expect, "S3 range {r}");
    }

    // Overwritten and deleted, the chunks go (in the background).
    let s3_chunks: Vec<String> = keys_under(&s, "_chunks/")
        .into_iter()
        .filter(|k| !chunks.contains(k))
        .collect();
    assert_eq!(s3_chunks.len(), 16);
    curl(&[
        "-X",
        "PUT",
        "--data-binary",
        "small now",
        &format!("http://{}/v1/blobs/big/native.bin", s.http),
    ]);
    until_no_chunks(&s, &s3_chunks);
    assert_eq!(
        curl(&[&format!("http://{}/v1/blobs/big/native.bin", s.http)]),
        b"small now"
    );
    aws(
        &s,
        home,
        &["s3", "rm", "--only-show-errors", "s3://big/s3.bin"],
    );
    until_no_chunks(&s, &[]);
}

#[test]
fn a_cut_off_upload_past_a_chunk_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let s =
        Served::start_with_config(bin(), dir.path(), "[limits]\nchunk_mb = 1\n").expect("serve");
    // Declares 10 MiB and sends 5: four chunks are written as they arrive
    // (the fifth MiB waits for more). Seen written, the client hangs up.
    let mut c = std::net::TcpStream::connect(s.http).expect("connect");
    write!(
        c,
        "PUT /v1/blobs/cut.bin HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        10 * MIB
    )
    .expect("head");
    let body = testkit::blob(5, 5 * MIB as usize);
    c.write_all(&body).expect("body");
    testkit::until("four chunks written", Duration::from_secs(30), || {
        let n = keys_under(&s, "_chunks/").len();
        if n >= 4 {
            Ok(())
        } else {
            Err(format!("{n} chunks"))
        }
    });
    drop(c);
    until_no_chunks(&s, &[]);
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{}/v1/blobs/cut.bin", s.http))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    // Asynchronous uploads go through the queue whole: past one chunk they
    // are refused, and nothing is left.
    let big = dir.path().join("two.bin");
    std::fs::write(&big, testkit::blob(7, 2 * MIB as usize)).expect("write");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Prefer: respond-async",
            "-T",
        ])
        .arg(&big)
        .arg(format!("http://{}/v1/blobs/async.bin", s.http))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "413");
    until_no_chunks(&s, &[]);
    // A whole upload of the same size is kept, in ten 1 MiB chunks.
    let full = testkit::blob(6, 10 * MIB as usize);
    let path = dir.path().join("full.bin");
    std::fs::write(&path, &full).expect("write");
    curl(&[
        "-T",
        path.to_str().expect("path"),
        &format!("http://{}/v1/blobs/full.bin", s.http),
    ]);
    assert_eq!(keys_under(&s, "_chunks/").len(), 10);
    assert!(curl(&[&format!("http://{}/v1/blobs/full.bin", s.http)]) == full);
}

#[test]
fn chunks_and_parts_nothing_names_are_swept_once_older_than_an_upload_may_take() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Served::start_with_config(
        bin(),
        dir.path(),
        "[limits]\nchunk_mb = 1\n[s3]\nabandoned_upload_secs = 2\n",
    )
    .expect("serve");
    // A live object in three chunks.
    let live = testkit::blob(8, 3 * MIB as usize);
    let path = dir.path().join("live.bin");
    std::fs::write(&path, &live).expect("write");
    let url = |k: &str| format!("http://{}/v1/blobs/{k}", s.http);
    curl(&["-T", path.to_str().expect("path"), &url("live.bin")]);
    let chunks = keys_under(&s, "_chunks/");
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    // What a crash between a commit and its drop job leaves: a chunk and
    // a multipart part that no record names.
    let small = dir.path().join("small.bin");
    std::fs::write(&small, b"left by a crash").expect("write");
    let orphans = ["_chunks/00000000deadbeef/000000", "_s3/parts/gone/00001"];
    for k in orphans {
        curl(&["-T", small.to_str().expect("path"), &url(k)]);
    }
    testkit::until("orphans swept", Duration::from_secs(30), || {
        let left: Vec<String> = keys_under(&s, "_")
            .into_iter()
            .filter(|k| orphans.contains(&k.as_str()))
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    // The live object's chunks are named by its record: kept, and it
    // reads back whole.
    assert_eq!(keys_under(&s, "_chunks/"), chunks);
    assert!(curl(&[&url("live.bin")]) == live);
}

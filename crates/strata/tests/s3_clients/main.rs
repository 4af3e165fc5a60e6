//! The S3 API with the clients people use, unchanged: aws-cli, boto3,
//! rclone and s3cmd against a fresh `strata serve`, given only what it
//! prints (endpoint and keys), and each again against a cluster through
//! its gateway. `.ci/run` installs the clients.
//!
//! S3 at its edges (abandoned uploads, refused requests) is in `edges`;
//! the cluster run in `cluster`. One test binary: each more would be
//! another link of the whole workspace.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use testkit::{S3Endpoint, Served};

/// One client's whole run against an endpoint, in a work directory.
type Scenario = fn(&S3Endpoint, &Path);

#[path = "../common/mod.rs"]
mod common;
use common::bin;

mod cluster;
mod edges;

/// Keys that need care in URLs, XML and signatures.
const AWKWARD: [&str; 6] = [
    "with space.txt",
    "plus+and&amp.txt",
    "per%cent'quote\".txt",
    "ünïcödé/日本.txt",
    "deep/a/b/c/d/e/f.txt",
    "tab-free ~!@$^()[]{};,=.txt",
];

fn run(mut c: Command) -> Output {
    let shown = format!("{c:?}");
    let out = c.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    out
}

fn ok(c: Command) -> String {
    let shown = format!("{c:?}");
    let out = run(c);
    assert!(
        out.status.success(),
        "{shown} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `aws` with the printed endpoint and keys, and no user configuration.
fn aws(s: &S3Endpoint, home: &Path, args: &[&str]) -> Command {
    let mut c = s.aws(home, &["--no-paginate"]);
    c.args(args);
    c
}

fn write_tree(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }
}

fn http_get(url: &str) -> (u16, Vec<u8>) {
    let out = run({
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-g", url]);
        c
    });
    let mut body = out.stdout;
    let at = body.iter().rposition(|&b| b == b'\n').expect("status line");
    let code = std::str::from_utf8(&body[at + 1..])
        .expect("utf8")
        .trim()
        .parse()
        .expect("status");
    body.truncate(at);
    (code, body)
}

/// Percent-encodes a key for a native `/v1/blobs/` URL.
fn enc(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn aws_cli_copies_syncs_and_lists_and_both_apis_see_the_same_objects() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Served::start(bin(), &dir.path().join("data"), &[]).expect("serve");
    aws_cli_scenario(&s.endpoint(), dir.path());
}

fn aws_cli_scenario(s: &S3Endpoint, work: &Path) {
    let home = work;
    ok(aws(s, home, &["s3", "mb", "s3://photos"]));

    // cp up and down, awkward keys included.
    let src = work.join("src");
    let files: Vec<(&str, Vec<u8>)> = AWKWARD
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, testkit::blob(i as u64, 1000 + i * 7919)))
        .collect();
    write_tree(&src, &files);
    for (k, data) in &files {
        let from = src.join(k);
        ok(aws(
            s,
            home,
            &[
                "s3",
                "cp",
                "--only-show-errors",
                from.to_str().expect("path"),
                &format!("s3://photos/one/{k}"),
            ],
        ));
        let back = work.join("back");
        ok(aws(
            s,
            home,
            &[
                "s3",
                "cp",
                "--only-show-errors",
                &format!("s3://photos/one/{k}"),
                back.to_str().expect("path"),
            ],
        ));
        assert_eq!(&std::fs::read(&back).expect("read"), data, "{k}");
        // The native API reads what S3 wrote, under bucket/key.
        let (code, body) = http_get(&format!("http://{}/v1/blobs/photos/one/{}", s.http, enc(k)));
        assert_eq!((code, &body), (200, data), "{k} through /v1/blobs");
    }

    // sync twice: the second run has nothing to copy.
    let tree = work.join("tree");
    write_tree(
        &tree,
        &[
            ("a.jpg", testkit::blob(100, 5000)),
            ("sub/b.jpg", testkit::blob(101, 6000)),
            ("sub/deeper/c.jpg", testkit::blob(102, 7000)),
        ],
    );
    let t = tree.to_str().expect("path");
    let first = ok(aws(
        s,
        home,
        &["s3", "sync", "--no-progress", t, "s3://photos/tree"],
    ));
    assert_eq!(
        first.lines().filter(|l| l.starts_with("upload:")).count(),
        3,
        "{first}"
    );
    let second = ok(aws(
        s,
        home,
        &["s3", "sync", "--no-progress", t, "s3://photos/tree"],
    ));
    assert!(second.trim().is_empty(), "the second sync copied: {second}");

    // ls with prefixes: folders as PRE, files with sizes.
    let top = ok(aws(s, home, &["s3", "ls", "s3://photos/tree/"]));
    assert!(top.contains("PRE sub/"), "{top}");
    assert!(top.contains(" 5000 a.jpg"), "{top}");
    assert!(!top.contains("b.jpg"), "{top}");
    let deep = ok(aws(
        s,
        home,
        &["s3", "ls", "--recursive", "s3://photos/tree/sub/"],
    ));
    assert!(
        deep.contains("tree/sub/b.jpg") && deep.contains("tree/sub/deeper/c.jpg"),
        "{deep}"
    );
    let buckets = ok(aws(s, home, &["s3", "ls"]));
    assert!(buckets.contains("photos"), "{buckets}");

    // A blob written through /v1/blobs is an object to S3.
    let native = testkit::blob(7, 3000);
    let c = testkit::Client::new(format!("http://{}", s.http));
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let r = rt
        .block_on(c.put("/v1/blobs/photos/native/n.bin", native.clone()))
        .expect("put");
    assert!(r.status.is_success(), "{:?}", r.status);
    let back = work.join("n.bin");
    ok(aws(
        s,
        home,
        &[
            "s3",
            "cp",
            "--only-show-errors",
            "s3://photos/native/n.bin",
            back.to_str().expect("path"),
        ],
    ));
    assert_eq!(std::fs::read(&back).expect("read"), native);

    // Errors as S3 gives them.
    let out = run(aws(s, home, &["s3", "rb", "s3://photos"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("BucketNotEmpty"),
        "{out:?}"
    );
    let out = run(aws(
        s,
        home,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "photos",
            "--key",
            "nope",
        ],
    ));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    let out = run(aws(s, home, &["s3", "ls", "s3://no-such-bucket"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NoSuchBucket"),
        "{out:?}"
    );
    let mut wrong = aws(s, home, &["s3", "ls", "s3://photos"]);
    wrong.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let out = run(wrong);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SignatureDoesNotMatch"),
        "{out:?}"
    );
    let mut unknown = aws(s, home, &["s3", "ls", "s3://photos"]);
    unknown.env("AWS_ACCESS_KEY_ID", "AKIDONTKNOWYOU");
    let out = run(unknown);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidAccessKeyId"),
        "{out:?}"
    );
    // Unsigned requests are refused on a private bucket.
    let (code, body) = http_get(&format!("{}/photos/tree/a.jpg", s.s3_url()));
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("AccessDenied"));

    // Emptied, the bucket goes.
    ok(aws(
        s,
        home,
        &[
            "s3",
            "rm",
            "--only-show-errors",
            "--recursive",
            "s3://photos",
        ],
    ));
    ok(aws(s, home, &["s3", "rb", "s3://photos"]));
    let buckets = ok(aws(s, home, &["s3", "ls"]));
    assert!(!buckets.contains("photos"), "{buckets}");
}

fn python() -> Command {
    testkit::python_with_boto3().expect("boto3 (.ci/run installs python3-boto3)")
}

#[test]
fn boto3_uploads_in_parts_downloads_presigns_and_pages_with_a_delimiter() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Served::start(bin(), &dir.path().join("data"), &[]).expect("serve");
    boto3_scenario(&s.endpoint(), dir.path());
}

fn boto3_scenario(s: &S3Endpoint, work: &Path) {
    let script = r#"
import boto3, hashlib, os, subprocess, sys, time
from botocore.config import Config
from boto3.s3.transfer import TransferConfig
endpoint, ak, sk, work = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak,
                  aws_secret_access_key=sk, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket="books")
# Above the multipart threshold: three parts of 8 MiB and a short one.
big = os.path.join(work, "big.bin")
with open(big, "wb") as f:
    f.write(os.urandom(26 * 1024 * 1024 + 123))
cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
s3.upload_file(big, "books", "big/archive.bin", Config=cfg)
head = s3.head_object(Bucket="books", Key="big/archive.bin")
assert head["ContentLength"] == 26 * 1024 * 1024 + 123, head
assert head["ETag"].endswith('-4"'), head["ETag"]
back = os.path.join(work, "back.bin")
s3.download_file("books", "big/archive.bin", back)
md5 = lambda p: hashlib.md5(open(p, "rb").read()).hexdigest()
assert md5(big) == md5(back), "download differs"
# Ranged reads across the part boundary.
r = s3.get_object(Bucket="books", Key="big/archive.bin", Range="bytes=8388600-8388620")
data = open(big, "rb").read()
assert r["Body"].read() == data[8388600:8388621]
assert r["ContentRange"] == "bytes 8388600-8388620/%d" % len(data), r["ContentRange"]
# A Content-MD5 that is not the body's: BadDigest, nothing written.
import base64
try:
    s3.put_object(Bucket="books", Key="bad-md5.txt", Body=b"hello",
                  ContentMD5=base64.b64encode(hashlib.md5(b"other").digest()).decode())
    raise SystemExit("a wrong Content-MD5 was accepted")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "BadDigest", e.response
try:
    s3.head_object(Bucket="books", Key="bad-md5.txt")
    raise SystemExit("a refused body became visible")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "404", e.response
# Metadata comes back.
s3.put_object(Bucket="books", Key="meta.txt", Body=b"hi", ContentType="text/plain",
              Metadata={"owner": "ann"}, CacheControl="max-age=60",
              ContentDisposition="attachment")
h = s3.head_object(Bucket="books", Key="meta.txt")
assert h["Metadata"] == {"owner": "ann"}, h
assert h["ContentType"] == "text/plain" and h["CacheControl"] == "max-age=60", h
assert h["ContentDisposition"] == "attachment", h
assert h["ETag"] == '"%s"' % hashlib.md5(b"hi").hexdigest(), h
# Conditional reads.
try:
    s3.get_object(Bucket="books", Key="meta.txt", IfNoneMatch=h["ETag"])
    raise SystemExit("If-None-Match did not answer 304")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] in ("304", "NotModified"), e.response
try:
    s3.get_object(Bucket="books", Key="meta.txt", IfMatch='"0000"')
    raise SystemExit("If-Match did not fail")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "PreconditionFailed", e.response
# Copy: COPY keeps the metadata, REPLACE sets it; onto itself is refused.
s3.copy_object(Bucket="books", Key="copy.txt", CopySource={"Bucket": "books", "Key": "meta.txt"})
assert s3.head_object(Bucket="books", Key="copy.txt")["Metadata"] == {"owner": "ann"}
s3.copy_object(Bucket="books", Key="copy.txt", CopySource={"Bucket": "books", "Key": "meta.txt"},
               MetadataDirective="REPLACE", Metadata={"owner": "bob"}, ContentType="text/x")
h2 = s3.head_object(Bucket="books", Key="copy.txt")
assert h2["Metadata"] == {"owner": "bob"} and h2["ContentType"] == "text/x", h2
try:
    s3.copy_object(Bucket="books", Key="meta.txt", CopySource={"Bucket": "books", "Key": "meta.txt"})
    raise SystemExit("copy onto itself was not refused")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "InvalidRequest", e.response
# A presigned GET works with curl until it expires.
url = s3.generate_presigned_url("get_object", Params={"Bucket": "books", "Key": "meta.txt"}, ExpiresIn=300)
got = subprocess.run(["curl", "-s", "-f", url], capture_output=True)
assert got.returncode == 0 and got.stdout == b"hi", got
short = s3.generate_presigned_url("get_object", Params={"Bucket": "books", "Key": "meta.txt"}, ExpiresIn=1)
time.sleep(2.2)
got = subprocess.run(["curl", "-s", short], capture_output=True)
assert b"AccessDenied" in got.stdout and b"expired" in got.stdout.lower(), got.stdout
# Paging with a delimiter: 5 objects and 3 folders under p/, two a page.
for k in ["p/a", "p/b", "p/c", "p/d", "p/e", "p/x/1", "p/x/2", "p/y/1", "p/z/9/9"]:
    s3.put_object(Bucket="books", Key=k, Body=k.encode())
seen, prefixes, pages, token = [], [], 0, None
while True:
    kw = dict(Bucket="books", Prefix="p/", Delimiter="/", MaxKeys=2)
    if token:
        kw["ContinuationToken"] = token
    r = s3.list_objects_v2(**kw)
    pages += 1
    seen += [o["Key"] for o in r.get("Contents", [])]
    prefixes += [p["Prefix"] for p in r.get("CommonPrefixes", [])]
    assert r["KeyCount"] <= 2, r
    if not r["IsTruncated"]:
        break
    token = r["NextContinuationToken"]
assert seen == ["p/a", "p/b", "p/c", "p/d", "p/e"], seen
assert prefixes == ["p/x/", "p/y/", "p/z/"], prefixes
assert pages == 4, pages
# v1 with a marker, and the paginator over v2.
r = s3.list_objects(Bucket="books", Prefix="p/", Delimiter="/", Marker="p/c")
assert [o["Key"] for o in r["Contents"]] == ["p/d", "p/e"], r
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="books", PaginationConfig={"PageSize": 3}) for o in page.get("Contents", [])]
assert len(keys) == len(set(keys)) == 12, keys
# Batch delete, then versions (tools empty buckets this way) are gone.
r = s3.delete_objects(Bucket="books", Delete={"Objects": [{"Key": k} for k in keys]})
assert len(r["Deleted"]) == 12, r
assert s3.list_object_versions(Bucket="books").get("Versions", []) == []
# Abandoned multipart uploads are listed and can be aborted.
up = s3.create_multipart_upload(Bucket="books", Key="half.bin")["UploadId"]
s3.upload_part(Bucket="books", Key="half.bin", UploadId=up, PartNumber=1, Body=b"x" * 1000)
parts = s3.list_parts(Bucket="books", Key="half.bin", UploadId=up)["Parts"]
assert [p["PartNumber"] for p in parts] == [1], parts
ups = s3.list_multipart_uploads(Bucket="books")["Uploads"]
assert [u["UploadId"] for u in ups] == [up], ups
s3.abort_multipart_upload(Bucket="books", Key="half.bin", UploadId=up)
assert "Uploads" not in s3.list_multipart_uploads(Bucket="books") or not s3.list_multipart_uploads(Bucket="books")["Uploads"]
try:
    s3.head_object(Bucket="books", Key="half.bin")
    raise SystemExit("an aborted upload became visible")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "404", e.response
print("ok")
"#;
    let script_path = work.join("t.py");
    std::fs::write(&script_path, script).expect("script");
    let mut c = python();
    c.arg(&script_path)
        .arg(s.s3_url())
        .arg(&s.access_key)
        .arg(&s.secret_key)
        .arg(work)
        .env("HOME", work)
        .env("AWS_CONFIG_FILE", work.join("none"));
    let out = ok(c);
    assert_eq!(out.trim(), "ok");
}

#[test]
fn rclone_syncs_and_checks_sizes_and_md5s() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Served::start(bin(), &dir.path().join("data"), &[]).expect("serve");
    rclone_scenario(&s.endpoint(), dir.path());
}

fn rclone_scenario(s: &S3Endpoint, work: &Path) {
    let tree = work.join("tree");
    let mut files: Vec<(&str, Vec<u8>)> = AWKWARD
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, testkit::blob(200 + i as u64, 500 + i * 4099)))
        .collect();
    files.push(("big/over-the-cutoff.bin", testkit::blob(300, 9 << 20)));
    write_tree(&tree, &files);
    let rclone = |args: &[&str]| {
        let mut c = Command::new("rclone");
        c.args(args)
            // rclone 1.60 cannot use a CA bundle on its HTTP transport.
            .env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", work.join("rclone.conf"))
            .env("RCLONE_CONFIG_S_TYPE", "s3")
            .env("RCLONE_CONFIG_S_PROVIDER", "Other")
            .env("RCLONE_CONFIG_S_ENDPOINT", s.s3_url())
            .env("RCLONE_CONFIG_S_ACCESS_KEY_ID", &s.access_key)
            .env("RCLONE_CONFIG_S_SECRET_ACCESS_KEY", &s.secret_key)
            .env("RCLONE_CONFIG_S_REGION", "us-east-1")
            .env("RCLONE_S3_UPLOAD_CUTOFF", "8M")
            .env("RCLONE_S3_CHUNK_SIZE", "5M");
        c
    };
    let t = tree.to_str().expect("path");
    ok(rclone(&["mkdir", "s:sync"]));
    ok(rclone(&["sync", t, "s:sync/here"]));
    ok(rclone(&["check", t, "s:sync/here"]));
    // A changed file is copied again; check then agrees again.
    std::fs::write(tree.join(AWKWARD[0]), b"changed").expect("write");
    ok(rclone(&["sync", t, "s:sync/here"]));
    ok(rclone(&["check", t, "s:sync/here"]));
    // And a deleted one goes.
    std::fs::remove_file(tree.join(AWKWARD[1])).expect("rm");
    ok(rclone(&["sync", t, "s:sync/here"]));
    let listed = ok(rclone(&["lsf", "-R", "s:sync/here"]));
    assert!(!listed.contains(AWKWARD[1]), "{listed}");
    ok(rclone(&["check", t, "s:sync/here"]));
}

#[test]
fn s3cmd_puts_gets_lists_and_deletes() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Served::start(bin(), &dir.path().join("data"), &[]).expect("serve");
    s3cmd_scenario(&s.endpoint(), dir.path());
}

fn s3cmd_scenario(s: &S3Endpoint, work: &Path) {
    let host = s.s3.to_string();
    let s3cmd = |args: &[&str]| {
        let mut c = Command::new("s3cmd");
        c.args(["-c", "/dev/null", "--no-ssl", "--host", &host])
            .args(["--host-bucket", &host])
            .args(["--access_key", &s.access_key, "--secret_key", &s.secret_key])
            .args(["--region", "us-east-1"])
            .args(args)
            .env("HOME", work);
        c
    };
    ok(s3cmd(&["mb", "s3://cmd"]));
    let f = work.join("f.bin");
    let data = testkit::blob(9, 12345);
    std::fs::write(&f, &data).expect("write");
    let fp = f.to_str().expect("path");
    for k in ["plain.bin", AWKWARD[0], AWKWARD[3]] {
        ok(s3cmd(&["put", fp, &format!("s3://cmd/{k}")]));
        let back = work.join("back.bin");
        let _ = std::fs::remove_file(&back);
        ok(s3cmd(&[
            "get",
            &format!("s3://cmd/{k}"),
            back.to_str().expect("path"),
        ]));
        assert_eq!(std::fs::read(&back).expect("read"), data, "{k}");
    }
    let ls = ok(s3cmd(&["ls", "s3://cmd/"]));
    assert!(
        ls.contains("s3://cmd/plain.bin") && ls.contains("12345"),
        "{ls}"
    );
    ok(s3cmd(&["del", "s3://cmd/plain.bin"]));
    let ls = ok(s3cmd(&["ls", "s3://cmd/"]));
    assert!(!ls.contains("plain.bin"), "{ls}");
}

/// Runs a boto3 `script` (argv: endpoint, access key, secret key) against
/// `s`; it prints `ok` when every assertion held.
fn run_script(s: &Served, home: &Path, script: &str) {
    let mut c = python();
    c.args(["-c", script, &s.s3_url(), &s.access_key, &s.secret_key])
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("none"));
    assert_eq!(ok(c).trim(), "ok");
}

/// Waits until the native listing under `prefix` holds `n` keys (deletes
/// run in the background).
fn until_listed(s: &Served, prefix: &str, n: usize) {
    testkit::until(
        &format!("{n} keys under {prefix}"),
        Duration::from_secs(20),
        || {
            let (code, body) = http_get(&format!("http://{}/v1/blobs?prefix={prefix}", s.http));
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            match v["items"].as_array() {
                Some(a) if code == 200 && a.len() == n => Ok(()),
                _ => Err(format!("{code} {v}")),
            }
        },
    );
}

//! The S3 API with the clients people use, unchanged: aws-cli, boto3,
//! rclone and s3cmd against a fresh `strata serve`, given only what it
//! prints (endpoint and keys), and each again against a cluster through
//! its gateway. `.ci/run` installs the clients.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use testkit::{S3Endpoint, Served};

/// One client's whole run against an endpoint, in a work directory.
type Scenario = fn(&S3Endpoint, &Path);

mod common;
use common::bin;

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

#[test]
fn abandoned_multipart_uploads_are_aborted_after_their_age() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = Served::start_with_config(bin(), dir.path(), "[s3]\nabandoned_upload_secs = 1\n")
        .expect("serve");
    let script = r#"
import boto3, sys, time
from botocore.config import Config
endpoint, ak, sk = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak,
                  aws_secret_access_key=sk, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket="leftovers")
up = s3.create_multipart_upload(Bucket="leftovers", Key="left.bin")["UploadId"]
s3.upload_part(Bucket="leftovers", Key="left.bin", UploadId=up, PartNumber=1, Body=b"y" * 4096)
assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="leftovers")["Uploads"]] == [up]
deadline = time.time() + 20
while s3.list_multipart_uploads(Bucket="leftovers").get("Uploads"):
    assert time.time() < deadline, "the upload was never aborted"
    time.sleep(0.1)
try:
    s3.upload_part(Bucket="leftovers", Key="left.bin", UploadId=up, PartNumber=2, Body=b"z")
    raise SystemExit("a swept upload took a part")
except s3.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "NoSuchUpload", e.response
print("ok")
"#;
    run_script(&s, dir.path(), script);
    // Its part went too (deleted in the background).
    until_listed(&s, "_s3/parts/", 0);
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

#[test]
fn oversized_malformed_and_cut_off_requests_get_s3_error_codes_and_leave_nothing_visible() {
    let dir = tempfile::tempdir().expect("tmp");
    // Objects of at most 8 MiB, so that "too large" is cheap to send.
    let s = Served::start_with_config(
        bin(),
        dir.path(),
        "[limits]\nmax_body_bytes = 8388608\nchunk_mb = 1\n",
    )
    .expect("serve");
    let script = r#"
import boto3, socket, sys, urllib.parse
from botocore.config import Config
endpoint, ak, sk = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak,
                  aws_secret_access_key=sk, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
MiB = 1 << 20
def code(f, **kw):
    try:
        f(**kw)
    except s3.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    raise SystemExit("no error from %s" % f.__name__)
s3.create_bucket(Bucket="bad")
assert code(s3.create_bucket, Bucket="Bad_Name") == "InvalidBucketName"
assert code(s3.list_objects_v2, Bucket="no-such") == "NoSuchBucket"
# One request above the limit: refused, nothing written.
assert code(s3.put_object, Bucket="bad", Key="big", Body=b"x" * (9 * MiB)) == "EntityTooLarge"
assert code(s3.head_object, Bucket="bad", Key="big") == "404"
s3.put_object(Bucket="bad", Key="small", Body=b"0123456789")
assert code(s3.get_object, Bucket="bad", Key="small", Range="bytes=50-60") == "InvalidRange"
assert code(s3.copy_object, Bucket="bad", Key="c", CopySource="bad/missing") == "NoSuchKey"
# Multipart: parts that add up past the limit, out of order, with a
# wrong ETag, too small, or none at all.
up = s3.create_multipart_upload(Bucket="bad", Key="parts")["UploadId"]
e1 = s3.upload_part(Bucket="bad", Key="parts", UploadId=up, PartNumber=1, Body=b"a" * (5 * MiB))["ETag"]
e2 = s3.upload_part(Bucket="bad", Key="parts", UploadId=up, PartNumber=2, Body=b"b" * (4 * MiB))["ETag"]
e3 = s3.upload_part(Bucket="bad", Key="parts", UploadId=up, PartNumber=3, Body=b"c" * 10)["ETag"]
done = lambda parts: code(s3.complete_multipart_upload, Bucket="bad", Key="parts", UploadId=up,
                          MultipartUpload={"Parts": parts})
assert done([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]) == "EntityTooLarge"
assert done([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 1, "ETag": e1}]) == "InvalidPartOrder"
assert done([{"PartNumber": 1, "ETag": e2}]) == "InvalidPart"
assert done([{"PartNumber": 9, "ETag": e1}]) == "InvalidPart"
assert done([{"PartNumber": 3, "ETag": e3}, {"PartNumber": 1, "ETag": e1}]) == "EntityTooSmall"
assert done([]) == "MalformedXML"
assert code(s3.head_object, Bucket="bad", Key="parts") == "404"
# The upload is still whole after the refusals: a good list completes it.
s3.complete_multipart_upload(Bucket="bad", Key="parts", UploadId=up,
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1},
                                                        {"PartNumber": 3, "ETag": e3}]})
assert s3.head_object(Bucket="bad", Key="parts")["ContentLength"] == 5 * MiB + 10
# A presigned PUT that declares 3 MiB and sends 2 before hanging up.
url = urllib.parse.urlsplit(s3.generate_presigned_url(
    "put_object", Params={"Bucket": "bad", "Key": "cut"}, ExpiresIn=60))
c = socket.create_connection((url.hostname, url.port))
c.sendall(("PUT %s?%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n"
           % (url.path, url.query, url.netloc, 3 * MiB)).encode())
c.sendall(b"z" * (2 * MiB))
c.close()
assert code(s3.head_object, Bucket="bad", Key="cut") == "404"
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bad").get("Contents", [])]
assert keys == ["parts", "small"], keys
print("ok")
"#;
    run_script(&s, dir.path(), script);
    // The refused and cut-off bodies left no chunk: what is left is the
    // completed upload's part 1 (5 MiB in 1 MiB chunks, named by its
    // record) and nothing else.
    until_listed(&s, "_chunks/", 5);
}

#[test]
fn every_node_of_a_cluster_serves_the_same_objects_over_s3_and_the_gateway_balances_them() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let (a1, a2, g) = (
        testkit::free_addr().expect("addr"),
        testkit::free_addr().expect("addr"),
        testkit::free_addr().expect("addr"),
    );
    let layout = testkit::Layout {
        stores: 2,
        replicas: 2,
        nodes: 2,
        member_lines: vec![
            ("node-1".into(), format!("s3_addr = \"{a1}\"")),
            ("node-2".into(), format!("s3_addr = \"{a2}\"")),
            ("gateway".into(), format!("s3_addr = \"{g}\"")),
        ],
        ..Default::default()
    };
    let extra =
        "[[s3.credentials]]\naccess_key = \"CLUSTERKEY\"\nsecret_env = \"STRATA_TEST_S3_SECRET\"\n";
    let mut procs = rt
        .block_on(testkit::Procs::launch_with_env(
            bin(),
            layout,
            extra,
            &[("STRATA_TEST_S3_SECRET", "cluster-secret-1")],
        ))
        .expect("cluster");
    let dir = tempfile::tempdir().expect("tmp");
    let home = dir.path();
    let as_node = |addr: std::net::SocketAddr, args: &[&str]| {
        let mut c = Command::new("aws");
        c.args(["--endpoint-url", &format!("http://{addr}")])
            .args(args)
            .env("HOME", home)
            .env("AWS_CONFIG_FILE", home.join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join("none"))
            .env("AWS_ACCESS_KEY_ID", "CLUSTERKEY")
            .env("AWS_SECRET_ACCESS_KEY", "cluster-secret-1")
            .env("AWS_DEFAULT_REGION", "us-east-1");
        c
    };
    ok(as_node(a1, &["s3", "mb", "s3://shared"]));
    let f = dir.path().join("f.bin");
    let data = testkit::blob(11, 70_000);
    std::fs::write(&f, &data).expect("write");
    ok(as_node(
        a1,
        &[
            "s3",
            "cp",
            "--only-show-errors",
            f.to_str().expect("path"),
            "s3://shared/x/f.bin",
        ],
    ));
    // Another node's S3 endpoint and the gateway's native API see it.
    let back = dir.path().join("back.bin");
    ok(as_node(
        a2,
        &[
            "s3",
            "cp",
            "--only-show-errors",
            "s3://shared/x/f.bin",
            back.to_str().expect("path"),
        ],
    ));
    assert_eq!(std::fs::read(&back).expect("read"), data);
    let ls = ok(as_node(a2, &["s3", "ls", "s3://shared/x/"]));
    assert!(ls.contains("70000 f.bin"), "{ls}");
    let (code, body) = http_get(&format!(
        "http://{}/v1/blobs/shared/x/f.bin",
        procs.addr("gateway")
    ));
    assert_eq!((code, body), (200, data.clone()));

    // The gateway's S3 listener: signatures made for its address verify
    // on the nodes (the Host header passes), a multipart upload with
    // `Expect: 100-continue` (aws-cli above 8 MiB) goes through, and a
    // presigned URL works.
    let big = dir.path().join("big.bin");
    let big_data = testkit::blob(12, 20 << 20);
    std::fs::write(&big, &big_data).expect("write");
    let big_s = big.to_str().expect("path");
    ok(as_node(
        g,
        &[
            "s3",
            "cp",
            "--only-show-errors",
            big_s,
            "s3://shared/big.bin",
        ],
    ));
    let head = ok(as_node(
        g,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "shared",
            "--key",
            "big.bin",
        ],
    ));
    assert!(head.contains("-3\\\""), "three parts: {head}");
    let url = ok(as_node(g, &["s3", "presign", "s3://shared/x/f.bin"]));
    let (code, body) = http_get(url.trim());
    assert_eq!((code, body), (200, data));
    // Every client's whole scenario, through the gateway.
    let gw = S3Endpoint {
        http: procs.addr("gateway"),
        s3: g,
        access_key: "CLUSTERKEY".into(),
        secret_key: "cluster-secret-1".into(),
    };
    let scenarios: [(&str, Scenario); 4] = [
        ("aws-cli", aws_cli_scenario),
        ("boto3", boto3_scenario),
        ("rclone", rclone_scenario),
        ("s3cmd", s3cmd_scenario),
    ];
    for (name, scenario) in scenarios {
        let w = dir.path().join(name);
        std::fs::create_dir_all(&w).expect("mkdir");
        scenario(&gw, &w);
    }
    // A node dies: the gateway's S3 keeps answering from the other one.
    procs.kill("node-1").expect("kill");
    for i in 0..6 {
        let back = dir.path().join(format!("big-{i}.bin"));
        ok(as_node(
            g,
            &[
                "s3",
                "cp",
                "--only-show-errors",
                "s3://shared/big.bin",
                back.to_str().expect("path"),
            ],
        ));
        assert!(std::fs::read(&back).expect("read") == big_data, "round {i}");
        std::fs::remove_file(&back).expect("rm");
    }
    let ls = ok(as_node(g, &["s3", "ls", "s3://shared/"]));
    assert!(ls.contains("big.bin") && ls.contains("PRE x/"), "{ls}");
}

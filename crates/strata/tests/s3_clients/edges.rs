//! S3 at its edges: abandoned multipart uploads aborted after their age,
//! and oversized, malformed and cut-off requests refused with S3's error
//! codes, leaving nothing visible.

use super::*;

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

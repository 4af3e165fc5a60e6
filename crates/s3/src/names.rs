//! Where S3's names live in strata's key space.
//!
//! Object `k` of bucket `b` is the strata key `b/k`: both APIs see it.
//! Bucket names cannot contain `_`, so the reserved `_s3/` prefix never
//! collides with a bucket.

use std::sync::Arc;

use node::Node;
use s3s::S3Result;

use crate::body::node_error;

/// Key of bucket `b`'s record (a small JSON blob: [`BucketRecord`]).
pub fn bucket_key(bucket: &str) -> String {
    format!("{BUCKETS}{bucket}")
}

/// Prefix of every bucket record.
pub const BUCKETS: &str = "_s3/buckets/";

/// The strata key of object `key` in `bucket`.
pub fn object_key(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

/// Key of multipart upload `id`'s record ([`UploadRecord`]).
pub fn upload_key(bucket: &str, id: &str) -> String {
    format!("{UPLOADS}{bucket}/{id}")
}

/// Prefix of every multipart upload record.
pub const UPLOADS: &str = "_s3/uploads/";

/// Key of part `n` of upload `id`; parts sort by number.
pub fn part_key(id: &str, n: i32) -> String {
    format!("{}{n:05}", part_prefix(id))
}

/// Prefix of the parts of upload `id`.
pub fn part_prefix(id: &str) -> String {
    format!("{PARTS}{id}/")
}

/// Prefix of every upload's parts: keys that only an object's chunk list
/// or an upload in progress names (swept by
/// [`node::objects::sweep_orphans`] when neither does).
pub const PARTS: &str = "_s3/parts/";

/// A bucket's record.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BucketRecord {
    /// Readable without signing (canned ACL `public-read`).
    #[serde(default)]
    pub public: bool,
}

/// A multipart upload's record: what CompleteMultipartUpload will write.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UploadRecord {
    /// The object key (within the bucket).
    pub key: String,
    /// Content-Type for the object.
    pub content_type: String,
    /// Response headers for the object.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// Bucket `name`'s record, `None` when there is no such bucket.
pub(crate) async fn bucket_record(node: &Arc<Node>, name: &str) -> S3Result<Option<BucketRecord>> {
    let Some(meta) = node.lookup(&bucket_key(name)).await.map_err(node_error)? else {
        return Ok(None);
    };
    let raw = node.read(&meta, None).await.map_err(node_error)?;
    Ok(Some(serde_json::from_slice(&raw).unwrap_or_default()))
}

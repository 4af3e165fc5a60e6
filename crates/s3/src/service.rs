//! [`Strata`] on a [`Node`]: the service `s3s` drives ([`service`],
//! [`serve`]), the `s3s::S3` impl that hands each operation to its module,
//! and the helpers those modules share (bucket and object lookups, bounded
//! body intake, entity tags, conditionals, upload settings).

use std::sync::Arc;

use index::BlobMeta;
use node::{Node, WriteSpec};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::auth::{Access, Credentials, Keys};
use crate::body::node_error;
pub(crate) use crate::names::bucket_record;
use crate::names::{self, BucketRecord};

/// S3 endpoint settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Objects larger than this are stored as chunks of this size.
    pub chunk_bytes: usize,
    /// The access keys accepted.
    pub credentials: Vec<Credentials>,
    /// Virtual-hosted-style addressing under this domain
    /// (`bucket.s3.example.com`), besides path style.
    pub domain: Option<String>,
    /// Largest object (`limits.max_body_bytes`): a larger PUT, part,
    /// copy or completed upload gets `EntityTooLarge`.
    pub max_object_bytes: u64,
}

/// Largest body one PutObject, UploadPart or copy carries in S3 (5 GiB);
/// larger objects are multipart uploads.
pub const MAX_PUT: u64 = 5 << 30;

/// The S3 operations over a node.
pub struct Strata {
    pub(crate) node: Arc<Node>,
    pub(crate) chunk_bytes: usize,
    pub(crate) max_object: u64,
}

/// Builds the `s3s` service: SigV4 against `opts.credentials`, anonymous
/// reads of public buckets, path-style (and virtual-hosted style when a
/// domain is set) addressing.
pub fn service(node: Arc<Node>, opts: &Options) -> s3s::service::S3Service {
    let mut b = s3s::service::S3ServiceBuilder::new(Strata {
        node: node.clone(),
        chunk_bytes: opts.chunk_bytes.max(1),
        max_object: opts.max_object_bytes,
    });
    b.set_auth(Keys(opts.credentials.clone()));
    b.set_access(Access { node });
    if let Some(d) = &opts.domain {
        match s3s::host::SingleDomain::new(d) {
            Ok(h) => b.set_host(h),
            Err(e) => tracing::warn!(domain = %d, error = %e, "S3 domain ignored"),
        }
    }
    b.build()
}

/// The path a balancer's active checks ask (`GET`, answered `200 ok`
/// without a signature). No bucket can be named `_strata` (S3 bucket
/// names are lowercase letters, digits, dots and hyphens), so it shadows
/// no object in path style.
pub const HEALTH_PATH: &str = "/_strata/healthz";

/// Answers S3 requests on `listener` until `shutdown` resolves, and
/// [`HEALTH_PATH`] for the gateway's health checks.
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: s3s::service::S3Service,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "S3 accept failed");
                    tokio::task::yield_now().await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = svc.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let healthz = req.method() == hyper::Method::GET
                && req.uri().path() == HEALTH_PATH
                && req.uri().query().is_none();
            let call = (!healthz).then(|| hyper::service::Service::call(&svc, req));
            async move {
                match call {
                    Some(call) => call.await,
                    None => Ok(hyper::Response::new(s3s::Body::from("ok\n".to_owned()))),
                }
            }
        });
        tokio::spawn(async move {
            let conn = Builder::new(TokioExecutor::new());
            if let Err(e) = conn.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(error = %e, "S3 connection ended");
            }
        });
    }
}

pub(crate) fn timestamp(ms: u64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

pub(crate) fn etag(meta: &BlobMeta) -> ETag {
    ETag::Strong(meta.etag.trim_matches('"').to_owned())
}

pub(crate) fn header<'a>(meta: &'a BlobMeta, name: &str) -> Option<&'a str> {
    meta.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn user_metadata(meta: &BlobMeta) -> Option<Metadata> {
    let m: Metadata = meta
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.strip_prefix("x-amz-meta-")?.to_owned(), v.clone())))
        .collect();
    (!m.is_empty()).then_some(m)
}

/// The content type (S3's default when none is given) and the headers
/// kept with an object, from an upload's fields.
pub(crate) fn upload_spec(
    content_type: Option<ContentType>,
    metadata: Option<Metadata>,
    cache_control: Option<String>,
    disposition: Option<String>,
    encoding: Option<String>,
    language: Option<String>,
) -> (String, Vec<(String, String)>) {
    let ct = content_type
        .map(|c| c.to_string())
        .unwrap_or_else(|| "binary/octet-stream".into());
    let mut h: Vec<(String, String)> = [
        ("cache-control", cache_control),
        ("content-disposition", disposition),
        ("content-encoding", encoding),
        ("content-language", language),
    ]
    .into_iter()
    .filter_map(|(n, v)| Some((n.to_owned(), v?)))
    .collect();
    let mut user: Vec<(String, String)> = metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (format!("x-amz-meta-{}", k.to_ascii_lowercase()), v))
        .collect();
    user.sort();
    h.extend(user);
    (ct, h)
}

/// The bucket and key a copy reads.
pub(crate) fn copy_source(c: &CopySource) -> S3Result<(&str, &str)> {
    match c {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket, key)),
        _ => Err(s3_error!(NotImplemented, "copy from an access point")),
    }
}

impl Strata {
    pub(crate) async fn need_bucket(&self, bucket: &str) -> S3Result<BucketRecord> {
        bucket_record(&self.node, bucket)
            .await?
            .ok_or_else(|| s3_error!(NoSuchBucket))
    }

    pub(crate) fn key(bucket: &str, key: &str) -> S3Result<String> {
        let k = names::object_key(bucket, key);
        if k.len() > node::MAX_KEY_BYTES {
            return Err(s3_error!(KeyTooLongError));
        }
        node::validate_key(&k).map_err(|e| s3_error!(InvalidArgument, "{e}"))?;
        Ok(k)
    }

    pub(crate) async fn object(&self, bucket: &str, key: &str) -> S3Result<(String, BlobMeta)> {
        let k = Self::key(bucket, key)?;
        match self.node.lookup(&k).await.map_err(node_error)? {
            Some(m) => Ok((k, m)),
            None => {
                self.need_bucket(bucket).await?;
                Err(s3_error!(NoSuchKey))
            }
        }
    }

    pub(crate) async fn write_record<T: serde::Serialize>(
        &self,
        key: &str,
        rec: &T,
    ) -> S3Result<BlobMeta> {
        let raw = serde_json::to_vec(rec).map_err(|e| s3_error!(e, InternalError))?;
        let spec = WriteSpec {
            content_type: "application/json".into(),
            ..WriteSpec::default()
        };
        self.node
            .write_with(key, raw.into(), spec)
            .await
            .map_err(node_error)
    }

    /// Reads an upload's body (chunks written as it arrives) and checks
    /// its `Content-MD5`, if given.
    pub(crate) async fn receive<S, E>(
        &self,
        body: S,
        expected: Option<u64>,
        content_md5: Option<&str>,
    ) -> S3Result<node::objects::Received>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        let limit = MAX_PUT.min(self.max_object);
        let too_large = || {
            s3_error!(
                EntityTooLarge,
                "one request carries at most {limit} bytes; larger objects are multipart uploads"
            )
        };
        if expected.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        // A body of no declared length is counted as it arrives.
        let mut seen = 0u64;
        let over = std::sync::atomic::AtomicBool::new(false);
        let body = body.map(|piece| {
            let piece = piece.map_err(|e| e.to_string())?;
            seen += piece.len() as u64;
            if seen > limit {
                over.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err("too large".to_owned());
            }
            Ok(piece)
        });
        let got = match self
            .node
            .receive(body, self.chunk_bytes, expected, true)
            .await
        {
            Ok(got) => got,
            Err(_) if over.load(std::sync::atomic::Ordering::Relaxed) => return Err(too_large()),
            Err(e) => return Err(node_error(e)),
        };
        if let Some(want) = content_md5 {
            if want != base64_md5(&got.md5.unwrap_or_default()) {
                got.discard(&self.node);
                return Err(s3_error!(BadDigest));
            }
        }
        Ok(got)
    }
}

/// Checks If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since
/// as S3 does for GET and HEAD.
pub(crate) fn preconditions(
    meta: &BlobMeta,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let tag = etag(meta);
    let modified = timestamp(meta.created_ms / 1000 * 1000);
    let matches =
        |c: &ETagCondition| c.is_any() || c.as_etag().is_some_and(|e| e.value() == tag.value());
    if let Some(c) = if_match {
        if !matches(c) {
            return Err(s3_error!(PreconditionFailed));
        }
    } else if let Some(t) = if_unmodified_since {
        if modified > *t {
            return Err(s3_error!(PreconditionFailed));
        }
    }
    if let Some(c) = if_none_match {
        if matches(c) {
            return Err(s3_error!(NotModified));
        }
    } else if let Some(t) = if_modified_since {
        if modified <= *t {
            return Err(s3_error!(NotModified));
        }
    }
    Ok(())
}

/// The operations `s3s` calls. A trait impl is one block, so each method
/// hands over to the inherent method of the same name, kept with its kind:
/// `buckets`, `objects`, `listing`, `multipart` (an inherent method wins
/// over the trait's in `Strata::name`). Operations not listed answer
/// `NotImplemented`, as S3 does for a feature it does not have.
#[async_trait::async_trait]
impl s3s::S3 for Strata {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        Strata::list_buckets(self, req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        Strata::create_bucket(self, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        Strata::head_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        Strata::get_bucket_location(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        Strata::get_bucket_versioning(self, req).await
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        Strata::put_bucket_acl(self, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        Strata::delete_bucket(self, req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        Strata::put_object(self, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        Strata::get_object(self, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        Strata::head_object(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        Strata::delete_object(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        Strata::delete_objects(self, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        Strata::copy_object(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        Strata::list_objects(self, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        Strata::list_objects_v2(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        Strata::list_object_versions(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        Strata::create_multipart_upload(self, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        Strata::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        Strata::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        Strata::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        Strata::abort_multipart_upload(self, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        Strata::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        Strata::list_multipart_uploads(self, req).await
    }
}

pub(crate) fn base64_md5(d: &[u8; 16]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// Every key under `prefix` (all pages).
pub(crate) async fn keys_under(node: &Node, prefix: &str) -> S3Result<Vec<index::Entry>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = node
            .index
            .list(prefix, None, after.as_deref(), index::MAX_LIST_LIMIT)
            .await
            .map_err(node_error)?;
        after = page.items.last().map(|e| e.key.clone());
        out.extend(page.items);
        if page.next.is_none() || after.is_none() {
            return Ok(out);
        }
    }
}

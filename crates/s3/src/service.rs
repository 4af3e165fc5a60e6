//! [`Strata`]: the S3 operations on a [`Node`].

use std::sync::Arc;

use index::{BlobMeta, Chunk};
use md5::{Digest, Md5};
use node::{Node, WriteSpec};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::auth::{Access, Credentials, Keys};
use crate::body::{self, md5_etag, node_error};
use crate::list;
use crate::names::{self, BucketRecord, UploadRecord};

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

/// Smallest part S3 accepts, except the last one.
const MIN_PART: u64 = 5 << 20;

/// The S3 operations over a node.
pub struct Strata {
    node: Arc<Node>,
    chunk_bytes: usize,
    max_object: u64,
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

/// Bucket `name`'s record, `None` when there is no such bucket.
pub(crate) async fn bucket_record(node: &Arc<Node>, name: &str) -> S3Result<Option<BucketRecord>> {
    let Some(meta) = node
        .lookup(&names::bucket_key(name))
        .await
        .map_err(node_error)?
    else {
        return Ok(None);
    };
    let raw = node.read(&meta, None).await.map_err(node_error)?;
    Ok(Some(serde_json::from_slice(&raw).unwrap_or_default()))
}

fn timestamp(ms: u64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

fn etag(meta: &BlobMeta) -> ETag {
    ETag::Strong(meta.etag.trim_matches('"').to_owned())
}

fn header<'a>(meta: &'a BlobMeta, name: &str) -> Option<&'a str> {
    meta.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn user_metadata(meta: &BlobMeta) -> Option<Metadata> {
    let m: Metadata = meta
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.strip_prefix("x-amz-meta-")?.to_owned(), v.clone())))
        .collect();
    (!m.is_empty()).then_some(m)
}

/// The content type (S3's default when none is given) and the headers
/// kept with an object, from an upload's fields.
fn upload_spec(
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
fn copy_source(c: &CopySource) -> S3Result<(&str, &str)> {
    match c {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket, key)),
        _ => Err(s3_error!(NotImplemented, "copy from an access point")),
    }
}

fn check_part_number(n: i32) -> S3Result<()> {
    if (1..=10_000).contains(&n) {
        Ok(())
    } else {
        Err(s3_error!(InvalidArgument, "part numbers are 1 to 10000"))
    }
}

/// Every key under `prefix` (all pages).
async fn keys_under(node: &Node, prefix: &str) -> S3Result<Vec<index::Entry>> {
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

/// Ends upload `id` (record under `record_key`): the record goes now, its
/// parts in the background.
async fn drop_upload(node: &Arc<Node>, record_key: &str, id: &str) -> S3Result<()> {
    let parts = keys_under(node, &names::part_prefix(id)).await?;
    node.delete_blob(record_key).await.map_err(node_error)?;
    node.drop_keys(parts.into_iter().map(|p| p.key).collect());
    Ok(())
}

impl Strata {
    async fn need_bucket(&self, bucket: &str) -> S3Result<BucketRecord> {
        bucket_record(&self.node, bucket)
            .await?
            .ok_or_else(|| s3_error!(NoSuchBucket))
    }

    fn key(bucket: &str, key: &str) -> S3Result<String> {
        let k = names::object_key(bucket, key);
        if k.len() > node::MAX_KEY_BYTES {
            return Err(s3_error!(KeyTooLongError));
        }
        node::validate_key(&k).map_err(|e| s3_error!(InvalidArgument, "{e}"))?;
        Ok(k)
    }

    async fn object(&self, bucket: &str, key: &str) -> S3Result<(String, BlobMeta)> {
        let k = Self::key(bucket, key)?;
        match self.node.lookup(&k).await.map_err(node_error)? {
            Some(m) => Ok((k, m)),
            None => {
                self.need_bucket(bucket).await?;
                Err(s3_error!(NoSuchKey))
            }
        }
    }

    async fn write_record<T: serde::Serialize>(&self, key: &str, rec: &T) -> S3Result<BlobMeta> {
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

    async fn upload(&self, bucket: &str, id: &str, key: &str) -> S3Result<UploadRecord> {
        let meta = self
            .node
            .lookup(&names::upload_key(bucket, id))
            .await
            .map_err(node_error)?
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        let raw = self.node.read(&meta, None).await.map_err(node_error)?;
        let rec: UploadRecord =
            serde_json::from_slice(&raw).map_err(|e| s3_error!(e, InternalError))?;
        if rec.key != key {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok(rec)
    }

    /// Reads an upload's body (chunks written as it arrives) and checks
    /// its `Content-MD5`, if given.
    async fn receive<S, E>(
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

    /// Writes part `n` of upload `id`: its ETag is its MD5.
    async fn write_part(
        &self,
        id: &str,
        n: i32,
        got: node::objects::Received,
    ) -> S3Result<BlobMeta> {
        let spec = WriteSpec {
            content_type: "application/octet-stream".into(),
            etag: Some(md5_etag(&got.md5.unwrap_or_default())),
            ..WriteSpec::default()
        };
        self.node
            .commit_object(&names::part_key(id, n), got, spec)
            .await
            .map_err(node_error)
    }

    /// One page of `bucket`'s listing for any of the ListObjects forms:
    /// the page, whether keys go out URL-encoded, the page size asked,
    /// and the prefix.
    async fn listing(
        &self,
        bucket: &str,
        prefix: Option<&str>,
        delimiter: Option<&str>,
        after: Option<&str>,
        max_keys: Option<i32>,
        encoding: Option<&EncodingType>,
    ) -> S3Result<(list::Page, bool, usize, String)> {
        self.need_bucket(bucket).await?;
        let max = max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let prefix = prefix.unwrap_or_default().to_owned();
        let after = after.filter(|a| !a.is_empty());
        let page = list::list(&self.node, bucket, &prefix, delimiter, after, max)
            .await
            .map_err(node_error)?;
        let url = encoding.is_some_and(|e| e.as_str() == "url");
        Ok((page, url, max, prefix))
    }
}

/// Checks If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since
/// as S3 does for GET and HEAD.
fn preconditions(
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

#[async_trait::async_trait]
impl s3s::S3 for Strata {
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = keys_under(&self.node, names::BUCKETS)
            .await?
            .into_iter()
            .map(|e| Bucket {
                name: Some(e.key[names::BUCKETS.len()..].to_owned()),
                creation_date: Some(timestamp(e.meta.created_ms)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("strata".into()),
                id: Some("strata".into()),
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let b = &req.input.bucket;
        if bucket_record(&self.node, b).await?.is_some() {
            return Err(s3_error!(BucketAlreadyOwnedByYou));
        }
        let public = req
            .input
            .acl
            .as_ref()
            .is_some_and(|a| a.as_str() == BucketCannedACL::PUBLIC_READ);
        self.write_record(&names::bucket_key(b), &BucketRecord { public })
            .await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{b}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.need_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.need_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.need_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let b = &req.input.bucket;
        self.need_bucket(b).await?;
        let public = match req.input.acl.as_ref().map(|a| a.as_str()) {
            Some(BucketCannedACL::PUBLIC_READ) => true,
            Some(BucketCannedACL::PRIVATE) => false,
            _ => {
                return Err(s3_error!(
                    NotImplemented,
                    "only the canned ACLs private and public-read"
                ))
            }
        };
        self.write_record(&names::bucket_key(b), &BucketRecord { public })
            .await?;
        Ok(S3Response::new(PutBucketAclOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let b = &req.input.bucket;
        self.need_bucket(b).await?;
        let any = self
            .node
            .index
            .list(&format!("{b}/"), None, None, 1)
            .await
            .map_err(node_error)?;
        if !any.items.is_empty() {
            return Err(s3_error!(BucketNotEmpty));
        }
        self.node
            .delete_blob(&names::bucket_key(b))
            .await
            .map_err(node_error)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        let key = Self::key(&i.bucket, &i.key)?;
        let body = i.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let expected = i.content_length.and_then(|n| u64::try_from(n).ok());
        let got = self
            .receive(body, expected, i.content_md5.as_deref())
            .await?;
        let (content_type, headers) = upload_spec(
            i.content_type,
            i.metadata,
            i.cache_control,
            i.content_disposition,
            i.content_encoding,
            i.content_language,
        );
        let spec = WriteSpec {
            content_type,
            headers,
            etag: Some(md5_etag(&got.md5.unwrap_or_default())),
            ..WriteSpec::default()
        };
        let meta = self
            .node
            .commit_object(&key, got, spec)
            .await
            .map_err(node_error)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&meta)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let i = req.input;
        let (_, meta) = self.object(&i.bucket, &i.key).await?;
        preconditions(
            &meta,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        )?;
        let (start, end) = match &i.range {
            Some(r) => {
                let r = r.check(meta.size).map_err(|_| s3_error!(InvalidRange))?;
                (r.start, r.end)
            }
            None => (0, meta.size),
        };
        let content_range = i
            .range
            .is_some()
            .then(|| format!("bytes {start}-{}/{}", end.saturating_sub(1), meta.size));
        let stream = body::read_range(self.node.clone(), meta.clone(), start, end);
        let out = GetObjectOutput {
            body: Some(StreamingBlob::wrap(stream)),
            content_length: Some((end - start) as i64),
            content_range: content_range.clone(),
            accept_ranges: Some("bytes".into()),
            content_type: meta.content_type.parse().ok(),
            e_tag: Some(etag(&meta)),
            last_modified: Some(timestamp(meta.created_ms)),
            metadata: user_metadata(&meta),
            cache_control: header(&meta, "cache-control").map(str::to_owned),
            content_disposition: header(&meta, "content-disposition").map(str::to_owned),
            content_encoding: header(&meta, "content-encoding").map(str::to_owned),
            content_language: header(&meta, "content-language").map(str::to_owned),
            ..Default::default()
        };
        let mut resp = S3Response::new(out);
        if content_range.is_some() {
            resp.status = Some(hyper::StatusCode::PARTIAL_CONTENT);
        }
        Ok(resp)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = req.input;
        let (_, meta) = self.object(&i.bucket, &i.key).await?;
        preconditions(
            &meta,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        )?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(meta.size as i64),
            accept_ranges: Some("bytes".into()),
            content_type: meta.content_type.parse().ok(),
            e_tag: Some(etag(&meta)),
            last_modified: Some(timestamp(meta.created_ms)),
            metadata: user_metadata(&meta),
            cache_control: header(&meta, "cache-control").map(str::to_owned),
            content_disposition: header(&meta, "content-disposition").map(str::to_owned),
            content_encoding: header(&meta, "content-encoding").map(str::to_owned),
            content_language: header(&meta, "content-language").map(str::to_owned),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        let key = Self::key(&i.bucket, &i.key)?;
        self.node.delete_blob(&key).await.map_err(node_error)?;
        let mut resp = S3Response::new(DeleteObjectOutput::default());
        resp.status = Some(hyper::StatusCode::NO_CONTENT);
        Ok(resp)
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "at most 1000 keys per request"));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for o in i.delete.objects {
            let res = match Self::key(&i.bucket, &o.key) {
                Ok(k) => self.node.delete_blob(&k).await.map_err(node_error),
                Err(e) => Err(e),
            };
            match res {
                Ok(_) if quiet => {}
                Ok(_) => deleted.push(DeletedObject {
                    key: Some(o.key),
                    ..Default::default()
                }),
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_owned()),
                    key: Some(o.key),
                    message: e.message().map(str::to_owned),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        let (sb, sk) = copy_source(&i.copy_source)?;
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if sb == i.bucket && sk == i.key && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let (_, src) = self.object(sb, sk).await?;
        preconditions(
            &src,
            i.copy_source_if_match.as_ref(),
            i.copy_source_if_none_match.as_ref(),
            i.copy_source_if_modified_since.as_ref(),
            i.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|_| s3_error!(PreconditionFailed))?;
        self.need_bucket(&i.bucket).await?;
        let key = Self::key(&i.bucket, &i.key)?;
        let stream = body::read_range(self.node.clone(), src.clone(), 0, src.size);
        let got = self.receive(stream, Some(src.size), None).await?;
        let (content_type, headers) = if replace {
            upload_spec(
                i.content_type,
                i.metadata,
                i.cache_control,
                i.content_disposition,
                i.content_encoding,
                i.content_language,
            )
        } else {
            (src.content_type.clone(), src.headers.clone())
        };
        let spec = WriteSpec {
            content_type,
            headers,
            etag: Some(src.etag.clone()),
            ..WriteSpec::default()
        };
        let meta = self
            .node
            .commit_object(&key, got, spec)
            .await
            .map_err(node_error)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&meta)),
                last_modified: Some(timestamp(meta.created_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let (page, url, max, prefix) = self
            .listing(
                &i.bucket,
                i.prefix.as_deref(),
                i.delimiter.as_deref(),
                i.marker.as_deref(),
                i.max_keys,
                i.encoding_type.as_ref(),
            )
            .await?;
        let next_marker = (page.truncated && i.delimiter.is_some())
            .then(|| page.last.clone())
            .flatten()
            .map(|m| enc(url, m));
        let (contents, prefixes) = entries(&page, url);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(url, prefix)),
            marker: i.marker.map(|m| enc(url, m)),
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            delimiter: i.delimiter.map(|d| enc(url, d)),
            next_marker,
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let after = match &i.continuation_token {
            Some(t) => Some(decode_token(t)?),
            None => i.start_after.clone(),
        };
        let (page, url, max, prefix) = self
            .listing(
                &i.bucket,
                i.prefix.as_deref(),
                i.delimiter.as_deref(),
                after.as_deref(),
                i.max_keys,
                i.encoding_type.as_ref(),
            )
            .await?;
        let next = page
            .truncated
            .then(|| page.last.as_deref().map(encode_token))
            .flatten();
        let (contents, prefixes) = entries(&page, url);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(enc(url, prefix)),
            max_keys: Some(max as i32),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            continuation_token: i.continuation_token,
            is_truncated: Some(page.truncated),
            next_continuation_token: next,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            delimiter: i.delimiter.map(|d| enc(url, d)),
            encoding_type: i.encoding_type,
            start_after: i.start_after.map(|s| enc(url, s)),
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let i = req.input;
        let (page, url, max, prefix) = self
            .listing(
                &i.bucket,
                i.prefix.as_deref(),
                i.delimiter.as_deref(),
                i.key_marker.as_deref(),
                i.max_keys,
                i.encoding_type.as_ref(),
            )
            .await?;
        let versions = page
            .objects
            .iter()
            .map(|(k, m)| ObjectVersion {
                key: Some(enc(url, k.clone())),
                version_id: Some("null".into()),
                is_latest: Some(true),
                e_tag: Some(etag(m)),
                size: Some(m.size as i64),
                last_modified: Some(timestamp(m.created_ms)),
                ..Default::default()
            })
            .collect();
        let prefixes = page
            .prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(url, p.clone())),
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(url, prefix)),
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            next_key_marker: page.truncated.then(|| page.last.clone()).flatten(),
            next_version_id_marker: page.truncated.then(|| "null".to_owned()),
            versions: Some(versions),
            common_prefixes: Some(prefixes),
            delimiter: i.delimiter,
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        Self::key(&i.bucket, &i.key)?;
        let id = node::session::random_hex(16).map_err(|e| s3_error!(e, InternalError))?;
        let (content_type, headers) = upload_spec(
            i.content_type,
            i.metadata,
            i.cache_control,
            i.content_disposition,
            i.content_encoding,
            i.content_language,
        );
        let rec = UploadRecord {
            key: i.key.clone(),
            content_type,
            headers,
        };
        self.write_record(&names::upload_key(&i.bucket, &id), &rec)
            .await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let i = req.input;
        check_part_number(i.part_number)?;
        self.upload(&i.bucket, &i.upload_id, &i.key).await?;
        let body = i.body.ok_or_else(|| s3_error!(IncompleteBody))?;
        let expected = i.content_length.and_then(|n| u64::try_from(n).ok());
        let got = self
            .receive(body, expected, i.content_md5.as_deref())
            .await?;
        let meta = self.write_part(&i.upload_id, i.part_number, got).await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&meta)),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let i = req.input;
        check_part_number(i.part_number)?;
        self.upload(&i.bucket, &i.upload_id, &i.key).await?;
        let (sb, sk) = copy_source(&i.copy_source)?;
        let (_, src) = self.object(sb, sk).await?;
        let (start, end) = match &i.copy_source_range {
            Some(r) => {
                let r = r
                    .strip_prefix("bytes=")
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
                    .filter(|(a, b)| a <= b && *b < src.size)
                    .ok_or_else(|| s3_error!(InvalidRange))?;
                (r.0, r.1 + 1)
            }
            None => (0, src.size),
        };
        let stream = body::read_range(self.node.clone(), src, start, end);
        let got = self.receive(stream, Some(end - start), None).await?;
        let meta = self.write_part(&i.upload_id, i.part_number, got).await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&meta)),
                last_modified: Some(timestamp(meta.created_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let rec = self.upload(&i.bucket, &i.upload_id, &i.key).await?;
        let listed = i
            .multipart_upload
            .and_then(|m| m.parts)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| s3_error!(MalformedXML, "no parts"))?;
        let uploaded: std::collections::HashMap<String, BlobMeta> =
            keys_under(&self.node, &names::part_prefix(&i.upload_id))
                .await?
                .into_iter()
                .map(|e| (e.key, e.meta))
                .collect();
        let mut chunks = Vec::with_capacity(listed.len());
        let mut md5 = Md5::new();
        let mut last = 0;
        for (n, p) in listed.iter().enumerate() {
            let num = p.part_number.ok_or_else(|| s3_error!(InvalidPart))?;
            if num <= last {
                return Err(s3_error!(InvalidPartOrder));
            }
            last = num;
            let key = names::part_key(&i.upload_id, num);
            let meta = uploaded.get(&key).ok_or_else(|| s3_error!(InvalidPart))?;
            if p.e_tag
                .as_ref()
                .is_some_and(|t| t.value() != etag(meta).value())
            {
                return Err(s3_error!(InvalidPart));
            }
            if n + 1 < listed.len() && meta.size < MIN_PART {
                return Err(s3_error!(EntityTooSmall));
            }
            let digest =
                hex::decode(etag(meta).value()).map_err(|e| s3_error!(e, InternalError))?;
            md5.update(&digest);
            chunks.push(Chunk {
                key,
                size: meta.size,
            });
        }
        let total: u64 = chunks.iter().map(|c| c.size).sum();
        if total > self.max_object {
            return Err(s3_error!(
                EntityTooLarge,
                "the parts add up to {total} bytes, above the {} allowed",
                self.max_object
            ));
        }
        let tag = format!("\"{}-{}\"", hex::encode(md5.finalize()), listed.len());
        let key = Self::key(&i.bucket, &i.key)?;
        let used: std::collections::HashSet<&str> = chunks.iter().map(|c| c.key.as_str()).collect();
        let unused: Vec<String> = uploaded
            .keys()
            .filter(|k| !used.contains(k.as_str()))
            .cloned()
            .collect();
        let spec = WriteSpec {
            content_type: rec.content_type,
            headers: rec.headers,
            etag: Some(tag),
            chunks,
            ..WriteSpec::default()
        };
        let manifest = serde_json::to_vec(&spec.chunks).map_err(|e| s3_error!(e, InternalError))?;
        // The parts become the object's chunks: not dropped on failure.
        let meta = self
            .node
            .write_with(&key, manifest.into(), spec)
            .await
            .map_err(node_error)?;
        self.node
            .delete_blob(&names::upload_key(&i.bucket, &i.upload_id))
            .await
            .map_err(node_error)?;
        self.node.drop_keys(unused);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(etag(&meta)),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        self.upload(&i.bucket, &i.upload_id, &i.key).await?;
        let record = names::upload_key(&i.bucket, &i.upload_id);
        drop_upload(&self.node, &record, &i.upload_id).await?;
        let mut resp = S3Response::new(AbortMultipartUploadOutput::default());
        resp.status = Some(hyper::StatusCode::NO_CONTENT);
        Ok(resp)
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        self.upload(&i.bucket, &i.upload_id, &i.key).await?;
        let max = i.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let marker = i.part_number_marker.unwrap_or(0);
        let mut parts: Vec<Part> = keys_under(&self.node, &names::part_prefix(&i.upload_id))
            .await?
            .into_iter()
            .filter_map(|e| {
                let n: i32 = e.key.rsplit('/').next()?.parse().ok()?;
                (n > marker).then(|| Part {
                    part_number: Some(n),
                    e_tag: Some(etag(&e.meta)),
                    size: Some(e.meta.size as i64),
                    last_modified: Some(timestamp(e.meta.created_ms)),
                    ..Default::default()
                })
            })
            .collect();
        let truncated = parts.len() > max;
        parts.truncate(max);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            next_part_number_marker: parts.last().and_then(|p| p.part_number),
            part_number_marker: Some(marker),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let base = format!("{}{}/", names::UPLOADS, i.bucket);
        let mut uploads = Vec::new();
        for e in keys_under(&self.node, &base).await? {
            let Ok(raw) = self.node.read(&e.meta, None).await else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<UploadRecord>(&raw) else {
                continue;
            };
            if rec.key.starts_with(&prefix) {
                uploads.push(MultipartUpload {
                    key: Some(rec.key),
                    upload_id: Some(e.key[base.len()..].to_owned()),
                    initiated: Some(timestamp(e.meta.created_ms)),
                    ..Default::default()
                });
            }
        }
        uploads.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            uploads: Some(uploads),
            is_truncated: Some(false),
            ..Default::default()
        }))
    }
}

fn base64_md5(d: &[u8; 16]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(d)
}

/// A continuation token: the last key or prefix returned, hex-encoded so
/// it is opaque and URL-safe.
fn encode_token(last: &str) -> String {
    hex::encode(last.as_bytes())
}

fn decode_token(t: &str) -> S3Result<String> {
    hex::decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

/// Bytes left as they are by `encoding-type=url` (RFC 3986 unreserved,
/// and `/` as S3 leaves it).
const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// `encoding-type=url`: keys and prefixes percent-encoded in the XML.
fn enc(url: bool, s: String) -> String {
    if !url {
        return s;
    }
    percent_encoding::utf8_percent_encode(&s, KEEP).to_string()
}

fn entries(page: &list::Page, url: bool) -> (Vec<Object>, Vec<CommonPrefix>) {
    let contents = page
        .objects
        .iter()
        .map(|(k, m)| Object {
            key: Some(enc(url, k.clone())),
            e_tag: Some(etag(m)),
            size: Some(m.size as i64),
            last_modified: Some(timestamp(m.created_ms)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            ..Default::default()
        })
        .collect();
    let prefixes = page
        .prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(enc(url, p.clone())),
        })
        .collect();
    (contents, prefixes)
}

/// Aborts the multipart uploads that began more than `max_age_ms` before
/// `now_ms` (clients that died mid-upload): their records and parts are
/// deleted. Returns how many went.
pub async fn sweep_uploads(node: &Arc<Node>, now_ms: u64, max_age_ms: u64) -> S3Result<usize> {
    let mut gone = 0;
    for e in keys_under(node, names::UPLOADS).await? {
        if e.meta.created_ms.saturating_add(max_age_ms) > now_ms {
            continue;
        }
        let Some(id) = e.key.rsplit('/').next() else {
            continue;
        };
        drop_upload(node, &e.key, id).await?;
        gone += 1;
    }
    Ok(gone)
}

/// Sweeps abandoned uploads ([`sweep_uploads`]) every quarter of
/// `max_age` (at least a second, at most ten minutes) until `stop`.
pub fn spawn_sweeper(
    node: Arc<Node>,
    max_age: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = (max_age / 4).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(600),
    );
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default();
            match sweep_uploads(&node, now, max_age.as_millis() as u64).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(uploads = n, "abandoned multipart uploads aborted"),
                Err(e) => tracing::warn!(error = ?e, "sweeping multipart uploads failed"),
            }
        }
    });
}

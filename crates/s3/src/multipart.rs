//! Multipart uploads: create, upload part (and part copy), complete (the
//! parts become the object's chunks), abort, list parts and uploads, and
//! the sweeper of uploads abandoned past their age.

use std::sync::Arc;

use index::{BlobMeta, Chunk};
use md5::{Digest, Md5};
use node::{Node, WriteSpec};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::body::{self, md5_etag, node_error};
use crate::names::{self, UploadRecord};
use crate::service::{copy_source, etag, keys_under, timestamp, upload_spec, Strata};

impl Strata {
    pub(crate) async fn upload(&self, bucket: &str, id: &str, key: &str) -> S3Result<UploadRecord> {
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

    /// Writes part `n` of upload `id`: its ETag is its MD5.
    pub(crate) async fn write_part(
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

    pub(crate) async fn create_multipart_upload(
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

    pub(crate) async fn upload_part(
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

    pub(crate) async fn upload_part_copy(
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

    pub(crate) async fn complete_multipart_upload(
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

    pub(crate) async fn abort_multipart_upload(
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

    pub(crate) async fn list_parts(
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

    pub(crate) async fn list_multipart_uploads(
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

/// Smallest part S3 accepts, except the last one.
const MIN_PART: u64 = 5 << 20;

fn check_part_number(n: i32) -> S3Result<()> {
    if (1..=10_000).contains(&n) {
        Ok(())
    } else {
        Err(s3_error!(InvalidArgument, "part numbers are 1 to 10000"))
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

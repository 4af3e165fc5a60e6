//! Object operations: put (in chunks past one), get and head (ranges,
//! conditionals), delete, batch delete, copy.

use node::WriteSpec;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::body::{self, md5_etag, node_error};
use crate::service::{
    copy_source, etag, header, preconditions, timestamp, upload_spec, user_metadata, Strata,
};

impl Strata {
    pub(crate) async fn put_object(
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

    pub(crate) async fn get_object(
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

    pub(crate) async fn head_object(
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

    pub(crate) async fn delete_object(
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

    pub(crate) async fn delete_objects(
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

    pub(crate) async fn copy_object(
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
}

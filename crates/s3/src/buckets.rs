//! Bucket operations: list, create, head, location, versioning (always
//! off), the canned ACLs `private` and `public-read`, delete (only empty).

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::body::node_error;
use crate::names::{self, BucketRecord};
use crate::service::{bucket_record, keys_under, timestamp, Strata};

impl Strata {
    pub(crate) async fn list_buckets(
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

    pub(crate) async fn create_bucket(
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

    pub(crate) async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.need_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    pub(crate) async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.need_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    pub(crate) async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.need_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    pub(crate) async fn put_bucket_acl(
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

    pub(crate) async fn delete_bucket(
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
}

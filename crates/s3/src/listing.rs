//! ListObjects v1 and v2 and ListObjectVersions over [`crate::list`]:
//! continuation tokens, `encoding-type=url`.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::body::node_error;
use crate::list;
use crate::service::{etag, timestamp, Strata};

impl Strata {
    /// One page of `bucket`'s listing for any of the ListObjects forms:
    /// the page, whether keys go out URL-encoded, the page size asked,
    /// and the prefix.
    pub(crate) async fn listing(
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

    pub(crate) async fn list_objects(
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

    pub(crate) async fn list_objects_v2(
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

    pub(crate) async fn list_object_versions(
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

//! `PUT` (and `POST`) of a blob: the upload's headers (tags, the book page
//! and its text) checked before the body is read, the body streamed to the
//! node (in chunks past one chunk), or queued whole for a worker with
//! `Prefer: respond-async`.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http_body_util::Limited;
use index::PageRef;

use super::{check_auth, tier_error};
use crate::keys::{percent_decode, validate_key};
use crate::metrics::inc;
use crate::reply::error;
use crate::search::{PageText, PageUpload};
use crate::{Error, Node};

/// Longest tag, in bytes.
const MAX_TAG_BYTES: usize = 128;
/// Most tags on one blob.
const MAX_TAGS: usize = 32;

/// Longest book name, bytes.
const MAX_BOOK_BYTES: usize = 256;
/// Longest text in `X-Strata-Text` once decoded, bytes. Longer text goes
/// in a sidecar: a header this long is already more than many proxies
/// pass (the gateway takes heads up to 64 KiB, encoding included).
pub const MAX_INLINE_TEXT_BYTES: usize = 32 << 10;

/// The book page an upload is: `X-Strata-Book` and `X-Strata-Page`, with
/// its text in `X-Strata-Text` (percent-encoded UTF-8) or in the JSON
/// sidecar named by `X-Strata-Text-Key`. `None` without `X-Strata-Book`.
fn parse_page(h: &HeaderMap) -> Result<Option<PageUpload>, Response> {
    let bad = |d: String| error(StatusCode::BAD_REQUEST, "bad_page", d);
    let text_of = |name: &str| -> Result<Option<String>, Response> {
        let Some(v) = h.get(name) else {
            return Ok(None);
        };
        let raw = v
            .to_str()
            .map_err(|_| bad(format!("{name} must be percent-encoded UTF-8")))?;
        let bytes = percent_decode(raw).map_err(|e| bad(format!("{name}: {e}")))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| bad(format!("{name} is not UTF-8 once decoded")))
    };
    let book = text_of("x-strata-book")?;
    let page = text_of("x-strata-page")?;
    let text = text_of("x-strata-text")?;
    let text_key = text_of("x-strata-text-key")?;
    let Some(book) = book else {
        if page.is_some() || text.is_some() || text_key.is_some() {
            return Err(bad(
                "X-Strata-Page and X-Strata-Text need X-Strata-Book".into()
            ));
        }
        return Ok(None);
    };
    if book.is_empty() || book.len() > MAX_BOOK_BYTES || book.chars().any(char::is_control) {
        return Err(bad(format!(
            "X-Strata-Book must be 1..={MAX_BOOK_BYTES} bytes without control characters"
        )));
    }
    let page = page
        .ok_or_else(|| bad("X-Strata-Book needs X-Strata-Page".into()))?
        .parse::<u64>()
        .map_err(|_| bad("X-Strata-Page must be a page number (0 or more)".into()))?;
    let text = match (text, text_key) {
        (Some(t), None) if t.len() <= MAX_INLINE_TEXT_BYTES => PageText::Inline(t),
        (Some(_), None) => {
            return Err(bad(format!(
                "X-Strata-Text is over {MAX_INLINE_TEXT_BYTES} bytes; use X-Strata-Text-Key"
            )));
        }
        (None, Some(k)) => {
            validate_key(&k).map_err(|e| bad(format!("X-Strata-Text-Key: {e}")))?;
            PageText::Sidecar(k)
        }
        (None, None) => return Err(bad("a page needs X-Strata-Text or X-Strata-Text-Key".into())),
        (Some(_), Some(_)) => {
            return Err(bad(
                "give X-Strata-Text or X-Strata-Text-Key, not both".into()
            ))
        }
    };
    Ok(Some(PageUpload {
        at: PageRef {
            book,
            page,
            text_key: None,
        },
        text,
    }))
}

fn parse_tags(headers: &HeaderMap) -> Result<Vec<String>, Response> {
    let Some(v) = headers.get("x-strata-tags") else {
        return Ok(Vec::new());
    };
    let bad = |d: String| error(StatusCode::BAD_REQUEST, "bad_tags", d);
    let s = v
        .to_str()
        .map_err(|_| bad("X-Strata-Tags is not visible ASCII".into()))?;
    let mut tags: Vec<String> = Vec::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if t.len() > MAX_TAG_BYTES || t.chars().any(|c| c.is_control()) {
            return Err(bad(format!(
                "tag {t:?} is longer than {MAX_TAG_BYTES} bytes or has control characters"
            )));
        }
        if !tags.iter().any(|x| x == t) {
            tags.push(t.to_owned());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(bad(format!("{} tags; at most {MAX_TAGS}", tags.len())));
    }
    Ok(tags)
}

pub(super) async fn put_blob(node: &Arc<Node>, key: String, req: Request) -> Response {
    inc(&node.metrics.puts);
    if let Some(r) = check_auth(node, req.headers()) {
        return r;
    }
    let limit = node.opts.max_body_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body is over the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let tags = match parse_tags(req.headers()) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let page = match parse_page(req.headers()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if page.is_some() && node.search().is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_page",
            "this cluster has no search members to index pages",
        );
    }
    // RFC 7240: honoured when a queue is connected, else the write is done
    // synchronously (a preference, not a demand).
    let async_requested = req
        .headers()
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"));
    let idempotency_key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 200 => Some(k.to_owned()),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_idempotency_key",
                "Idempotency-Key must be 1..=200 visible ASCII bytes",
            )
        }
    };
    let content_type = match req.headers().get(header::CONTENT_TYPE).map(|v| v.to_str()) {
        None => "application/octet-stream".to_owned(),
        Some(Ok(ct)) if !ct.is_empty() && ct.len() <= 256 => ct.to_owned(),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_content_type",
                "Content-Type must be 1..=256 visible ASCII bytes",
            )
        }
    };
    // The whole body is read before the key is written: a client that
    // disconnects mid-upload leaves nothing behind. A body longer than a
    // chunk is written as chunks while it arrives (an object in chunks).
    let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let frames = {
        let over = over.clone();
        http_body_util::BodyDataStream::new(Limited::new(req.into_body(), limit as usize)).map(
            move |r| {
                r.inspect_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        over.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            },
        )
    };
    let got = match node
        .receive(frames, node.opts.chunk_bytes, declared, false)
        .await
    {
        Ok(got) => got,
        Err(_) if over.load(std::sync::atomic::Ordering::Relaxed) => return too_large(),
        Err(e @ Error::Incomplete(_)) => {
            return error(StatusCode::BAD_REQUEST, "incomplete_body", e.to_string())
        }
        Err(e) => return tier_error(e),
    };
    node.metrics
        .bytes_in
        .fetch_add(got.size, std::sync::atomic::Ordering::Relaxed);
    let body = match got.whole {
        Some(ref b) => b.clone(),
        None if async_requested || page.is_some() => {
            got.discard(node);
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "asynchronous and page uploads are at most {} bytes (one chunk)",
                    node.opts.chunk_bytes
                ),
            );
        }
        None => {
            let spec = crate::WriteSpec {
                content_type,
                tags,
                ..crate::WriteSpec::default()
            };
            return match node.commit_object(&key, got, spec).await {
                Ok(meta) => created(&key, &meta, None),
                Err(e) => tier_error(e),
            };
        }
    };

    if let (true, Some(q)) = (async_requested, node.queue()) {
        // Durable in the queue first; a worker writes the blob.
        return match q
            .put_upload(
                &crate::jobs::UploadHead {
                    key: key.clone(),
                    content_type,
                    tags,
                    page,
                },
                &body,
                idempotency_key,
                node.opts.upload_attempts,
            )
            .await
        {
            Ok(id) => {
                let loc = format!("/v1/jobs/{id}");
                let body = serde_json::json!({"job": id, "state": "ready", "location": loc});
                let mut r = (
                    StatusCode::ACCEPTED,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response();
                if let Ok(v) = HeaderValue::from_str(&loc) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
            Err(e) => tier_error(e),
        };
    }
    match node.write_page(&key, body, content_type, tags, page).await {
        Ok((meta, index_job)) => created(&key, &meta, index_job),
        Err(e) => tier_error(e),
    }
}

/// 201 for a written blob: its record, and the page's indexing job.
fn created(key: &str, meta: &index::BlobMeta, index_job: Option<u64>) -> Response {
    let mut body =
        serde_json::json!({ "key": key, "id": meta.id, "size": meta.size, "etag": meta.etag });
    if let Some(j) = index_job {
        // Poll it to know when the page is searchable.
        body["index_job"] = format!("/v1/jobs/{j}").into();
    }
    let mut r = (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        header::ETAG,
        HeaderValue::from_str(&meta.etag).unwrap_or(HeaderValue::from_static("\"\"")),
    );
    r
}

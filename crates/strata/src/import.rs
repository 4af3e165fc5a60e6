//! `strata import DIR`: bulk-loads a directory of books through the public
//! API, as any client would.
//!
//! Layout: `DIR/<book>/<page>.<png|jpg|jpeg|gif|webp|tif|tiff>` with the
//! page's text in `DIR/<book>/<page>.txt` beside it; the page number is
//! the leading digits of the file name (`0012.png` is page 12). Each image
//! is stored as `books/<book>/<file>` with `X-Strata-Book`, `X-Strata-Page`
//! and its text — inline (percent-encoded) when short, otherwise first
//! stored as a JSON sidecar `books/<book>/<page>.txt.json` and named by
//! `X-Strata-Text-Key`. Uploads run `concurrency` at a time with a progress
//! bar; then the indexing jobs are awaited, so when the command returns
//! every page is searchable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE};
use hyper::Method;
use indicatif::{ProgressBar, ProgressStyle};
use rpc::{Reply, Rpc};

/// Text longer than this goes in a sidecar blob, not a header.
const INLINE_TEXT_BYTES: usize = 8 << 10;

const IMAGE_EXTS: [&str; 7] = ["png", "jpg", "jpeg", "gif", "webp", "tif", "tiff"];

/// One page found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageFile {
    /// Book (the directory name).
    pub book: String,
    /// Page number.
    pub page: u64,
    /// The image.
    pub image: PathBuf,
    /// Its text file.
    pub text: PathBuf,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Pages uploaded.
    pub pages: u64,
    /// Image bytes uploaded.
    pub bytes: u64,
    /// Indexing jobs that ended dead (their pages are not searchable).
    pub failed_jobs: u64,
}

/// Lists the pages under `dir`, books and pages in order. An image
/// without a `.txt`, or whose name has no page number, is an error naming
/// the file: a bulk load should not silently skip pages.
pub fn scan(dir: &Path) -> anyhow::Result<Vec<PageFile>> {
    let mut books: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    books.sort();
    let mut out = Vec::new();
    for b in books {
        let book = b
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{}: book directory names must be UTF-8", b.display()))?
            .to_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&b)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        for image in files {
            let stem = image
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let digits: String = stem.chars().take_while(|c| c.is_ascii_digit()).collect();
            let page = digits.parse::<u64>().with_context(|| {
                format!(
                    "{}: the file name must start with the page number",
                    image.display()
                )
            })?;
            let text = image.with_extension("txt");
            if !text.is_file() {
                bail!("{}: no text file {}", image.display(), text.display());
            }
            out.push(PageFile {
                book: book.clone(),
                page,
                image,
                text,
            });
        }
    }
    out.sort_by(|a, b| (&a.book, a.page).cmp(&(&b.book, b.page)));
    Ok(out)
}

fn content_type(p: &Path) -> &'static str {
    match p
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        _ => "image/tiff",
    }
}

/// Bytes a query-string or header value keeps as they are: RFC 3986's
/// unreserved.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a value (everything but unreserved bytes).
fn encode_query(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Percent-encodes a path segment list, keeping `/`.
fn encode_path(key: &str) -> String {
    key.split('/')
        .map(encode_query)
        .collect::<Vec<_>>()
        .join("/")
}

/// `PUT /v1/blobs/{key}` with `headers` (and the token); an error unless
/// the answer is a success.
async fn put(
    http: &Rpc,
    token: Option<&str>,
    key: &str,
    mut headers: Vec<(HeaderName, String)>,
    body: Vec<u8>,
) -> anyhow::Result<Reply> {
    if let Some(t) = token {
        headers.push((AUTHORIZATION, format!("Bearer {t}")));
    }
    let path = format!("/v1/blobs/{}", encode_path(key));
    let r = http
        .call(
            Method::PUT,
            &path,
            &headers,
            Bytes::from(body),
            Duration::ZERO,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    if !r.status.is_success() {
        bail!("{key}: {} {}", r.status, String::from_utf8_lossy(&r.body));
    }
    Ok(r)
}

/// Uploads one page; returns its size and its indexing job's path, if any.
async fn upload(
    http: &Rpc,
    token: Option<&str>,
    p: &PageFile,
) -> anyhow::Result<(u64, Option<String>)> {
    let image = tokio::fs::read(&p.image)
        .await
        .with_context(|| format!("reading {}", p.image.display()))?;
    let text = tokio::fs::read_to_string(&p.text)
        .await
        .with_context(|| format!("reading {} (UTF-8 text expected)", p.text.display()))?;
    let file = p
        .image
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("page");
    let key = format!("books/{}/{file}", p.book);
    let mut headers: Vec<(HeaderName, String)> = vec![
        (
            HeaderName::from_static("x-strata-book"),
            encode_query(&p.book),
        ),
        (HeaderName::from_static("x-strata-page"), p.page.to_string()),
        (CONTENT_TYPE, content_type(&p.image).into()),
    ];
    if text.len() <= INLINE_TEXT_BYTES {
        headers.push((
            HeaderName::from_static("x-strata-text"),
            encode_query(&text),
        ));
    } else {
        let side = format!("books/{}/{}.txt.json", p.book, p.page);
        let body = serde_json::json!({ "text": text }).to_string();
        let json = vec![(CONTENT_TYPE, "application/json".to_owned())];
        put(http, token, &side, json, body.into_bytes()).await?;
        headers.push((
            HeaderName::from_static("x-strata-text-key"),
            encode_query(&side),
        ));
    }
    let n = image.len() as u64;
    let r = put(http, token, &key, headers, image).await?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    Ok((n, v["index_job"].as_str().map(str::to_owned)))
}

/// Waits for an indexing job to end; true when it succeeded.
async fn wait_job(http: &Rpc, path: &str) -> anyhow::Result<bool> {
    let mut pause = Duration::from_millis(5);
    loop {
        let r = http
            .call(Method::GET, path, &[], Bytes::new(), Duration::ZERO)
            .await
            .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        match v["state"].as_str() {
            Some("succeeded") => return Ok(true),
            Some("dead") => return Ok(false),
            None if !r.status.is_success() => {
                bail!("{path}: {} {}", r.status, String::from_utf8_lossy(&r.body))
            }
            _ => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn bar(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} pages  {{per_sec}}  eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// Imports every page under `dir` through the node or gateway at `base`
/// (`http://host:port`).
pub async fn run(
    dir: &Path,
    base: &str,
    token: Option<&str>,
    concurrency: usize,
    quiet: bool,
) -> anyhow::Result<ImportReport> {
    let pages = scan(dir)?;
    if pages.is_empty() {
        bail!(
            "no pages under {} (expected <book>/<page>.png with <page>.txt)",
            dir.display()
        );
    }
    let http = Rpc::new(base.trim_end_matches('/'), Duration::from_secs(60));
    let token: Option<Arc<str>> = token.map(Into::into);
    let progress = bar(pages.len() as u64, "upload", quiet);
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for p in pages {
        let permit = sem.clone().acquire_owned().await?;
        let (http, token, progress) = (http.clone(), token.clone(), progress.clone());
        tasks.spawn(async move {
            let r = upload(&http, token.as_deref(), &p).await;
            drop(permit);
            progress.inc(1);
            r
        });
    }
    let mut report = ImportReport::default();
    let mut jobs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (n, job) = r??;
        report.pages += 1;
        report.bytes += n;
        jobs.extend(job);
    }
    progress.finish();
    let progress = bar(jobs.len() as u64, "index ", quiet);
    for j in jobs {
        if !wait_job(&http, &j).await? {
            report.failed_jobs += 1;
        }
        progress.inc(1);
    }
    progress.finish();
    Ok(report)
}

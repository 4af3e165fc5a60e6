//! ListObjects over the name index's ordered listing, on every backend:
//! keys are read in order a page at a time, and a delimiter folds each run
//! of keys that share a common prefix into one entry, then skips past the
//! run instead of reading it.

use index::BlobMeta;
use node::Node;

/// Sorts after every key that starts with a given prefix (keys compare as
/// UTF-8 bytes, and U+10FFFF is the largest scalar value).
const PAST: char = '\u{10FFFF}';

/// One page of a listing; keys and prefixes are relative to the bucket.
#[derive(Debug, Default)]
pub struct Page {
    /// Objects, in key order.
    pub objects: Vec<(String, BlobMeta)>,
    /// Common prefixes, in order, each once.
    pub prefixes: Vec<String>,
    /// More follow; resume after [`Page::last`].
    pub truncated: bool,
    /// The last key or common prefix returned.
    pub last: Option<String>,
}

/// Lists `bucket`'s keys under `prefix` after `after` (a key or a common
/// prefix returned before), at most `max` entries (objects and prefixes).
pub async fn list(
    node: &Node,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> Result<Page, node::Error> {
    let base = format!("{bucket}/");
    let full = format!("{base}{prefix}");
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut from: Option<String> = after.map(|a| {
        // Resuming after a common prefix skips the keys under it.
        match delimiter {
            Some(d) if a.ends_with(d) && a.starts_with(prefix) => format!("{base}{a}{PAST}"),
            _ => format!("{base}{a}"),
        }
    });
    let mut page = Page::default();
    if max == 0 {
        return Ok(page);
    }
    loop {
        let want = (max - count(&page) + 1).min(index::MAX_LIST_LIMIT);
        let got = node.index.list(&full, None, from.as_deref(), want).await?;
        let mut skip: Option<String> = None;
        for e in got.items {
            if skip.as_deref().is_some_and(|s| e.key.starts_with(s)) {
                continue;
            }
            let rel = &e.key[base.len()..];
            let folded = delimiter.and_then(|d| {
                rel[prefix.len()..]
                    .find(d)
                    .map(|i| rel[..prefix.len() + i + d.len()].to_owned())
            });
            if count(&page) == max {
                page.truncated = true;
                return Ok(page);
            }
            match folded {
                Some(cp) => {
                    skip = Some(format!("{base}{cp}"));
                    from = Some(format!("{base}{cp}{PAST}"));
                    page.last = Some(cp.clone());
                    page.prefixes.push(cp);
                }
                None => {
                    from = Some(e.key.clone());
                    page.last = Some(rel.to_owned());
                    page.objects.push((rel.to_owned(), e.meta));
                }
            }
        }
        if got.next.is_none() {
            return Ok(page);
        }
    }
}

fn count(p: &Page) -> usize {
    p.objects.len() + p.prefixes.len()
}

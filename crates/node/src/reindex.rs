//! Rebuilding search shards from the name index and the stored page
//! texts (`strata reindex`), while the members serve.
//!
//! Every page's words are kept in a blob (`PageRef::text_key`), so a shard
//! is derived data: the index is listed in key order, the pages whose book
//! the chosen member holds (the ring, with replicas) have their text read
//! from the stores, and the pages are sent to the member in batches with
//! their commit numbers. A member that already holds a page at that number
//! drops the change as stale, so a rebuild of a whole member (its data
//! directory lost) and a refresh of a healthy one are the same run, and a
//! run cut short is finished by running it again. Pages the index no
//! longer names are not removed (an emptied member holds none).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use index::MAX_LIST_LIMIT;
use search::{Applied, PageOp};

use crate::indexing::read_sidecar;
use crate::search::SearchTier;
use crate::{Error, Node, Result};

/// Pages sent to a member in one call.
const BATCH: usize = 256;
/// Page texts read at once.
const READS: usize = 32;

/// How far a run has come, for a progress bar.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Keys of the index read so far.
    pub listed: u64,
    /// Pages to index (known once the listing is done).
    pub total: u64,
    /// Pages sent.
    pub done: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Keys of the index read.
    pub keys: u64,
    /// Pages found for the chosen members.
    pub pages: u64,
    /// Page copies a member took (one page on two members counts twice).
    pub applied: u64,
    /// Page copies a member already held at that commit number or newer.
    pub stale: u64,
    /// Pages uploaded before page text was stored: nothing to rebuild
    /// them from; they come back when uploaded again.
    pub without_text: u64,
    /// Pages whose text blob could not be read (deleted, or no replica
    /// answered); a second run retries them.
    pub unreadable: u64,
    /// Seconds taken.
    pub secs: f64,
}

/// One page to send.
struct Planned {
    key: String,
    book: String,
    page: u64,
    text_key: String,
    version: u64,
    /// The chosen members holding its book.
    members: Vec<String>,
}

/// Rebuilds member `only` (or every member) from the index and the
/// stored texts; `progress` is told after every listing page and batch.
pub async fn run(
    node: &Arc<Node>,
    only: Option<&str>,
    mut progress: impl FnMut(Progress),
) -> Result<Report> {
    let t0 = Instant::now();
    let tier = node.search().ok_or_else(|| Error::Rejected {
        tier: "search".into(),
        detail: "this cluster has no search members".into(),
    })?;
    let names = tier.names();
    let chosen: Vec<String> = match only {
        Some(m) if names.iter().any(|n| n == m) => vec![m.to_owned()],
        Some(m) => {
            return Err(Error::Rejected {
                tier: "search".into(),
                detail: format!("no search member {m:?} (members: {})", names.join(", ")),
            })
        }
        None => names,
    };
    let mut report = Report::default();
    let mut at = Progress::default();
    let plan = list_pages(node, tier, &chosen, &mut report, &mut at, &mut progress).await?;
    at.total = plan.len() as u64;
    report.pages = at.total;
    progress(at);

    let mut batches: BTreeMap<String, Vec<PageOp>> = BTreeMap::new();
    for chunk in plan.chunks(READS) {
        // The texts of a chunk are read side by side; order is kept.
        let mut reads = tokio::task::JoinSet::new();
        for (i, p) in chunk.iter().enumerate() {
            let (node, tk) = (node.clone(), p.text_key.clone());
            reads.spawn(async move { (i, read_sidecar(&node, &tk).await) });
        }
        let mut texts: Vec<Option<String>> = vec![None; chunk.len()];
        while let Some(j) = reads.join_next().await {
            let (i, r) = j.map_err(|e| Error::Unavailable {
                tier: "search".into(),
                detail: e.to_string(),
            })?;
            match r {
                Ok(t) => texts[i] = Some(t),
                Err(e) => {
                    tracing::warn!(key = %chunk[i].key, text = %chunk[i].text_key, error = %e, "page text unreadable; page skipped");
                    report.unreadable += 1;
                }
            }
        }
        for (p, text) in chunk.iter().zip(texts) {
            let Some(text) = text else { continue };
            for m in &p.members {
                let batch = batches.entry(m.clone()).or_default();
                batch.push(PageOp::Upsert {
                    key: p.key.clone(),
                    book: p.book.clone(),
                    page: p.page,
                    text: text.clone(),
                    version: p.version,
                });
                if batch.len() >= BATCH {
                    let ops = std::mem::take(batch);
                    send(tier, m, ops, &mut report).await?;
                }
            }
        }
        at.done += chunk.len() as u64;
        progress(at);
    }
    for (m, ops) in batches {
        if !ops.is_empty() {
            send(tier, &m, ops, &mut report).await?;
        }
    }
    report.secs = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// The index in key order: every page whose book a chosen member holds.
async fn list_pages(
    node: &Arc<Node>,
    tier: &SearchTier,
    chosen: &[String],
    report: &mut Report,
    at: &mut Progress,
    progress: &mut impl FnMut(Progress),
) -> Result<Vec<Planned>> {
    let mut plan = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let l = node
            .index
            .list("", None, after.as_deref(), MAX_LIST_LIMIT)
            .await?;
        for e in l.items {
            report.keys += 1;
            let Some(p) = e.meta.page else { continue };
            let members: Vec<String> = chosen
                .iter()
                .filter(|m| tier.holds(m, &p.book))
                .cloned()
                .collect();
            if members.is_empty() {
                continue;
            }
            let Some(text_key) = p.text_key else {
                report.without_text += 1;
                continue;
            };
            plan.push(Planned {
                key: e.key,
                book: p.book,
                page: p.page,
                text_key,
                version: e.meta.version,
                members,
            });
        }
        at.listed = report.keys;
        progress(*at);
        match l.next {
            Some(n) => after = Some(n),
            None => return Ok(plan),
        }
    }
}

async fn send(
    tier: &SearchTier,
    member: &str,
    ops: Vec<PageOp>,
    report: &mut Report,
) -> Result<()> {
    for a in tier.apply_on(member, ops).await? {
        match a {
            Applied::Applied => report.applied += 1,
            Applied::Stale => report.stale += 1,
        }
    }
    Ok(())
}

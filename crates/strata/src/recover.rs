//! `strata recover-index`: rebuilds the name index from the stores.
//!
//! Reads every volume's needle heads from every store while they serve
//! (pages of `GET /heads`, or the store itself for `--data`), merges them
//! ([`index::recover::Recovery`]: per key the live copy with the highest
//! commit number, replicas merged, later deletes honoured), then writes the
//! entries into the configured backend with their commit numbers, and
//! moves the id allocator past every id seen. An index that already holds
//! keys is refused unless `--replace`; with it, keys the stores do not
//! name are removed. A run cut short (a crash) is finished by running it
//! again with `--replace`; tests make one crash with the environment
//! variable `STRATA_CRASH_AFTER_KEYS=N` (the process aborts once N entries
//! are written).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use index::recover::Recovery;
use index::Index;
use indicatif::{ProgressBar, ProgressStyle};
use node::StoreMember;

/// What a recovery did.
#[derive(Debug)]
pub struct Summary {
    /// Keys written.
    pub keys: u64,
    /// Replica copies they name.
    pub replicas: u64,
    /// Keys that had more than one live blob.
    pub conflicts: u64,
    /// Keys a delete's tombstone removed.
    pub deleted: u64,
    /// Keys removed from the index because no store names them
    /// (`--replace`).
    pub removed: u64,
    /// Needles read.
    pub needles: u64,
    /// Needles with no key (volume format 1).
    pub unnamed: u64,
    /// Seconds taken.
    pub secs: f64,
}

/// Runs a recovery from `stores` into `index`.
pub async fn run(
    stores: &[StoreMember],
    index: Arc<dyn Index>,
    replace: bool,
    quiet: bool,
) -> anyhow::Result<Summary> {
    let t0 = Instant::now();
    let existing = index.list("", None, 1).await.context("reading the index")?;
    if let (Some(e), false) = (existing.items.first(), replace) {
        bail!(
            "the index already holds keys (e.g. {:?}); pass --replace to write the recovered entries over it",
            e.key
        );
    }
    let mut plan = Vec::new();
    for m in stores {
        let vols = m
            .handle
            .volumes(&m.name)
            .await
            .with_context(|| format!("listing the volumes of store {}", m.name))?;
        plan.extend(vols.into_iter().map(|(v, _)| (m, v)));
    }
    let bar = progress(plan.len() as u64, quiet);
    let mut rec = Recovery::default();
    for (m, v) in plan {
        bar.set_message(format!("{} volume {v}", m.name));
        read_volume(m, v, &mut rec, &bar).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (needles, unnamed, max_id) = (rec.needles, rec.unnamed, rec.max_id);
    let order: Vec<String> = stores.iter().map(|s| s.name.clone()).collect();
    let mut out = rec.finish(&order);
    // Objects in chunks: their chunk lists are in their manifests' data.
    for &i in &out.manifests {
        let e = &mut out.entries[i];
        let mut data = None;
        for name in &e.meta.replicas {
            let Some(m) = stores.iter().find(|s| &s.name == name) else {
                continue;
            };
            match m.handle.get(&m.name, e.meta.id, None).await {
                Ok(d) => {
                    data = Some(d);
                    break;
                }
                Err(err) => {
                    tracing::warn!(key = %e.key, store = %name, error = %err, "manifest unreadable here")
                }
            }
        }
        let data =
            data.with_context(|| format!("no store could read the manifest of {:?}", e.key))?;
        index::recover::fill_manifest(&mut e.meta, &data)
            .map_err(|why| anyhow::anyhow!("{:?}: {why}", e.key))?;
    }

    // Ids first: a node writing meanwhile must not be handed an id a
    // store already holds.
    let mut next = index
        .alloc_ids(1)
        .await
        .context("moving the id allocator")?;
    while next <= max_id {
        let count = (max_id + 1 - next).min(1 << 20);
        next = index.alloc_ids(count).await? + count;
    }
    let bar = progress(out.entries.len() as u64, quiet);
    bar.set_message("writing entries");
    let crash_after = std::env::var("STRATA_CRASH_AFTER_KEYS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let mut written = tokio::task::JoinSet::new();
    for e in &out.entries {
        if written.len() >= 32 {
            if let Some(r) = written.join_next().await {
                r??;
                bar.inc(1);
                if crash_after.is_some_and(|n| bar.position() >= n) {
                    std::process::abort();
                }
            }
        }
        let (index, key, meta) = (index.clone(), e.key.clone(), e.meta.clone());
        written.spawn(async move {
            index
                .put(&key, &meta)
                .await
                .with_context(|| format!("writing {key:?}"))
                .map(|_| ())
        });
    }
    while let Some(r) = written.join_next().await {
        r??;
        bar.inc(1);
    }
    bar.finish_and_clear();

    let mut removed = 0;
    if replace {
        let keep: std::collections::HashSet<&str> =
            out.entries.iter().map(|e| e.key.as_str()).collect();
        let mut after: Option<String> = None;
        loop {
            let page = index.list("", after.as_deref(), 1000).await?;
            for e in &page.items {
                if !keep.contains(e.key.as_str()) {
                    index.delete(&e.key).await?;
                    removed += 1;
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    Ok(Summary {
        keys: out.entries.len() as u64,
        replicas: out.replicas,
        conflicts: out.conflicts,
        deleted: out.deleted,
        removed,
        needles,
        unnamed,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// Adds every head of volume `v` of store `m`, starting over when a
/// compaction moves its needles meanwhile (a head seen twice changes
/// nothing).
async fn read_volume(
    m: &StoreMember,
    v: u16,
    rec: &mut Recovery,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut from = 0;
    let mut generation = None;
    loop {
        let page = m
            .handle
            .heads(&m.name, v, from, generation)
            .await
            .with_context(|| format!("reading the heads of store {} volume {v}", m.name))?;
        let Some(page) = page else {
            (from, generation) = (0, None);
            continue;
        };
        generation = Some(page.generation);
        for h in &page.heads {
            rec.add(
                &m.name,
                h.id,
                u64::from(h.size),
                h.live,
                h.tombstone,
                &h.meta,
            );
        }
        bar.set_message(format!(
            "{} volume {v}: {} needles read",
            m.name, rec.needles
        ));
        match page.next {
            Some(n) => from = n,
            None => return Ok(()),
        }
    }
}

fn progress(len: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

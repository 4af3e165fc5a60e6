//! Re-replication and repair, all through jobs on the `repairs` queue so
//! that they survive restarts and are retried:
//!
//! - **lost**: a read found a replica without its copy; copy it back from
//!   a replica that has it.
//! - **dead**: a store has been unreachable longer than `dead_after`;
//!   each blob it held gets a new copy on another store and the index's
//!   replica list swaps the dead store for the new one (a compare-and-set
//!   on the blob id, so a concurrent overwrite of the key wins).
//! - **corrupt**: a scrub found a needle failing its CRC; a good copy is
//!   read from another store and written over it.

use std::sync::Arc;

use bytes::Bytes;

use crate::tiers::StoreMember;
use crate::{Error, Node};

use crate::jobs::RepairJob;
pub use crate::jobs::{corrupt_job, REPAIRS};

fn store_named<'a>(node: &'a Node, name: &str) -> Option<&'a StoreMember> {
    node.stores.iter().find(|s| s.name == name)
}

/// The needle metadata and whole blob from the first of `names` that
/// serves it (reads are CRC-checked by the store), so that a new copy
/// names its key as the old one did.
async fn read_any<'a>(
    node: &Node,
    id: u64,
    names: impl Iterator<Item = &'a String>,
) -> Option<(Bytes, Bytes)> {
    for name in names {
        let Some(m) = store_named(node, name) else {
            continue;
        };
        let both = tokio::try_join!(m.handle.meta(&m.name, id), m.handle.get(&m.name, id, None));
        if let Ok(found) = both {
            return Some(found);
        }
    }
    None
}

/// Runs one repair job; its result names what changed.
pub(crate) async fn run_repair(node: &Arc<Node>, payload: &Bytes) -> Result<Bytes, String> {
    let job: RepairJob =
        serde_json::from_slice(payload).map_err(|e| format!("bad repair job: {e}"))?;
    let result = match job {
        RepairJob::Lost { id, size, replicas } => repair_lost(node, id, size, &replicas).await?,
        RepairJob::Dead {
            key,
            id,
            size,
            replicas,
            dead,
        } => rereplicate(node, &key, id, size, &replicas, &dead).await?,
        RepairJob::Corrupt { id, store } => repair_corrupt(node, id, &store).await?,
    };
    Ok(Bytes::from(result.to_string()))
}

async fn repair_lost(
    node: &Arc<Node>,
    id: u64,
    size: u64,
    replicas: &[String],
) -> Result<serde_json::Value, String> {
    let mut missing = Vec::new();
    let mut source = None;
    for name in replicas {
        let Some(m) = store_named(node, name) else {
            continue;
        };
        // A one-byte range is enough to know whether the copy is there.
        let probe = (size > 0).then_some((0, 1));
        match m.handle.get(&m.name, id, probe).await {
            Ok(_) => source = source.or(Some(m)),
            Err(Error::NotFound) => missing.push(m),
            // Unreachable now: fail, and the queue retries later.
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    if missing.is_empty() {
        return Ok(serde_json::json!({"repaired": []}));
    }
    let src = source.ok_or("no replica has the blob any more")?;
    let (head, body) = tokio::try_join!(
        src.handle.meta(&src.name, id),
        src.handle.get(&src.name, id, None)
    )
    .map_err(|e| format!("{}: {e}", src.name))?;
    let mut repaired = Vec::new();
    for m in missing {
        m.handle
            .put(&m.name, id, head.clone(), body.clone())
            .await
            .map_err(|e| format!("{}: {e}", m.name))?;
        repaired.push(m.name.clone());
    }
    tracing::info!(blob = id, ?repaired, "replicas restored");
    Ok(serde_json::json!({ "repaired": repaired }))
}

async fn rereplicate(
    node: &Arc<Node>,
    key: &str,
    id: u64,
    size: u64,
    replicas: &[String],
    dead: &str,
) -> Result<serde_json::Value, String> {
    // Back after all (the job waited in the queue): nothing to move.
    if let Some(m) = store_named(node, dead) {
        let probe = (size > 0).then_some((0, 1));
        if m.handle.get(&m.name, id, probe).await.is_ok() {
            return Ok(serde_json::json!({"skipped": "the store is back"}));
        }
    }
    let live: Vec<String> = replicas.iter().filter(|r| *r != dead).cloned().collect();
    let (head, body) = read_any(node, id, live.iter())
        .await
        .ok_or("no live replica serves the blob")?;
    // The new home: the blob's rendezvous order over stores that hold no
    // copy, healthy ones first; a full or failing one is skipped.
    let names: Vec<&str> = node.stores.iter().map(|s| s.name.as_str()).collect();
    let mut ranked: Vec<&StoreMember> = cluster::rendezvous(&names, id)
        .into_iter()
        .filter(|n| !replicas.iter().any(|r| r == n))
        .filter_map(|n| store_named(node, n))
        .collect();
    ranked.sort_by_key(|m| {
        let i = node
            .stores
            .iter()
            .position(|s| s.name == m.name)
            .unwrap_or(0);
        !node.health.is_up(i)
    });
    let mut placed = None;
    for m in ranked {
        if m.handle
            .put(&m.name, id, head.clone(), body.clone())
            .await
            .is_ok()
        {
            placed = Some(m);
            break;
        }
    }
    let Some(new) = placed else {
        return Err("no store took the new copy".into());
    };
    let mut list = live;
    list.push(new.name.clone());
    match node.index.set_replicas(key, id, &list).await {
        Ok(true) => {
            tracing::info!(blob = id, key, dead, to = %new.name, "re-replicated");
            Ok(serde_json::json!({ "moved_to": new.name, "replicas": list }))
        }
        Ok(false) => {
            // The key names another blob now: this copy belongs to nobody.
            let _ = new.handle.delete(&new.name, id, dropped(&head)).await;
            Ok(serde_json::json!({"skipped": "the key changed"}))
        }
        Err(e) => {
            let _ = new.handle.delete(&new.name, id, dropped(&head)).await;
            Err(format!("index: {e}"))
        }
    }
}

async fn repair_corrupt(
    node: &Arc<Node>,
    id: u64,
    store: &str,
) -> Result<serde_json::Value, String> {
    let bad = store_named(node, store).ok_or_else(|| format!("no store {store}"))?;
    let others: Vec<String> = node
        .stores
        .iter()
        .filter(|s| s.name != store)
        .map(|s| s.name.clone())
        .collect();
    let (head, body) = read_any(node, id, others.iter())
        .await
        .ok_or("no other store has a good copy")?;
    bad.handle
        .put(&bad.name, id, head, body)
        .await
        .map_err(|e| format!("{store}: {e}"))?;
    tracing::info!(
        blob = id,
        store,
        "corrupt needle rewritten from a good copy"
    );
    Ok(serde_json::json!({ "rewritten": store }))
}

/// The tombstone of a copy made by a repair that was not needed after all:
/// the copy's own metadata, as dropped.
fn dropped(head: &Bytes) -> Bytes {
    match index::NeedleMeta::decode(head, 0, 0) {
        Some(m) => index::NeedleMeta {
            kind: index::needle_meta::Kind::Dropped,
            ..m
        }
        .encode(),
        None => Bytes::new(),
    }
}

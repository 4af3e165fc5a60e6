//! Rebuilding the name index from the stores' needle heads
//! (`strata recover-index`).
//!
//! Every needle names its key and the commit number of the change that
//! wrote it ([`NeedleMeta`]). For each key the live copy with the highest
//! (commit number, blob id) wins, its replicas are every store holding
//! that blob live, and a delete's tombstone with a higher number than
//! every live copy removes the key. Copies dropped on purpose (replaced by
//! a newer put, strays) say so and are not candidates.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::meta::{BlobMeta, Entry};
use crate::needle_meta::{Kind, NeedleMeta};

/// What the heads of every store add up to.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Per key: the best live candidate so far and its replica stores.
    best: BTreeMap<String, (BlobMeta, Vec<String>)>,
    /// Per key: ids of every live blob seen (a key with more than one had
    /// a conflict to resolve).
    seen: HashMap<String, Vec<u64>>,
    /// Per key: the highest commit number of a delete.
    deleted: HashMap<String, u64>,
    /// Blob ids whose data is a chunked object's manifest.
    manifests: std::collections::HashSet<u64>,
    /// Highest blob id and commit number seen (the allocators restart
    /// above them).
    pub max_id: u64,
    /// See `max_id`.
    pub max_version: u64,
    /// Needles whose metadata could not be read (volume format 1, or
    /// foreign bytes).
    pub unnamed: u64,
    /// Needles read.
    pub needles: u64,
}

/// The outcome, ready to write.
#[derive(Debug)]
pub struct Recovered {
    /// Every key with its record, in key order.
    pub entries: Vec<Entry>,
    /// Keys that had more than one live blob.
    pub conflicts: u64,
    /// Keys removed by a delete's tombstone.
    pub deleted: u64,
    /// Replica copies named by the entries.
    pub replicas: u64,
    /// Indexes in `entries` of objects in chunks: their blob's data is the
    /// manifest, which the caller reads to fill in `chunks` and `size`
    /// ([`fill_manifest`]).
    pub manifests: Vec<usize>,
}

/// Fills in the chunk list and size of an object in chunks from its
/// manifest blob's data (JSON `[{"key", "size"}]`).
pub fn fill_manifest(meta: &mut BlobMeta, data: &[u8]) -> Result<(), String> {
    let chunks: Vec<crate::Chunk> =
        serde_json::from_slice(data).map_err(|e| format!("unreadable manifest: {e}"))?;
    meta.size = chunks.iter().map(|c| c.size).sum();
    meta.chunks = chunks;
    Ok(())
}

impl Recovery {
    /// Adds one needle head of store `store`.
    pub fn add(
        &mut self,
        store: &str,
        id: u64,
        size: u64,
        live: bool,
        tombstone: bool,
        meta: &Bytes,
    ) {
        self.needles += 1;
        self.max_id = self.max_id.max(id);
        let Some(m) = NeedleMeta::decode(meta, id, size) else {
            if !tombstone {
                self.unnamed += 1;
            }
            return;
        };
        self.max_version = self.max_version.max(m.version);
        match m.kind {
            Kind::Blob(b, manifest) if live && !tombstone => {
                if manifest {
                    self.manifests.insert(id);
                }
                self.seen.entry(m.key.clone()).or_default().push(id);
                match self.best.get_mut(&m.key) {
                    Some((cur, stores)) if (cur.version, cur.id) == (b.version, b.id) => {
                        if !stores.iter().any(|s| s == store) {
                            stores.push(store.to_owned());
                        }
                    }
                    Some((cur, _)) if (cur.version, cur.id) > (b.version, b.id) => {}
                    _ => {
                        self.best.insert(m.key, (*b, vec![store.to_owned()]));
                    }
                }
            }
            Kind::Deleted if tombstone => {
                let d = self.deleted.entry(m.key).or_default();
                *d = (*d).max(m.version);
            }
            _ => {}
        }
    }

    /// The entries to write. `order` ranks store names (the cluster file's
    /// order) so replica lists come out the same whatever order the stores
    /// were read in.
    pub fn finish(self, order: &[String]) -> Recovered {
        let mut out = Recovered {
            entries: Vec::with_capacity(self.best.len()),
            conflicts: 0,
            deleted: 0,
            replicas: 0,
            manifests: Vec::new(),
        };
        for (key, (mut meta, mut stores)) in self.best {
            let mut ids = self.seen.get(&key).cloned().unwrap_or_default();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() > 1 {
                out.conflicts += 1;
            }
            if self.deleted.get(&key).is_some_and(|d| *d > meta.version) {
                out.deleted += 1;
                continue;
            }
            stores.sort_by_key(|s| order.iter().position(|o| o == s).unwrap_or(usize::MAX));
            out.replicas += stores.len() as u64;
            meta.replicas = stores;
            if self.manifests.contains(&meta.id) {
                out.manifests.push(out.entries.len());
            }
            out.entries.push(Entry { key, meta });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(key: &str, id: u64, version: u64) -> Bytes {
        let m = BlobMeta {
            id,
            size: 3,
            etag: "\"e\"".into(),
            content_type: "image/png".into(),
            created_ms: 1,
            replicas: Vec::new(),
            tags: vec!["t".into()],
            version,
            page: None,
            ..Default::default()
        };
        NeedleMeta::blob(key, &m).encode()
    }

    fn tomb(key: &str, version: u64, kind: Kind) -> Bytes {
        NeedleMeta {
            key: key.into(),
            version,
            created_ms: 2,
            kind,
        }
        .encode()
    }

    #[test]
    fn the_highest_commit_wins_and_a_later_delete_removes_the_key() {
        let mut r = Recovery::default();
        // "a": overwritten (v1 id 1, v5 id 2); store s2 still has the old
        // copy live (its delete never arrived).
        r.add("s1", 2, 3, true, false, &blob("a", 2, 5));
        r.add("s2", 1, 3, true, false, &blob("a", 1, 1));
        r.add("s3", 2, 3, true, false, &blob("a", 2, 5));
        r.add("s1", 1, 0, false, true, &tomb("a", 5, Kind::Dropped));
        // "b": deleted at v7 after its put at v6; one copy survived.
        r.add("s2", 3, 3, true, false, &blob("b", 3, 6));
        r.add("s1", 3, 0, false, true, &tomb("b", 7, Kind::Deleted));
        // "c": deleted at v8, then put again at v9.
        r.add("s1", 4, 0, false, true, &tomb("c", 8, Kind::Deleted));
        r.add("s1", 5, 3, true, false, &blob("c", 5, 9));
        // A copy no longer live does not count; a format 1 needle is
        // unnamed.
        r.add("s1", 6, 3, false, false, &blob("d", 6, 10));
        r.add("s1", 7, 3, true, false, &Bytes::new());
        let order: Vec<String> = ["s1", "s2", "s3"].map(String::from).to_vec();
        assert_eq!((r.max_id, r.max_version, r.unnamed), (7, 10, 1));
        let out = r.finish(&order);
        let keys: Vec<(&str, u64, Vec<String>)> = out
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.meta.id, e.meta.replicas.clone()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("a", 2, vec!["s1".to_owned(), "s3".to_owned()]),
                ("c", 5, vec!["s1".to_owned()]),
            ]
        );
        assert_eq!((out.conflicts, out.deleted, out.replicas), (1, 1, 3));
        assert_eq!(out.entries[0].meta.version, 5);
    }
}

//! The writer thread: it owns the active volume, drains every queued
//! put and delete, appends their needles with one write through the
//! storage seam, fsyncs once, then publishes the new locations and answers
//! the whole batch (group commit). A failed write or fsync cuts the
//! volume back to where the batch began, so nothing unacknowledged stays.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use storage::Media;
use tokio::sync::mpsc;

use super::recover::{active_reserve, new_volume};
use super::{Op, Reply, Store, StoreOptions, VolStats};
use crate::idx::{IdxWriter, Record};
use crate::needle::{self, Header, FLAG_TOMBSTONE};
use crate::needle_map::{Loc, MAX_OFFSET};
use crate::volume::{self, Volume, SUPERBLOCK_LEN};
use crate::{Error, Result};

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) store: std::sync::Weak<Store>,
    pub(super) dir: PathBuf,
    pub(super) opts: StoreOptions,
    pub(super) volume: u16,
    /// The active volume, written only through the storage seam.
    pub(super) file: Arc<dyn Media>,
    pub(super) end: u64,
    pub(super) idx: IdxWriter,
    pub(super) pending: Vec<Record>,
}

/// A needle appended by the current batch, to publish after the fsync.
struct Appended {
    volume: u16,
    offset: u64,
    id: u64,
    meta: u16,
    size: u32,
    flags: u8,
    /// Cleared when the flush that carried it failed.
    durable: bool,
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        const BATCH_BYTES: usize = 32 << 20;
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            let mut bytes = 0usize;
            while bytes < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(op) => {
                        if let Op::Put { data, .. } = &op {
                            bytes += data.len();
                        }
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            let outbox = {
                let Some(store) = self.store.upgrade() else {
                    return;
                };
                self.commit(&store, batch)
            };
            // Answer only once this thread holds no reference: a caller
            // that drops the store after its answer then drops the last
            // one, and its drop waits for this thread (see `Drop`).
            for (reply, res) in outbox {
                let _ = reply.send(res);
            }
        }
        // Channel closed: the store is dropping. Leave the index complete.
        let _ = self.flush_idx(true);
    }

    /// Appends a batch; returns the answers to send.
    fn commit(&mut self, store: &Store, batch: Vec<Op>) -> Vec<(Reply, Result<()>)> {
        let mut outbox: Vec<(Reply, Result<()>)> = Vec::with_capacity(batch.len());
        let mut buf = BytesMut::new();
        let mut appended: Vec<Appended> = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        // Liveness of ids touched earlier in this batch (not yet in the map).
        let mut seen: HashMap<u64, bool> = HashMap::new();
        let mut failure: Option<String> = None;
        let mut any_delete = false;

        let mut checkpoints = Vec::new();
        // Bytes the volumes hold before this batch, for `max_bytes`.
        let used_before: u64 = if self.opts.max_bytes > 0 {
            let st = store.state.read().unwrap_or_else(|p| p.into_inner());
            st.stats.values().map(|v| v.total).sum()
        } else {
            0
        };
        for op in batch {
            let (id, cookie, meta, data, flags, reply) = match op {
                Op::Checkpoint { reply } => {
                    checkpoints.push(reply);
                    continue;
                }
                Op::Put {
                    id,
                    cookie,
                    meta,
                    data,
                    reply,
                } => {
                    let used = used_before + buf.len() as u64;
                    let len = needle::needle_len(meta.len() as u16, data.len() as u64);
                    if self.opts.max_bytes > 0 && used + len > self.opts.max_bytes {
                        outbox.push((
                            reply,
                            Err(Error::Full {
                                used,
                                limit: self.opts.max_bytes,
                            }),
                        ));
                        continue;
                    }
                    (id, cookie, meta, data, 0u8, reply)
                }
                Op::Delete { id, meta, reply } => {
                    let live = match seen.get(&id) {
                        Some(l) => *l,
                        None => store
                            .state
                            .read()
                            .unwrap_or_else(|p| p.into_inner())
                            .map
                            .get(id)
                            .is_some(),
                    };
                    if !live {
                        outbox.push((reply, Err(Error::NotFound(id))));
                        continue;
                    }
                    any_delete = true;
                    (id, 0, meta, Bytes::new(), FLAG_TOMBSTONE, reply)
                }
            };
            let len = needle::needle_len(meta.len() as u16, data.len() as u64);
            let at = self.end + buf.len() as u64;
            if failure.is_none()
                && at + len > self.opts.volume_bytes.min(MAX_OFFSET)
                && at > SUPERBLOCK_LEN
            {
                if let Err(e) = self.flush(&mut buf).and_then(|_| self.roll_over(store)) {
                    failure = Some(e.to_string());
                    self.mark_lost(&mut appended);
                }
            }
            if failure.is_some() {
                replies.push((reply, None));
                continue;
            }
            let offset = self.end + buf.len() as u64;
            needle::encode_into(
                &mut buf,
                &Header {
                    cookie,
                    id,
                    flags,
                    meta: meta.len() as u16,
                    size: data.len() as u32,
                },
                &meta,
                &data,
            );
            seen.insert(id, flags == 0);
            appended.push(Appended {
                volume: self.volume,
                offset,
                id,
                meta: meta.len() as u16,
                size: data.len() as u32,
                flags,
                durable: true,
            });
            replies.push((reply, Some(appended.len() - 1)));
        }
        if failure.is_none() {
            if let Err(e) = self.flush(&mut buf) {
                failure = Some(e.to_string());
                self.mark_lost(&mut appended);
            }
        }
        if !appended.is_empty() {
            store.metrics.fsync_batches.inc();
        }

        // Publish: the needles are durable now.
        {
            let mut st = store.state.write().unwrap_or_else(|p| p.into_inner());
            for a in appended.iter().filter(|a| a.durable) {
                let nlen = needle::needle_len(a.meta, u64::from(a.size));
                let stats = st.stats.entry(a.volume).or_default();
                stats.total += nlen;
                if a.flags & FLAG_TOMBSTONE != 0 {
                    stats.tombstones += nlen;
                    if let Some(old) = st.map.remove(a.id) {
                        let s = st.stats.entry(old.volume).or_default();
                        s.live = s.live.saturating_sub(old.needle_len());
                    }
                } else {
                    stats.live += nlen;
                    if let Some(old) = st.map.insert(
                        a.id,
                        Loc {
                            volume: a.volume,
                            offset: a.offset,
                            meta: needle::meta_room(a.meta),
                            size: a.size,
                        },
                    ) {
                        let s = st.stats.entry(old.volume).or_default();
                        s.live = s.live.saturating_sub(old.needle_len());
                    }
                }
            }
        }
        for a in appended.iter().filter(|a| a.durable) {
            if a.flags & FLAG_TOMBSTONE != 0 {
                store.metrics.deletes.inc();
            } else {
                store.metrics.writes.inc();
                store.metrics.bytes_written.inc_by(u64::from(a.size));
            }
            self.pending.push(Record {
                id: a.id,
                offset: a.offset,
                size: a.size,
                flags: a.flags,
                meta: a.meta,
            });
        }
        for (reply, idx) in replies {
            let ok = idx.is_some_and(|i| appended[i].durable);
            let res = if ok {
                Ok(())
            } else {
                Err(Error::io(
                    "append needle",
                    std::io::Error::other(failure.clone().unwrap_or_else(|| "write failed".into())),
                ))
            };
            outbox.push((reply, res));
        }
        if self.pending.len() as u64 >= self.opts.checkpoint_every {
            if let Err(e) = self.flush_idx(false) {
                tracing::warn!(error = %e, "index checkpoint failed; restart will rescan");
            }
        }
        if any_delete {
            store.poke_compactor();
        }
        if !checkpoints.is_empty() {
            let res = self.flush_idx(true);
            for reply in checkpoints {
                let r = match &res {
                    Ok(()) => Ok(()),
                    Err(e) => Err(Error::io(
                        "checkpoint",
                        std::io::Error::other(e.to_string()),
                    )),
                };
                outbox.push((reply, r));
            }
        }
        outbox
    }

    /// After a failed flush: needles of the active volume at or past its end
    /// never became durable. Earlier ones (before a roll-over) did.
    fn mark_lost(&self, appended: &mut [Appended]) {
        for a in appended.iter_mut() {
            if a.volume == self.volume && a.offset >= self.end {
                a.durable = false;
            }
        }
    }

    /// Writes `buf` at the end of the active volume and fsyncs it.
    fn flush(&mut self, buf: &mut BytesMut) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let res = self
            .file
            .write_at(buf, self.end)
            .and_then(|_| self.file.sync());
        match res {
            Ok(()) => {
                self.end += buf.len() as u64;
                buf.clear();
                Ok(())
            }
            Err(e) => {
                // Drop whatever part of the batch reached the file so the
                // next batch starts at a needle boundary.
                let _ = self.file.set_len(self.end);
                buf.clear();
                Err(Error::io("write volume", e))
            }
        }
    }

    fn flush_idx(&mut self, sync: bool) -> Result<()> {
        self.idx.append(&self.pending)?;
        self.pending.clear();
        if sync {
            self.idx.sync()?;
        }
        Ok(())
    }

    /// Seals the active volume and starts the next one.
    fn roll_over(&mut self, store: &Store) -> Result<()> {
        self.flush_idx(true)?;
        let next = self.volume.checked_add(1).ok_or_else(|| Error::Format {
            path: self.dir.display().to_string(),
            reason: "out of volume numbers".into(),
        })?;
        let (file, idxw) = new_volume(&self.dir, next, self.opts.faults.as_ref())?;
        let vol = Arc::new(Volume::open(
            &volume::dat_path(&self.dir, next),
            active_reserve(&self.opts),
        )?);
        {
            let mut st = store.state.write().unwrap_or_else(|p| p.into_inner());
            st.volumes.insert(next, vol);
            st.stats.insert(next, VolStats::default());
            st.active = next;
        }
        self.volume = next;
        self.file = file;
        self.idx = idxw;
        self.end = SUPERBLOCK_LEN;
        store.metrics.rollovers.inc();
        // The sealed volume may already hold garbage worth compacting.
        store.poke_compactor();
        Ok(())
    }
}

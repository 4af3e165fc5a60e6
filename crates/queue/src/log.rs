//! The durable job log: segment files of CRC-checked records, appended by
//! one writer thread that fsyncs once per batch somebody waits for (group
//! commit); records nobody waits for ride the next such sync, or one
//! [`LAZY_SYNC`] later.
//!
//! A segment (`seg-NNNNNNNNNN.log`) starts with the 8-byte magic
//! `STRQLOG` + version 1, then records `[u32 len][u32 crc32c][body]`
//! (little-endian). A body is a `Put` (the job's metadata and payload), an
//! `Update` (metadata only: state, attempts, result, ...) or a `Remove`.
//! Replaying the records in order rebuilds every job. A torn or damaged
//! record at the end of the last segment (a crash mid-write) is cut off;
//! damage anywhere else is an error, never silently skipped.
//!
//! Compaction writes the live jobs as `Put`s into a new segment, fsyncs it,
//! then deletes the older segments; a crash in between leaves both, and
//! replaying old then new gives the same jobs.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use storage::{Faults, Media};

use crate::job::{Job, State};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"STRQLOG\x01";
/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 64 << 20;

const PUT: u8 = 1;
const UPDATE: u8 = 2;
const REMOVE: u8 = 3;

/// One replayed record.
#[derive(Debug)]
pub enum Record {
    /// A job with its payload (a put, or a compaction snapshot).
    Put(Job),
    /// New metadata for a job (payload unchanged).
    Update(Job),
    /// The job is gone.
    Remove(u64),
}

fn state_code(s: State) -> u8 {
    match s {
        State::Pending => 0,
        State::Ready => 1,
        State::Delayed => 2,
        State::Reserved => 3,
        State::Succeeded => 4,
        State::Retrying => 5,
        State::Dead => 6,
    }
}

fn state_of(c: u8) -> Option<State> {
    Some(match c {
        0 => State::Pending,
        1 => State::Ready,
        2 => State::Delayed,
        3 => State::Reserved,
        4 => State::Succeeded,
        5 => State::Retrying,
        6 => State::Dead,
        _ => return None,
    })
}

/// Encodes a `Put` (with payload) or an `Update` (without).
pub fn encode(job: &Job, with_payload: bool) -> Vec<u8> {
    let mut b =
        Vec::with_capacity(96 + job.queue.len() + if with_payload { job.payload.len() } else { 0 });
    b.push(if with_payload { PUT } else { UPDATE });
    b.extend_from_slice(&job.id.to_le_bytes());
    b.push(state_code(job.state));
    b.extend_from_slice(&job.priority.to_le_bytes());
    b.extend_from_slice(&job.ttr_ms.to_le_bytes());
    b.extend_from_slice(&job.max_attempts.to_le_bytes());
    b.extend_from_slice(&job.created_ms.to_le_bytes());
    b.extend_from_slice(&job.at_ms.to_le_bytes());
    for v in [
        job.attempts,
        job.timeouts,
        job.releases,
        job.buries,
        job.kicks,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&job.dead_seq.to_le_bytes());
    put_bytes(&mut b, Some(job.queue.as_bytes()));
    put_bytes(&mut b, job.idempotency_key.as_deref().map(str::as_bytes));
    put_bytes(&mut b, job.result.as_deref());
    put_bytes(&mut b, job.error.as_deref().map(str::as_bytes));
    if with_payload {
        put_bytes(&mut b, Some(&job.payload));
    }
    b
}

/// Encodes a `Remove`.
pub fn encode_remove(id: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(9);
    b.push(REMOVE);
    b.extend_from_slice(&id.to_le_bytes());
    b
}

fn put_bytes(b: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(v);
        }
        None => b.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

/// Reads fields off a record body.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
    fn bytes(&mut self) -> Option<Option<Vec<u8>>> {
        let n = self.u32()?;
        if n == u32::MAX {
            return Some(None);
        }
        self.take(n as usize).map(|b| Some(b.to_vec()))
    }
    fn string(&mut self) -> Option<Option<String>> {
        match self.bytes()? {
            Some(b) => String::from_utf8(b).ok().map(Some),
            None => Some(None),
        }
    }
}

/// Decodes a record body.
pub fn decode(body: &[u8]) -> Option<Record> {
    let mut r = Reader(body);
    let kind = r.u8()?;
    let id = r.u64()?;
    if kind == REMOVE {
        return Some(Record::Remove(id));
    }
    let state = state_of(r.u8()?)?;
    let priority = r.u32()?;
    let ttr_ms = r.u64()?;
    let max_attempts = r.u32()?;
    let created_ms = r.u64()?;
    let at_ms = r.u64()?;
    let (attempts, timeouts, releases, buries, kicks) =
        (r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?);
    let dead_seq = r.u64()?;
    let queue = r.string()??;
    let idempotency_key = r.string()?;
    let result = r.bytes()?.map(Bytes::from);
    let error = r.string()?;
    let payload = if kind == PUT {
        Bytes::from(r.bytes()??)
    } else {
        Bytes::new()
    };
    let job = Job {
        id,
        queue,
        payload,
        priority,
        ttr_ms,
        max_attempts,
        idempotency_key,
        state,
        created_ms,
        at_ms,
        attempts,
        result,
        error,
        timeouts,
        releases,
        buries,
        kicks,
        holder: 0,
        dead_seq,
    };
    match kind {
        PUT => Some(Record::Put(job)),
        UPDATE => Some(Record::Update(job)),
        _ => None,
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:010}.log"))
}

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("seg-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            out.push((n, p));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every record of the log in `dir`, cutting a torn tail off the last
/// segment. Returns the records and the number of the last segment.
pub fn replay(dir: &Path) -> Result<(Vec<Record>, u64, u64)> {
    let segs = segments(dir)?;
    let mut records = Vec::new();
    let mut bytes = 0;
    let last = segs.last().map_or(0, |s| s.0);
    for (n, path) in &segs {
        let mut data = Vec::new();
        File::open(path)?.read_to_end(&mut data)?;
        let corrupt = |reason: String| Error::Corrupt {
            path: path.clone(),
            reason,
        };
        let is_last = *n == last;
        if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            if is_last && data.len() < MAGIC.len() {
                // Created, crashed before the header was written.
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(0)?;
                drop(f);
                std::fs::remove_file(path)?;
                continue;
            }
            return Err(corrupt(
                "bad header (not a strata queue log, or a newer version)".into(),
            ));
        }
        let mut pos = MAGIC.len();
        while pos < data.len() {
            if data.len() >= pos + 4 && data[pos..pos + 4] == [0, 0, 0, 0] {
                // The zeroed space written ahead of the records: the end.
                break;
            }
            let ok = (|| {
                let len = u32::from_le_bytes(data.get(pos..pos + 4)?.try_into().ok()?) as usize;
                let crc = u32::from_le_bytes(data.get(pos + 4..pos + 8)?.try_into().ok()?);
                let body = data.get(pos + 8..pos + 8 + len)?;
                if crc32c::crc32c(body) != crc {
                    return None;
                }
                Some((decode(body)?, 8 + len))
            })();
            match ok {
                Some((rec, used)) => {
                    records.push(rec);
                    pos += used;
                }
                None if is_last => {
                    tracing::warn!(path = %path.display(), at = pos, cut = data.len() - pos, "torn log tail cut off");
                    let f = OpenOptions::new().write(true).open(path)?;
                    f.set_len(pos as u64)?;
                    f.sync_all()?;
                    break;
                }
                None => return Err(corrupt(format!("damaged record at byte {pos}"))),
            }
        }
        bytes += pos as u64;
    }
    Ok((records, last, bytes))
}

/// What the writer thread is asked to do.
enum Op {
    /// Append a record; answer once durable (if a sender is given).
    Append(
        Vec<u8>,
        Option<tokio::sync::oneshot::Sender<std::io::Result<()>>>,
    ),
    /// Start a new segment holding these records, then drop the older ones.
    Compact(Vec<Vec<u8>>),
}

/// Handle to the writer thread.
pub struct Log {
    tx: Option<mpsc::Sender<Op>>,
    /// The writer thread, joined when the log is dropped.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Log {
    /// Closes the log: the writer writes and syncs what it was sent, then
    /// stops, before this returns. Without the wait, a log reopened in the
    /// same process (recovery, tests) could be replayed while the old
    /// writer still appends to its segment.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Log {
    /// Starts the writer appending to a new segment after `last`; in
    /// tests, its files under `faults`.
    pub fn start(dir: &Path, last: u64, faults: Option<Arc<Faults>>) -> Result<Log> {
        let (tx, rx) = mpsc::channel();
        let mut w = Writer::open(dir, last + 1, faults)?;
        let thread = std::thread::Builder::new()
            .name("queue-log".into())
            .spawn(move || w.run(rx))?;
        Ok(Log {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, op: Op) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(op);
        }
    }

    /// Appends `body`; the receiver resolves once it is on disk.
    pub fn append(&self, body: Vec<u8>) -> tokio::sync::oneshot::Receiver<std::io::Result<()>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Append(body, Some(tx)));
        rx
    }

    /// Appends `body` without waiting: written at once, made durable with
    /// the next batch that is waited for or within [`LAZY_SYNC`].
    pub fn append_lazy(&self, body: Vec<u8>) {
        self.send(Op::Append(body, None));
    }

    /// Replaces the log with `snapshot` (the live jobs as `Put`s).
    pub fn compact(&self, snapshot: Vec<Vec<u8>>) {
        self.send(Op::Compact(snapshot));
    }
}

struct Writer {
    dir: PathBuf,
    n: u64,
    /// The segment, written only through the storage seam.
    file: Arc<dyn Media>,
    faults: Option<Arc<Faults>>,
    size: u64,
    /// Records up to here are durable (the last sync that succeeded).
    synced: u64,
    /// The file is zero-filled up to here. Appending inside space that is
    /// already allocated and written lets `fdatasync` skip the journal
    /// commit a growing file needs (measured: ~160 µs instead of ~250 µs
    /// per sync on this machine's ext4), which is most of a put's latency.
    zeroed: u64,
    /// Records are written but not synced since then.
    unsynced_since: Option<Instant>,
}

/// Longest a record nobody waits for (a reservation's attempt count, a
/// delete) stays written but unsynced.
pub const LAZY_SYNC: Duration = Duration::from_millis(20);

/// Zeroed space written ahead of the records at a time.
const ZERO_AHEAD: u64 = 4 << 20;

impl Writer {
    fn open(dir: &Path, n: u64, faults: Option<Arc<Faults>>) -> Result<Writer> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(segment_path(dir, n))?;
        let file = storage::open(file, faults.as_ref());
        file.write_at(MAGIC, 0)?;
        let mut w = Writer {
            dir: dir.to_owned(),
            n,
            file,
            faults,
            size: MAGIC.len() as u64,
            synced: 0,
            zeroed: MAGIC.len() as u64,
            unsynced_since: None,
        };
        w.zero_ahead(0)?;
        // The new file's name must be durable too.
        File::open(dir)?.sync_all()?;
        Ok(w)
    }

    /// Makes sure the file is zero-filled (and synced) at least `more`
    /// bytes past the records, `ZERO_AHEAD` at a time.
    fn zero_ahead(&mut self, more: u64) -> std::io::Result<()> {
        if self.zeroed >= self.size + more.max(1) {
            return Ok(());
        }
        let want = self.size + more + ZERO_AHEAD;
        let zeros = vec![0u8; 1 << 20];
        while self.zeroed < want {
            let n = (want - self.zeroed).min(zeros.len() as u64) as usize;
            self.file.write_at(&zeros[..n], self.zeroed)?;
            self.zeroed += n as u64;
        }
        self.file.sync()?;
        // That sync carried the records written so far too.
        self.synced = self.size;
        Ok(())
    }

    /// Zeroes `from..to` again (best effort): records there were refused
    /// to their waiters and must not be replayed, whether or not a later
    /// batch is long enough to cover them.
    fn forget(&self, from: u64, to: u64) {
        if to <= from {
            return;
        }
        let zeros = vec![0u8; (to - from) as usize];
        if let Err(e) = self.file.write_at(&zeros, from) {
            tracing::error!(error = %e, "could not zero a failed batch in the queue log");
        }
    }

    fn frame(out: &mut Vec<u8>, body: &[u8]) {
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        out.extend_from_slice(body);
    }

    fn run(&mut self, rx: mpsc::Receiver<Op>) {
        let mut buf = Vec::new();
        loop {
            // Records nobody waits for are written at once (so a process
            // crash cannot lose them: they are in the page cache) but synced
            // only with the next batch somebody waits for, or `LAZY_SYNC`
            // after they were written, whichever is first.
            let first = match self.unsynced_since {
                None => match rx.recv() {
                    Ok(op) => op,
                    Err(_) => return,
                },
                Some(since) => {
                    let left = LAZY_SYNC.saturating_sub(since.elapsed());
                    match rx.recv_timeout(left) {
                        Ok(op) => op,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.sync_logged();
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            self.sync_logged();
                            return;
                        }
                    }
                }
            };
            // Drain everything queued: one write and one fsync for all.
            let mut waiters = Vec::new();
            let mut pending = Some(first);
            loop {
                let op = match pending.take() {
                    Some(op) => op,
                    None => match rx.try_recv() {
                        Ok(op) => op,
                        Err(_) => break,
                    },
                };
                match op {
                    Op::Append(body, w) => {
                        Self::frame(&mut buf, &body);
                        waiters.extend(w);
                    }
                    Op::Compact(snapshot) => {
                        let r = self
                            .write_out(&mut buf)
                            .and_then(|_| self.sync())
                            .and_then(|_| self.compact(&snapshot));
                        if let Err(e) = r {
                            tracing::error!(error = %e, "queue log compaction failed");
                        }
                    }
                }
            }
            let r = self.write_out(&mut buf);
            let overdue = self
                .unsynced_since
                .is_some_and(|since| since.elapsed() >= LAZY_SYNC);
            let r = if waiters.is_empty() && !overdue {
                r
            } else {
                r.and_then(|_| self.sync())
            };
            if waiters.is_empty() {
                if let Err(e) = r {
                    tracing::error!(error = %e, "queue log write failed");
                }
                continue;
            }
            for w in waiters {
                let _ = w.send(match &r {
                    Ok(()) => Ok(()),
                    Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                });
            }
        }
    }

    /// Appends `buf` to the file (not synced yet).
    fn write_out(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        // A batch that fails is dropped, never written later: its waiters
        // hear the error, and a put they were told failed must not come
        // back after a restart. What part of it went out is zeroed, and the
        // next batch goes where it would have.
        let r = self
            .zero_ahead(buf.len() as u64)
            .and_then(|_| self.file.write_at(buf, self.size));
        match &r {
            Ok(()) => {
                self.size += buf.len() as u64;
                self.unsynced_since.get_or_insert_with(Instant::now);
            }
            Err(_) => self.forget(self.size, self.size + buf.len() as u64),
        }
        buf.clear();
        r
    }

    /// Makes everything written durable; starts a new segment once this
    /// one is full.
    fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        if let Err(e) = self.file.sync() {
            // Whether the records since the last good sync reached the disk
            // is unknown, and their waiters hear a failure: zero them and
            // write the next batch in their place. Lazy records among them
            // (deletes, attempt counts) are lost with them; after a restart
            // their jobs can only run again, as at-least-once allows.
            self.forget(self.synced, self.size);
            self.size = self.synced;
            self.unsynced_since = None;
            return Err(e);
        }
        self.synced = self.size;
        self.unsynced_since = None;
        if self.size > SEGMENT_BYTES {
            *self = Writer::open(&self.dir, self.n + 1, self.faults.clone())
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    fn sync_logged(&mut self) {
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "queue log sync failed");
        }
    }

    fn compact(&mut self, snapshot: &[Vec<u8>]) -> std::io::Result<()> {
        let old = self.n;
        *self = Writer::open(&self.dir, self.n + 1, self.faults.clone())
            .map_err(std::io::Error::other)?;
        let mut buf = Vec::new();
        for body in snapshot {
            Self::frame(&mut buf, body);
        }
        self.zero_ahead(buf.len() as u64)?;
        self.file.write_at(&buf, self.size)?;
        self.file.sync()?;
        self.size += buf.len() as u64;
        self.synced = self.size;
        for (n, p) in segments(&self.dir).map_err(std::io::Error::other)? {
            if n <= old {
                std::fs::remove_file(p)?;
            }
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

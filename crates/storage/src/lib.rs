//! The seam between strata's append-only files and the disk.
//!
//! The store's volume and index files and the queue's log segments are
//! written only through [`Media`]: write at an offset, sync, set the
//! length. Two implementations:
//!
//! - [`std::fs::File`]: the real thing, `pwrite` and `fdatasync`.
//! - [`Faulty`]: a file under a [`Faults`] plan, for tests. The plan
//!   counts writes and syncs across every file it wraps and can fail the
//!   n-th sync (a failed fsync), cut the n-th write short, or "lose power"
//!   after the n-th write: that write lands torn (its first half), and
//!   every later write and sync fails, as if the machine stopped there.
//!   A test then reopens the files without a plan and checks that
//!   recovery kept everything acknowledged. A plan's syncs never call
//!   fsync (durability is the plan's model, not the disk's), so a test can
//!   crash at every write point in a few seconds.
//!
//! [`open`] picks between them from an optional plan; the callers keep an
//! `Arc<dyn Media>`.
//!
//! This crate has no error type of its own: every call answers
//! `std::io::Result`, as the file calls it stands for do.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// An append-only file as its writer sees it.
pub trait Media: Send + Sync + std::fmt::Debug {
    /// Writes all of `buf` at byte `at`.
    fn write_at(&self, buf: &[u8], at: u64) -> io::Result<()>;
    /// Makes the data written so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Cuts or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

impl Media for File {
    fn write_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        self.write_all_at(buf, at)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// `file` as a [`Media`]: itself, or under `faults` when a test set a
/// plan.
pub fn open(file: File, faults: Option<&Arc<Faults>>) -> Arc<dyn Media> {
    match faults {
        Some(plan) => Arc::new(Faulty {
            file,
            plan: plan.clone(),
        }),
        None => Arc::new(file),
    }
}

/// What goes wrong, and when. Counts are 1-based and shared by every file
/// the plan wraps, in the order the calls happen.
#[derive(Debug, Default)]
pub struct Faults {
    fail_sync_at: Option<u64>,
    short_write_at: Option<u64>,
    crash_after_write: Option<u64>,
    writes: AtomicU64,
    syncs: AtomicU64,
    crashed: AtomicBool,
}

impl Faults {
    /// A plan that only counts (and skips real syncs).
    pub fn none() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// The `n`-th sync fails (`EIO`); the others succeed.
    pub fn fail_sync(n: u64) -> Arc<Faults> {
        Arc::new(Faults {
            fail_sync_at: Some(n),
            ..Faults::default()
        })
    }

    /// The `n`-th write puts down the first half of its bytes and fails
    /// (`ENOSPC`); the others succeed.
    pub fn short_write(n: u64) -> Arc<Faults> {
        Arc::new(Faults {
            short_write_at: Some(n),
            ..Faults::default()
        })
    }

    /// Power is lost during the `n`-th write: it lands torn (its first
    /// half), and every later write or sync fails.
    pub fn crash_after_write(n: u64) -> Arc<Faults> {
        Arc::new(Faults {
            crash_after_write: Some(n),
            ..Faults::default()
        })
    }

    /// Writes attempted so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Syncs attempted so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// Whether the plan's power loss happened.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }
}

fn lost() -> io::Error {
    io::Error::other("power lost (injected)")
}

/// A file under a [`Faults`] plan.
#[derive(Debug)]
pub struct Faulty {
    file: File,
    plan: Arc<Faults>,
}

impl Media for Faulty {
    fn write_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        if self.plan.crashed() {
            return Err(lost());
        }
        let n = self.plan.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let half = &buf[..buf.len() / 2];
        if self.plan.crash_after_write == Some(n) {
            self.plan.crashed.store(true, Ordering::SeqCst);
            self.file.write_all_at(half, at)?;
            return Err(lost());
        }
        if self.plan.short_write_at == Some(n) {
            self.file.write_all_at(half, at)?;
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.file.write_all_at(buf, at)
    }

    fn sync(&self) -> io::Result<()> {
        if self.plan.crashed() {
            return Err(lost());
        }
        let n = self.plan.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if self.plan.fail_sync_at == Some(n) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if self.plan.crashed() {
            return Err(lost());
        }
        self.file.set_len(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .expect("open")
    }

    #[test]
    fn a_plan_fails_the_sync_and_cuts_the_write_it_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let plan = Faults::fail_sync(2);
        let m = open(file(&dir), Some(&plan));
        m.write_at(b"abcd", 0).expect("write");
        m.sync().expect("first sync");
        assert_eq!(m.sync().expect_err("second").raw_os_error(), Some(5));
        m.sync().expect("third sync");
        assert_eq!((plan.writes(), plan.syncs()), (1, 3));

        let plan = Faults::short_write(2);
        let m = open(file(&dir), Some(&plan));
        m.write_at(b"abcd", 0).expect("write");
        assert!(m.write_at(b"efgh", 4).is_err());
        m.write_at(b"ij", 6).expect("later writes go on");
        assert_eq!(
            std::fs::read(dir.path().join("f")).expect("read"),
            b"abcdefij"
        );
    }

    #[test]
    fn after_the_power_loss_nothing_more_reaches_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let plan = Faults::crash_after_write(2);
        let m = open(file(&dir), Some(&plan));
        m.write_at(b"abcd", 0).expect("write");
        assert!(m.write_at(b"efgh", 4).is_err());
        assert!(plan.crashed());
        assert!(m.write_at(b"ijkl", 6).is_err());
        assert!(m.sync().is_err() && m.set_len(0).is_err());
        // The torn write left its first half.
        assert_eq!(
            std::fs::read(dir.path().join("f")).expect("read"),
            b"abcdef"
        );
    }

    #[test]
    fn without_a_plan_the_file_itself_is_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = open(file(&dir), None);
        m.write_at(b"xyz", 2).expect("write");
        m.sync().expect("sync");
        m.set_len(4).expect("len");
        assert_eq!(
            std::fs::read(dir.path().join("f")).expect("read"),
            b"\0\0xy"
        );
    }
}

//! Time as the cache sees it: whole Unix seconds, injectable for tests.

use std::sync::atomic::{AtomicU32, Ordering};

/// A source of the current Unix time in seconds.
pub trait Clock: Send + Sync {
    /// Now, in Unix seconds.
    fn now(&self) -> u32;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u32 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicU32);

impl ManualClock {
    /// Starts at `t` Unix seconds.
    pub fn new(t: u32) -> Self {
        ManualClock(AtomicU32::new(t))
    }
    /// Moves forward by `secs`.
    pub fn advance(&self, secs: u32) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Longest relative expiration: larger values are absolute Unix times
/// (memcached's rule).
pub const RELATIVE_LIMIT: i64 = 60 * 60 * 24 * 30;

/// What an expiration argument means at time `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Never expires (0).
    Never,
    /// Expires at this Unix second.
    At(u32),
    /// Already expired (negative, or an absolute time in the past).
    Now,
}

impl Expiry {
    /// memcached semantics: 0 never; negative now; up to 30 days relative;
    /// beyond that an absolute Unix time.
    pub fn from_raw(raw: i64, now: u32) -> Expiry {
        match raw {
            0 => Expiry::Never,
            r if r < 0 => Expiry::Now,
            r if r <= RELATIVE_LIMIT => Expiry::At(now.saturating_add(r as u32)),
            r => {
                let t = u32::try_from(r).unwrap_or(u32::MAX);
                if t <= now {
                    Expiry::Now
                } else {
                    Expiry::At(t)
                }
            }
        }
    }

    /// Encoded as the item's `exptime`: 0 = never, else the Unix second
    /// from which it is gone.
    pub fn as_exptime(self, now: u32) -> u32 {
        match self {
            Expiry::Never => 0,
            Expiry::At(t) => t,
            // Any second not after now: expired on the next look.
            Expiry::Now => now.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcached_rules() {
        let now = 1_800_000_000;
        assert_eq!(Expiry::from_raw(0, now), Expiry::Never);
        assert_eq!(Expiry::from_raw(-1, now), Expiry::Now);
        assert_eq!(Expiry::from_raw(10, now), Expiry::At(now + 10));
        assert_eq!(
            Expiry::from_raw(RELATIVE_LIMIT, now),
            Expiry::At(now + RELATIVE_LIMIT as u32)
        );
        assert_eq!(
            Expiry::from_raw(RELATIVE_LIMIT + 1, now),
            Expiry::Now,
            "absolute, long past"
        );
        assert_eq!(
            Expiry::from_raw(i64::from(now) + 50, now),
            Expiry::At(now + 50)
        );
    }
}

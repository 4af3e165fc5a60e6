//! Waiting for a condition instead of sleeping for a guess: [`until`]
//! polls a check until it holds and fails the test, with what the check
//! last saw, once a generous limit passes. The limit only bounds a test
//! that is already failing; a passing test waits exactly as long as the
//! condition takes.

use std::time::{Duration, Instant};

/// How often [`until`] asks again.
const EVERY: Duration = Duration::from_millis(20);

/// Calls `check` until it answers `Ok`, and returns that value. An `Err`
/// says what it saw instead; after `limit` the test panics with `what` and
/// the last of those.
pub fn until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what}: not after {limit:?}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(EVERY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_check_holds_and_names_what_it_last_saw_when_not() {
        let mut n = 0;
        let got = until("third call", Duration::from_secs(5), || {
            n += 1;
            if n == 3 {
                Ok(n)
            } else {
                Err(format!("call {n}"))
            }
        });
        assert_eq!(got, 3);
        let panic = std::panic::catch_unwind(|| {
            until::<()>("never", Duration::from_millis(50), || Err("nope".into()))
        })
        .expect_err("must give up");
        let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("never") && msg.contains("nope"), "{msg}");
    }
}

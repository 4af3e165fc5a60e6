//! Waiting for a condition instead of sleeping for a guess: [`until`]
//! (and [`until_async`], for a check that awaits: an HTTP call, a metric)
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

/// [`until`] for a check that awaits. It asks again after 10 ms, then
/// twice as long each time up to 200 ms: a condition that holds at once
/// costs no waiting, and a slow one (a repair, a failover) is not polled
/// with a burst of requests on a loaded machine. The deadline is on
/// tokio's clock, so a test with a paused clock waits in virtual time.
pub async fn until_async<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not after {limit:?}; last seen: {seen}")
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
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

    #[tokio::test(start_paused = true)]
    async fn the_async_form_waits_in_the_runtime_clock_and_gives_up_the_same_way() {
        let start = tokio::time::Instant::now();
        let mut n = 0;
        let got = until_async("fifth call", Duration::from_secs(5), async || {
            n += 1;
            if n == 5 {
                Ok(n)
            } else {
                Err(format!("call {n}"))
            }
        })
        .await;
        assert_eq!(got, 5);
        // 10 + 20 + 40 + 80 ms of virtual time between the five calls.
        assert_eq!(start.elapsed(), Duration::from_millis(150));
        let gave_up = tokio::spawn(async {
            until_async::<()>("never", Duration::from_secs(1), async || Err("nope".into())).await
        })
        .await
        .expect_err("must give up");
        let msg = gave_up
            .into_panic()
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(msg.contains("never") && msg.contains("nope"), "{msg}");
    }
}

//! Rendezvous (highest-random-weight) hashing.
//!
//! Each (member, blob id) pair gets a pseudo-random score; a blob lives on the
//! R members with the highest scores. Removing a member only moves the blobs
//! it held (each to its next-best member); adding one takes about 1/(N+1) of
//! the blobs and moves nothing else. It needs no ring state, which suits a
//! small static list of stores.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The score of `member` for `blob_id`. Higher wins.
pub fn rendezvous_score(member: &str, blob_id: u64) -> u64 {
    // Seeding the member-name hash with the blob id keeps every score
    // independent; a final mix spreads nearby ids over the whole range.
    let h = xxh3_64_with_seed(member.as_bytes(), blob_id);
    mix64(h ^ blob_id.rotate_left(32))
}

/// SplitMix64 finaliser: cheap, full-avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Ranks `members` for `blob_id`, best first. The caller takes the first R
/// healthy ones for a write and walks the list in order for failover.
pub fn rendezvous<S: AsRef<str>>(members: &[S], blob_id: u64) -> Vec<&str> {
    let mut scored: Vec<(u64, &str)> = members
        .iter()
        .map(|m| (rendezvous_score(m.as_ref(), blob_id), m.as_ref()))
        .collect();
    // Ties are astronomically unlikely; break them by name so the order is
    // still total and deterministic.
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("store-{i}")).collect()
    }

    #[test]
    fn ranking_is_deterministic_and_complete() {
        let m = names(5);
        let a = rendezvous(&m, 42);
        let b = rendezvous(&m, 42);
        assert_eq!(a, b);
        assert_eq!(a.len(), 5);
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
    }

    #[test]
    fn spread_is_even() {
        let m = names(4);
        let mut counts = [0usize; 4];
        for id in 0..40_000u64 {
            let top = rendezvous(&m, id)[0];
            let idx = m.iter().position(|x| x == top).expect("member");
            counts[idx] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn adding_a_member_moves_only_its_share() {
        let before = names(4);
        let after = names(5);
        let n = 50_000u64;
        let mut moved = 0;
        for id in 0..n {
            let a = rendezvous(&before, id)[0];
            let b = rendezvous(&after, id)[0];
            if a != b {
                // Every move must be onto the new member.
                assert_eq!(b, "store-4");
                moved += 1;
            }
        }
        let share = moved as f64 / n as f64;
        assert!(share < 0.2 + 0.02, "moved {share}");
    }
}

//! A ketama-style consistent-hash ring for the distributed cache.
//!
//! Each node owns `points` pseudo-random positions on a 64-bit circle; a key
//! belongs to the first node clockwise from its hash. Adding a node takes
//! about 1/(N+1) of the keys (from every other node a little) and moves
//! nothing else; removing one hands its keys to their next nodes. `owners`
//! walks on for R distinct nodes (replicas of hot keys), and
//! `owner_bounded` implements consistent hashing with bounded loads
//! (Mirrokni et al.): a node already holding more than `c` times the
//! average is skipped, which caps the hottest node's share.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Default points per node (ketama uses 160).
pub const DEFAULT_POINTS: usize = 160;

/// The ring: sorted points, each naming a node by index.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u64, u32)>,
    nodes: Vec<String>,
}

/// Where a key hashes on the ring.
pub fn key_point(key: &[u8]) -> u64 {
    xxh3_64(key)
}

impl Ring {
    /// A ring over `nodes` with `points` positions each.
    pub fn new<S: AsRef<str>>(nodes: &[S], points: usize) -> Ring {
        let mut pts = Vec::with_capacity(nodes.len() * points);
        for (i, n) in nodes.iter().enumerate() {
            for p in 0..points as u64 {
                pts.push((xxh3_64_with_seed(n.as_ref().as_bytes(), p), i as u32));
            }
        }
        // Ties between two nodes' points are broken by node name, so every
        // client builds the same ring from the same list in any order.
        let names: Vec<String> = nodes.iter().map(|n| n.as_ref().to_owned()).collect();
        pts.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| names[a.1 as usize].cmp(&names[b.1 as usize]))
        });
        Ring {
            points: pts,
            nodes: names,
        }
    }

    /// Node names, in the order given.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Index of the first point at or after `h` (wrapping).
    fn start(&self, h: u64) -> usize {
        let i = self.points.partition_point(|p| p.0 < h);
        if i == self.points.len() {
            0
        } else {
            i
        }
    }

    /// The node that owns `key`, or `None` on an empty ring.
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        Some(self.points[self.start(key_point(key))].1 as usize)
    }

    /// Up to `r` distinct nodes for `key`, owner first, walking clockwise.
    pub fn owners(&self, key: &[u8], r: usize) -> Vec<usize> {
        self.owners_from(key_point(key), r)
    }

    fn owners_from(&self, h: u64, r: usize) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::with_capacity(r);
        if self.points.is_empty() {
            return out;
        }
        let s = self.start(h);
        for k in 0..self.points.len() {
            let n = self.points[(s + k) % self.points.len()].1 as usize;
            if !out.contains(&n) {
                out.push(n);
                if out.len() == r.min(self.nodes.len()) {
                    break;
                }
            }
        }
        out
    }

    /// Every distinct set of `r` owners a key can have (as sorted node
    /// indexes): a key is lost to a set of failed nodes only if one of
    /// these sets lies wholly inside it.
    pub fn replica_sets(&self, r: usize) -> Vec<Vec<usize>> {
        let mut sets: Vec<Vec<usize>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for &(h, _) in &self.points {
            // A key hashing exactly onto a point starts its walk there.
            let mut set = self.owners_from(h, r);
            set.sort_unstable();
            if seen.insert(set.clone()) {
                sets.push(set);
            }
        }
        sets
    }

    /// Bounded-load owner: the first node clockwise whose `loads` entry is
    /// below `ceil(c * (total + 1) / nodes)`. `c` > 1 (e.g. 1.25).
    pub fn owner_bounded(&self, key: &[u8], loads: &[u64], c: f64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let total: u64 = loads.iter().sum();
        let cap = (c * (total + 1) as f64 / self.nodes.len() as f64).ceil() as u64;
        let s = self.start(key_point(key));
        for k in 0..self.points.len() {
            let n = self.points[(s + k) % self.points.len()].1 as usize;
            if loads.get(n).copied().unwrap_or(0) < cap {
                return Some(n);
            }
        }
        self.owner(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("cache-{i}")).collect()
    }

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("key:{i}").into_bytes()).collect()
    }

    #[test]
    fn adding_a_node_moves_at_most_its_share_plus_two_points() {
        let ks = keys(100_000);
        for n in [3usize, 10, 30] {
            let a = Ring::new(&names(n), DEFAULT_POINTS);
            let b = Ring::new(&names(n + 1), DEFAULT_POINTS);
            let moved = ks
                .iter()
                .filter(|k| {
                    let (x, y) = (a.owner(k), b.owner(k));
                    if x != y {
                        // Only ever onto the new node.
                        assert_eq!(y, Some(n));
                    }
                    x != y
                })
                .count();
            let share = moved as f64 / ks.len() as f64;
            let bound = 1.0 / (n + 1) as f64 + 0.02;
            assert!(share <= bound, "n={n}: moved {share:.4} > {bound:.4}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let ks = keys(50_000);
        let all = names(5);
        let fewer: Vec<String> = all.iter().filter(|n| *n != "cache-2").cloned().collect();
        let a = Ring::new(&all, DEFAULT_POINTS);
        let b = Ring::new(&fewer, DEFAULT_POINTS);
        for k in &ks {
            let x = &a.nodes()[a.owner(k).expect("owner")];
            let y = &b.nodes()[b.owner(k).expect("owner")];
            if x != "cache-2" {
                assert_eq!(x, y);
            }
        }
    }

    #[test]
    fn replicas_are_distinct_and_start_with_the_owner() {
        let r = Ring::new(&names(4), DEFAULT_POINTS);
        for k in keys(1000) {
            let o = r.owners(&k, 3);
            assert_eq!(o.len(), 3);
            assert_eq!(Some(o[0]), r.owner(&k));
            assert!(o[0] != o[1] && o[1] != o[2] && o[0] != o[2]);
        }
        assert_eq!(r.owners(b"k", 10).len(), 4);
        assert!(Ring::new::<String>(&[], 10).owner(b"k").is_none());
    }

    #[test]
    fn every_keys_owners_are_one_of_the_replica_sets() {
        let r = Ring::new(&names(5), DEFAULT_POINTS);
        let sets = r.replica_sets(2);
        // Five nodes, two replicas: at most the ten pairs.
        assert!(sets.len() <= 10 && sets.len() >= 5, "{}", sets.len());
        for k in keys(5000) {
            let mut o = r.owners(&k, 2);
            o.sort_unstable();
            assert!(sets.contains(&o), "{o:?}");
        }
        // With one replica each set is one node, and every node has keys.
        assert_eq!(r.replica_sets(1).len(), 5);
    }

    #[test]
    fn bounded_load_caps_the_hottest_node() {
        let r = Ring::new(&names(4), DEFAULT_POINTS);
        let mut loads = vec![0u64; 4];
        // Every request for one hot key: unbounded, one node takes all.
        for i in 0..10_000u64 {
            let n = r
                .owner_bounded(format!("k{}", i % 3).as_bytes(), &loads, 1.25)
                .expect("owner");
            loads[n] += 1;
        }
        let max = *loads.iter().max().expect("max");
        assert!(max as f64 <= 1.25 * 10_000.0 / 4.0 + 1.0, "{loads:?}");
    }
}

//! CPU time and resident memory of a process tree from /proc, to report
//! server CPU % and RSS beside request rates (the load generator shares
//! the 2 cores).

/// `of(pid)` plus `of` of each of its direct children (a master process
/// and its workers).
fn with_children(pid: u32, of: fn(u32) -> u64) -> u64 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    of(pid)
        + children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
            .map(of)
            .sum::<u64>()
}

/// utime + stime of `pid` and its direct children, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    with_children(pid, ticks_of)
}

fn ticks_of(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the `(comm)`, which may contain spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// Clock ticks per second (USER_HZ), 100 on Linux.
pub const TICKS_PER_SEC: f64 = 100.0;

/// Resident set size of `pid` and its direct children, bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    with_children(pid, rss_of)
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

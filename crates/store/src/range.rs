//! HTTP `Range: bytes=...` parsing (RFC 9110 section 14), single range only.

/// What a `Range` header asks of a blob of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// No usable range (absent, not `bytes=`, or several ranges): send all.
    Full,
    /// Bytes `start..end` (end exclusive), within the blob.
    Part(u64, u64),
    /// Syntactically fine but outside the blob: 416.
    Unsatisfiable,
}

/// Parses `value` against a blob of `size` bytes.
///
/// Malformed values are ignored (served in full) as RFC 9110 allows; several
/// ranges are also served in full rather than as multipart.
pub fn parse_range(value: Option<&str>, size: u64) -> RangeAsk {
    let Some(v) = value else {
        return RangeAsk::Full;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeAsk::Full;
    };
    if spec.contains(',') {
        return RangeAsk::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    if a.is_empty() {
        // Suffix range: the last N bytes.
        let Some(n) = num(b) else {
            return RangeAsk::Full;
        };
        if n == 0 || size == 0 {
            return RangeAsk::Unsatisfiable;
        }
        return RangeAsk::Part(size - n.min(size), size);
    }
    let Some(start) = num(a) else {
        return RangeAsk::Full;
    };
    let end = if b.is_empty() {
        size
    } else {
        match num(b) {
            Some(last) if last >= start => last.saturating_add(1).min(size),
            _ => return RangeAsk::Full,
        }
    };
    if start >= size {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part(start, end)
}

#[cfg(test)]
mod tests {
    use super::{parse_range as p, RangeAsk::*};

    #[test]
    fn cases() {
        assert_eq!(p(None, 10), Full);
        assert_eq!(p(Some("bytes=0-3"), 10), Part(0, 4));
        assert_eq!(p(Some("bytes=5-"), 10), Part(5, 10));
        assert_eq!(p(Some("bytes=-3"), 10), Part(7, 10));
        assert_eq!(p(Some("bytes=-30"), 10), Part(0, 10));
        assert_eq!(p(Some("bytes=8-100"), 10), Part(8, 10));
        assert_eq!(p(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(p(Some("bytes=10-12"), 10), Unsatisfiable);
        assert_eq!(p(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(p(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(p(Some("bytes=5-3"), 10), Full);
        assert_eq!(p(Some("bytes=a-3"), 10), Full);
        assert_eq!(p(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(p(Some("items=0-1"), 10), Full);
        assert_eq!(p(Some("bytes=+1-2"), 10), Full);
    }
}

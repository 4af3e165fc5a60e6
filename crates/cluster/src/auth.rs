//! Credentials shared by every role: the cluster secret's header and a
//! comparison that does not leak how much of a guess was right.

/// Header carrying the cluster secret on calls between roles. Internal
/// APIs (store, index, queue, search) refuse calls without it when
/// `auth.secret` is set.
pub const SECRET_HEADER: &str = "x-strata-secret";

/// Compares two secrets in time that depends only on their lengths, not
/// on where they first differ, so that response timing cannot be used to
/// guess a token byte by byte.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // black_box keeps the optimiser from turning the fold into an early
    // exit.
    std::hint::black_box(a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y))) == 0
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn equal_only_when_every_byte_is() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"Secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secret1"));
        assert!(!ct_eq(b"", b"x"));
    }
}

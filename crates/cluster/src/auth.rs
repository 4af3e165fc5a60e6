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
    // `subtle` keeps the comparison branch-free past the optimiser
    // (`black_box` is documented as best effort only).
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// A secret kept out of the cluster file: read from the environment
/// variable `env` names or the file `file` names (one line; a trailing
/// newline is dropped), at most one of them set; `None` when neither is.
/// Errors name the setting: `{table}.{env_key}` or `{table}.{file_key}`.
pub fn read_secret(
    table: &str,
    (env_key, env): (&str, Option<&str>),
    (file_key, file): (&str, Option<&std::path::Path>),
) -> Result<Option<String>, crate::Error> {
    let bad = |key: &str, reason: String| crate::Error::Invalid {
        key: format!("{table}.{key}"),
        reason,
    };
    match (env, file) {
        (Some(_), Some(_)) => Err(bad(
            env_key,
            format!("set {env_key} or {file_key}, not both"),
        )),
        (Some(var), None) => std::env::var(var)
            .map(Some)
            .map_err(|_| bad(env_key, format!("environment variable {var} is not set"))),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| bad(file_key, format!("cannot read {}: {e}", path.display()))),
        (None, None) => Ok(None),
    }
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

use std::path::PathBuf;

/// Everything that can go wrong while reading or checking a cluster file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read at all.
    #[error("cannot read cluster file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why the read failed.
        source: std::io::Error,
    },
    /// The TOML did not parse, or named a key we do not know. The message
    /// from `toml` names the key and the line.
    #[error("cluster file {path}: {message}")]
    Parse {
        /// The file that was parsed.
        path: PathBuf,
        /// The parser's message (it names the offending key).
        message: String,
    },
    /// The TOML parsed but a value is out of range or inconsistent.
    #[error("invalid config: `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `limits.max_body_bytes`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--name` named no member of the cluster file.
    #[error("no member named `{0}` in the cluster file")]
    UnknownMember(String),
}

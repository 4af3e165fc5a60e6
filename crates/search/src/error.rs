//! The one error type of the search crate.

/// What can go wrong in a shard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The query text does not parse (unbalanced quotes, unknown field...).
    #[error("bad query: {0}")]
    BadQuery(String),
    /// A request that cannot be valid (empty key, zero limit...).
    #[error("invalid: {0}")]
    Invalid(String),
    /// tantivy failed (I/O, a damaged segment).
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The version table failed.
    #[error("versions: {0}")]
    Versions(String),
    /// The shard is closing.
    #[error("shard closed")]
    Closed,
    /// A search member over HTTP ([`crate::client`]) refused the call.
    #[error("search member answered {status} {code}: {detail}")]
    Answered {
        /// HTTP status.
        status: u16,
        /// The error code of its JSON body, if any.
        code: String,
        /// What it said.
        detail: String,
    },
    /// A search member over HTTP could not be reached or did not answer in
    /// time.
    #[error("search member unreachable: {0}")]
    Unreachable(String),
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Versions(e.to_string())
    }
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Versions(e.to_string())
            }
        }
    )*};
}
redb_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

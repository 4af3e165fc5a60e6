/// Everything the index can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The redb database failed.
    #[error("index database: {0}")]
    Db(#[from] redb::Error),
    /// A stored value did not decode.
    #[error("corrupt metadata for key {key:?}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Decoder message.
        reason: String,
    },
    /// An argument was out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The writer thread is gone.
    #[error("index is shutting down")]
    Closed,
    /// The backend (an index member, the PostgreSQL servers) could not be
    /// reached or did not answer in time; the caller may try again.
    #[error("index unavailable: {0}")]
    Unavailable(String),
    /// The PostgreSQL backend failed (unreachable, refused, schema).
    #[error(transparent)]
    Pg(#[from] pg::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Shorthand for index results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

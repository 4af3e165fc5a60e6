/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such job (or not in a state the operation applies to).
    #[error("job {0} not found")]
    NotFound(u64),
    /// The job is not reserved under this lease.
    #[error("job {0} is not reserved under this lease")]
    NotReserved(u64),
    /// A bad argument (queue name, sizes).
    #[error("{0}")]
    Invalid(String),
    /// The payload is over the limit.
    #[error("payload of {size} bytes is over the limit of {limit}")]
    TooBig {
        /// Bytes given.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A log segment is damaged before its last record.
    #[error("log {path}: {reason}")]
    Corrupt {
        /// The segment.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Disk I/O.
    #[error("queue log: {0}")]
    Io(#[from] std::io::Error),
    /// The PostgreSQL backend failed (unreachable, refused, schema).
    #[error(transparent)]
    Pg(#[from] pg::Error),
    /// A queue member over HTTP ([`crate::client`]) refused the call.
    #[error("queue answered {status} {code}: {detail}")]
    Answered {
        /// HTTP status.
        status: u16,
        /// The error code of its JSON body, if any.
        code: String,
        /// What it said.
        detail: String,
    },
    /// A queue member over HTTP could not be reached or did not answer in
    /// time.
    #[error("queue unreachable: {0}")]
    Unreachable(String),
}

/// Result with the queue's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a volume or index file.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No live needle with this blob id.
    #[error("blob {0} not found")]
    NotFound(u64),
    /// A needle failed its magic, id or CRC check when read back.
    #[error("blob {id}: corrupt needle at volume {volume} offset {offset}: {reason}")]
    Corrupt {
        /// Blob id asked for.
        id: u64,
        /// Volume holding it.
        volume: u16,
        /// Byte offset of the needle.
        offset: u64,
        /// Which check failed.
        reason: &'static str,
    },
    /// The store holds its configured maximum (`max_bytes`).
    #[error("store full: {used} bytes used of {limit}")]
    Full {
        /// Bytes in volumes.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// No volume with this number.
    #[error("no volume {0}")]
    NoVolume(u16),
    /// The volume was compacted since a listing of its heads began.
    #[error("volume {volume} was compacted since its listing began")]
    Moved {
        /// The volume.
        volume: u16,
    },
    /// The metadata does not fit a needle (see `MAX_META`).
    #[error("blob metadata of {0} bytes is larger than a needle can hold (65535)")]
    MetaTooLarge(usize),
    /// The body does not fit a needle (see `MAX_DATA`).
    #[error("blob of {0} bytes is larger than a needle can hold")]
    TooLarge(u64),
    /// A byte range outside the blob.
    #[error("range {start}..{end} is outside a blob of {size} bytes")]
    BadRange {
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// Size of the blob.
        size: u64,
    },
    /// A data file has an unknown magic or version.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The writer thread is gone (the store is shutting down).
    #[error("store is shutting down")]
    Closed,
    /// A store member over HTTP ([`crate::client`]) refused the call.
    #[error("store answered {status} {code}: {detail}")]
    Answered {
        /// HTTP status.
        status: u16,
        /// The error code of its JSON body (`corrupt`, `full`, ...), if any.
        code: String,
        /// What it said.
        detail: String,
    },
    /// A store member over HTTP could not be reached or did not answer in
    /// time.
    #[error("store unreachable: {0}")]
    Unreachable(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for store results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

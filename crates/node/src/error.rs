/// Errors of the request node's tier clients.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tier answered that the thing does not exist.
    #[error("not found")]
    NotFound,
    /// The tier could not be reached, timed out, or answered 5xx. The caller
    /// may try another replica.
    #[error("{tier} unavailable: {detail}")]
    Unavailable {
        /// Which tier member.
        tier: String,
        /// What happened.
        detail: String,
    },
    /// The tier rejected the request (4xx other than 404).
    #[error("{tier} rejected the request: {detail}")]
    Rejected {
        /// Which tier member.
        tier: String,
        /// Its answer.
        detail: String,
    },
    /// The store is full (507): it takes no new blobs but still serves
    /// reads, so the writer tries another store without marking it down.
    #[error("{tier} is full: {detail}")]
    Full {
        /// Which store.
        tier: String,
        /// Its answer.
        detail: String,
    },
    /// The store holds the blob but its needle failed verification: try
    /// another replica (the store itself is fine) and repair this copy.
    #[error("{tier} has a corrupt copy: {detail}")]
    Corrupt {
        /// Which store.
        tier: String,
        /// Its answer.
        detail: String,
    },
    /// An upload's body failed or ended before its declared length;
    /// nothing of it was kept.
    #[error("upload did not complete: {0}")]
    Incomplete(String),
    /// Not enough healthy stores to place R replicas.
    #[error("need {need} healthy stores, have {have}")]
    NotEnoughStores {
        /// R.
        need: usize,
        /// Healthy stores.
        have: usize,
    },
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the cache tier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket I/O failed.
    #[error("cache connection: {0}")]
    Io(#[from] std::io::Error),
}

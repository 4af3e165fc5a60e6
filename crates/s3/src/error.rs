/// What can go wrong outside a request (requests answer S3 errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A credentials file or setting could not be used.
    #[error("S3 credentials: {0}")]
    Credentials(String),
}

/// Errors of the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An unknown algorithm name.
    #[error(
        "unknown algorithm `{0}` (random, round-robin, least-conn, p2c, p2c-latency, load, hash)"
    )]
    Algorithm(String),
    /// No backends configured.
    #[error("a pool needs at least one backend")]
    NoBackends,
    /// A configuration that does not hold together.
    #[error("gateway config: {0}")]
    Config(String),
    /// Socket I/O.
    #[error("gateway: {0}")]
    Io(#[from] std::io::Error),
}

//! Cluster membership and placement for strata.
//!
//! Membership is static, the way memcached clients and HAProxy are configured:
//! a TOML cluster file ([`ClusterConfig`]) lists every [`Member`] with its
//! [`Role`] and address. Placement is pure computation with no async runtime:
//! [`rendezvous`] ranks members for a blob id (highest-random-weight hashing),
//! so that adding or removing a store moves only the blobs that must move.
//!
//! Errors are one enum, [`Error`].

pub mod auth;
mod config;
mod edge;
mod error;
mod gateway;
mod placement;
mod ring;

pub use config::{
    AuthConfig, CacheConfig, CacheMode, ClusterConfig, IndexBackend, IndexConfig, LimitsConfig,
    Member, PgSettings, ProxyConfig, QueueBackend, QueueConfig, Role, S3Config, S3Credential,
    SearchConfig, StoreConfig,
};
pub use edge::{AccessLogConfig, CertConfig, CompressionConfig, HeaderRules, TlsConfig};
pub use error::Error;
pub use gateway::{GatewayConfig, PoolConfig, ResolvedPool, RouteConfig, ALGORITHMS};
pub use placement::{rendezvous, rendezvous_score};
pub use ring::{key_point, Ring, DEFAULT_POINTS};

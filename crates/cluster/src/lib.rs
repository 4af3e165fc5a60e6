//! Cluster membership and placement for strata.
//!
//! Membership is static, the way memcached clients and HAProxy are configured:
//! a TOML cluster file ([`ClusterConfig`]) lists every [`Member`] with its
//! [`Role`] and address. Placement is pure computation with no async runtime:
//! [`rendezvous`] ranks members for a blob id (highest-random-weight hashing),
//! so that adding or removing a store moves only the blobs that must move;
//! [`Ring`] is the ketama ring of the cache members.
//!
//! The file's tables each have one `Default` and are parsed strictly
//! (unknown keys are errors naming the key): members and roles, `[gateway]`
//! ([`GatewayConfig`], checked against the whole file in `config`), the
//! edge settings ([`TlsConfig`], [`HeaderRules`], ...), and the PostgreSQL
//! settings of `[index]` and `[queue]`.
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

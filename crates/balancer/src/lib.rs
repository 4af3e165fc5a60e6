//! strata's gateway: a reverse proxy that spreads requests over request
//! nodes and keeps serving when some die or slow down.
//!
//! - [`Pool`] holds the [`Backend`]s of one pool and picks one per request
//!   with an [`Algorithm`]: random, smooth weighted round robin, least
//!   connections, power of two choices on in-flight requests, or a
//!   consistent hash of the request key with bounded load (so one image
//!   keeps going to the node whose cache holds it).
//! - [`health`] ejects a backend after consecutive failures, for a time
//!   that grows with each ejection, but never more than the pool's max
//!   ejection percent; below the panic threshold of healthy backends,
//!   traffic goes to all of them (ejecting slow nodes must not overload the
//!   rest into failing too).
//! - [`collapse::serve`] forwards HTTP/1.1 with pooled keep-alive upstream
//!   connections, streamed bodies, X-Forwarded-For/-Proto, hop-by-hop
//!   headers removed, and retries of idempotent requests on another backend
//!   after a connect error. It forwards only to its configured backends,
//!   whatever the Host header or an absolute-form URI names.
//!
//! - [`edge`]: access logs, header rules, compression, TLS termination
//!   with SNI, and HTTP/2 (ALPN `h2` and h2c) to clients.
//!
//! Errors are one enum, [`Error`].

pub mod admin;
mod conn;
pub mod direct;
pub mod edge;
mod error;
mod h1;
pub mod health;
mod listen;
pub mod monitor;
pub mod pool;
pub mod proxy;
mod relay;
pub mod router;
pub mod sticky;
mod upstream;

pub use edge::EdgeRules;
pub use error::Error;
pub use health::HealthOptions;
pub use hyper::header::HeaderName;
pub use hyper::Method;
pub use pool::{Algorithm, Backend, Pool};
pub use router::{Live, PoolSpec, Route, Router};

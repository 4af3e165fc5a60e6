//! strata's gateway: a reverse proxy that spreads requests over request
//! nodes and keeps serving when some die or slow down.
//!
//! The modules form layers; each uses only those above it in this list,
//! so the crate has no import cycle:
//!
//! - Pieces: [`body`] (the one boxed body type), `h1` (HTTP/1.1 framing:
//!   heads parsed and rewritten, hop-by-hop headers, the chunked
//!   follower), [`metrics`] (latency histogram, gauge guard), [`direct`]
//!   (what a backend in this process offers), [`edge`] (access logs,
//!   header rules, compression, TLS with SNI), [`sticky`] (signed cookies).
//! - One pool: [`Backend`] (`backend`: counters, health state, idle
//!   connections), `outlier` (passive ejection that grows with each
//!   ejection but never passes the pool's max ejection percent; below the
//!   panic threshold traffic goes to everyone, so ejecting slow nodes
//!   cannot overload the rest into failing), and [`Pool`], which picks a
//!   backend with an [`Algorithm`] (random, smooth weighted round robin,
//!   least connections, power of two choices on in-flight requests or
//!   latency, reported load, or a consistent hash of the path with bounded
//!   load so one image keeps going to the node whose cache holds it).
//! - In front of a pool: [`Gateway`] ([`gateway`]: settings, counters,
//!   rate limits, admission, stickiness, local backends); `conn` (dialling
//!   and the idle pool) and `upstream` (the body-less HTTP/1.1 client);
//!   [`health`] (active checks and load polling); [`proxy`] (forwarding on
//!   the full path: retries within a budget, hedging, only to configured
//!   backends whatever the Host header or an absolute-form URI names);
//!   [`monitor`] (status page and Prometheus text).
//! - Across pools: [`router`] ([`Router`]: L7 routes to pools, [`Live`]:
//!   the running configuration, swapped whole on reload) and [`admin`].
//! - Connections: `answer` (direct reads written to the client socket),
//!   `relay` (the HTTP/1.1 fast path, which hands a connection back when a
//!   request needs more), and `listen` ([`serve_routed`], [`serve_tls`],
//!   [`serve`]: accepting, the full path on hyper, HTTP/2 to clients).
//!
//! Errors are one enum, [`Error`].

pub mod admin;
mod answer;
mod backend;
pub mod body;
mod conn;
pub mod direct;
pub mod edge;
mod error;
pub mod gateway;
mod h1;
pub mod health;
mod listen;
pub mod metrics;
pub mod monitor;
mod outlier;
pub mod pool;
pub mod proxy;
mod relay;
pub mod router;
pub mod sticky;
mod upstream;

pub use edge::EdgeRules;
pub use error::Error;
pub use gateway::{Gateway, GatewayOptions};
pub use health::HealthOptions;
pub use hyper::header::HeaderName;
pub use hyper::Method;
pub use listen::{serve, serve_routed, serve_tls};
pub use pool::{Algorithm, Backend, Pool};
pub use router::{Live, PoolSpec, Route, Router};

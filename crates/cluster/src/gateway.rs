//! `[gateway]` of the cluster file: the gateway's pools, routes, health
//! checks, limits and stickiness.
//!
//! ```toml
//! [gateway]
//! algorithm = "hash"          # default for pools that name none
//! sticky = false              # signed cookie pinning a client to a node
//!
//! [[gateway.pool]]
//! name = "reads"
//! backends = ["node-1", "node-2", "127.0.0.1:9000"]   # member names or IP:PORT
//!
//! [[gateway.pool]]
//! name = "writes"
//! backends = ["node-3"]
//! algorithm = "least-conn"
//!
//! [[gateway.route]]
//! method = "PUT"
//! prefix = "/v1/"
//! pool = "writes"
//! ```
//!
//! Without pools, the gateway has one pool `nodes` with every `node`
//! member. Without routes, everything goes to the first pool.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::edge::{AccessLogConfig, CompressionConfig, HeaderRules, TlsConfig};

/// Algorithm names the gateway knows.
pub const ALGORITHMS: [&str; 8] = [
    "random",
    "round-robin",
    "rr",
    "least-conn",
    "p2c",
    "p2c-latency",
    "load",
    "hash",
];

/// `[gateway]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Selection algorithm of pools that name none: random, round-robin,
    /// least-conn, p2c, p2c-latency, load or hash. Default `hash` (the same
    /// image goes to the same node, so node caches do not all hold the
    /// same items).
    pub algorithm: String,
    /// Sticky sessions in pools that do not say: a cookie, signed with
    /// `auth.secret`, pins a client to a node. Default false.
    pub sticky: bool,
    /// Per-client-IP limit, requests per second; 0 = off (default).
    pub rate_limit: f64,
    /// Burst above the rate; 0 = one second's worth (default).
    pub burst: f64,
    /// Most requests in flight per backend; 0 = no limit (default).
    pub max_in_flight: usize,
    /// Requests that may wait for a busy backend. Default 100.
    pub queue: usize,
    /// Longest wait in that queue, ms, then 503. Default 1000.
    pub queue_timeout_ms: u64,
    /// Hedged GETs after this many ms without an answer; 0 = off (default).
    pub hedge_after_ms: u64,
    /// Connect timeout to a backend, ms. Default 1000.
    pub connect_timeout_ms: u64,
    /// A client connection without a complete request head for this long
    /// is closed, ms (idle keep-alive connections and slow heads). Default
    /// 60000.
    pub idle_timeout_ms: u64,
    /// Time to response headers, ms. Default 30000.
    pub first_byte_timeout_ms: u64,
    /// Other backends tried by an idempotent request. Default 2.
    pub retries: usize,
    /// Retries in flight at most this percent of requests in flight.
    /// Default 50: one dead backend of two has half the requests in flight,
    /// and each deserves its retry; a pool that fails entirely still sees
    /// at most 1.5 times its load.
    pub retry_budget_percent: u64,
    /// Active check (`GET /healthz`) interval, ms; 0 = off. Default 2000.
    pub check_interval_ms: u64,
    /// Active check timeout, ms. Default 1000.
    pub check_timeout_ms: u64,
    /// Failed checks that mark a backend down. Default 3.
    pub fall: u32,
    /// Passed checks that bring it back. Default 2.
    pub rise: u32,
    /// Consecutive 5xx or failed exchanges that eject a backend. Default 5.
    pub consecutive_failures: u32,
    /// First ejection, ms; the n-th lasts n times this. Default 10000.
    pub base_ejection_ms: u64,
    /// Longest ejection, ms. Default 300000.
    pub max_ejection_ms: u64,
    /// Most of a pool ejected at once, percent. Default 50.
    pub max_ejection_percent: u32,
    /// Below this share of eligible backends, send to all, percent.
    /// Default 50.
    pub panic_threshold_percent: u32,
    /// Ramp of a returning backend's share, ms; 0 = at once. Default 10000.
    pub slow_start_ms: u64,
    /// Latency outliers: EWMA above this many times the pool's median
    /// ejects; 0 = off. Default 5.
    pub outlier_factor: f64,
    /// Give every request an `X-Request-Id` (kept when the client sent
    /// one), passed upstream, returned and logged. Default false.
    pub request_id: bool,
    /// Header rules of every request, before its route's own.
    #[serde(default, skip_serializing_if = "HeaderRules::is_empty")]
    pub request_headers: HeaderRules,
    /// Header rules of every response, before its route's own.
    #[serde(default, skip_serializing_if = "HeaderRules::is_empty")]
    pub response_headers: HeaderRules,
    /// Response compression.
    pub compression: CompressionConfig,
    /// The access log; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogConfig>,
    /// TLS termination (and HTTP/2 by ALPN) on a second listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Pools; the first is the default.
    #[serde(default, rename = "pool")]
    pub pools: Vec<PoolConfig>,
    /// Rules, in order; the first match wins.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

/// `[[gateway.pool]]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Name, used by routes.
    pub name: String,
    /// Member names (role `node`) or `IP:PORT` addresses.
    pub backends: Vec<String>,
    /// Weights, one per backend (round robin); default all 1.
    #[serde(default)]
    pub weights: Vec<u32>,
    /// Algorithm; default `gateway.algorithm`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// Sticky sessions; default `gateway.sticky`.
    #[serde(default)]
    pub sticky: Option<bool>,
}

/// `[[gateway.route]]`: every condition given must hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The path starts with this. Default `/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The method is this (e.g. `PUT`); default any.
    #[serde(default)]
    pub method: Option<String>,
    /// `Name: value`: the header has exactly this value; default any.
    #[serde(default)]
    pub header: Option<String>,
    /// The pool it sends to.
    pub pool: String,
    /// Header rules of requests it takes (after the gateway-wide ones).
    #[serde(default, skip_serializing_if = "HeaderRules::is_empty")]
    pub request_headers: HeaderRules,
    /// Header rules of their responses (after the gateway-wide ones).
    #[serde(default, skip_serializing_if = "HeaderRules::is_empty")]
    pub response_headers: HeaderRules,
    /// Compress its responses; default `gateway.compression.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<bool>,
    /// Give its requests an id; default `gateway.request_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<bool>,
}

impl Default for GatewayConfig {
    /// An empty `[gateway]` table (the README's table states the same).
    fn default() -> Self {
        GatewayConfig {
            algorithm: "hash".into(),
            sticky: false,
            rate_limit: 0.0,
            burst: 0.0,
            max_in_flight: 0,
            queue: 100,
            queue_timeout_ms: 1000,
            hedge_after_ms: 0,
            connect_timeout_ms: 1000,
            idle_timeout_ms: 60_000,
            first_byte_timeout_ms: 30_000,
            retries: 2,
            retry_budget_percent: 50,
            check_interval_ms: 2000,
            check_timeout_ms: 1000,
            fall: 3,
            rise: 2,
            consecutive_failures: 5,
            base_ejection_ms: 10_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50,
            panic_threshold_percent: 50,
            slow_start_ms: 10_000,
            outlier_factor: 5.0,
            request_id: false,
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
            compression: CompressionConfig::default(),
            access_log: None,
            tls: None,
            pools: Vec::new(),
            routes: Vec::new(),
        }
    }
}

fn default_prefix() -> String {
    "/".into()
}

/// A pool with its backends resolved to addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPool {
    /// Name.
    pub name: String,
    /// (address, weight) per backend.
    pub backends: Vec<(SocketAddr, u32)>,
    /// Algorithm name.
    pub algorithm: String,
    /// Sticky sessions on.
    pub sticky: bool,
}

#[cfg(test)]
mod tests;

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

use crate::config::{ClusterConfig, Role};
use crate::edge::{AccessLogConfig, CompressionConfig, HeaderRules, TlsConfig};
use crate::Error;

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

impl GatewayConfig {
    /// The pools with member names resolved against `cfg`; one pool `nodes`
    /// of every node member when none is configured.
    pub fn resolve(&self, cfg: &ClusterConfig) -> Result<Vec<ResolvedPool>, Error> {
        if self.pools.is_empty() {
            return Ok(vec![ResolvedPool {
                name: "nodes".into(),
                backends: cfg.members_with(Role::Node).map(|m| (m.addr, 1)).collect(),
                algorithm: self.algorithm.clone(),
                sticky: self.sticky,
            }]);
        }
        let mut out = Vec::new();
        for (i, p) in self.pools.iter().enumerate() {
            let mut backends = Vec::new();
            for (j, b) in p.backends.iter().enumerate() {
                let addr = match cfg.members.iter().find(|m| m.name == *b) {
                    Some(m) if m.role == Role::Node => m.addr,
                    Some(m) => {
                        return Err(invalid(
                            format!("gateway.pool[{i}].backends[{j}]"),
                            format!("member `{b}` has role `{}`, not `node`", m.role.as_str()),
                        ))
                    }
                    None => b.parse::<SocketAddr>().map_err(|_| {
                        invalid(
                            format!("gateway.pool[{i}].backends[{j}]"),
                            format!("`{b}` is neither a member name nor IP:PORT"),
                        )
                    })?,
                };
                backends.push((addr, p.weights.get(j).copied().unwrap_or(1)));
            }
            out.push(ResolvedPool {
                name: p.name.clone(),
                backends,
                algorithm: p
                    .algorithm
                    .clone()
                    .unwrap_or_else(|| self.algorithm.clone()),
                sticky: p.sticky.unwrap_or(self.sticky),
            });
        }
        Ok(out)
    }

    /// Checks ranges and references; every error names its key.
    pub fn validate(&self, cfg: &ClusterConfig) -> Result<(), Error> {
        let bad = |key: &str, reason: &str| Err(invalid(format!("gateway.{key}"), reason.into()));
        let algo_ok = |a: &str| ALGORITHMS.contains(&a);
        if !algo_ok(&self.algorithm) {
            return bad(
                "algorithm",
                &format!(
                    "unknown `{}`; one of {}",
                    self.algorithm,
                    ALGORITHMS.join(", ")
                ),
            );
        }
        for (key, v) in [("rate_limit", self.rate_limit), ("burst", self.burst)] {
            if v.is_nan() || v < 0.0 {
                return bad(key, "must be 0 (off) or positive");
            }
        }
        for (key, v) in [
            ("queue_timeout_ms", self.queue_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("first_byte_timeout_ms", self.first_byte_timeout_ms),
            ("check_timeout_ms", self.check_timeout_ms),
        ] {
            if v == 0 {
                return bad(key, "a timeout must be at least 1 ms");
            }
        }
        for (key, v) in [
            ("fall", self.fall),
            ("rise", self.rise),
            ("consecutive_failures", self.consecutive_failures),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1");
            }
        }
        for (key, v) in [
            ("max_ejection_percent", self.max_ejection_percent),
            ("panic_threshold_percent", self.panic_threshold_percent),
        ] {
            if v > 100 {
                return bad(key, "a percentage must be 0..=100");
            }
        }
        if self.outlier_factor != 0.0
            && (self.outlier_factor.is_nan() || self.outlier_factor <= 1.0)
        {
            return bad("outlier_factor", "must be 0 (off) or greater than 1");
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.pools.iter().enumerate() {
            let key = format!("pool[{i}]");
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return bad(&format!("{key}.name"), "must be non-empty and unique");
            }
            if p.backends.is_empty() {
                return bad(
                    &format!("{key}.backends"),
                    "a pool needs at least one backend",
                );
            }
            if !p.weights.is_empty() && p.weights.len() != p.backends.len() {
                return bad(&format!("{key}.weights"), "one weight per backend");
            }
            if p.weights.contains(&0) {
                return bad(&format!("{key}.weights"), "weights must be at least 1");
            }
            if p.algorithm.as_deref().is_some_and(|a| !algo_ok(a)) {
                return bad(
                    &format!("{key}.algorithm"),
                    &format!(
                        "unknown `{}`; one of {}",
                        p.algorithm.as_deref().unwrap_or(""),
                        ALGORITHMS.join(", ")
                    ),
                );
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("route[{i}]");
            if !r.prefix.starts_with('/') {
                return bad(&format!("{key}.prefix"), "must start with /");
            }
            // Without pools there is one, `nodes` (routes may still name it,
            // for their header rules).
            let implicit = self.pools.is_empty() && r.pool == "nodes";
            if !implicit && !self.pools.iter().any(|p| p.name == r.pool) {
                return bad(
                    &format!("{key}.pool"),
                    &format!("no pool named `{}`", r.pool),
                );
            }
            if let Some(m) = &r.method {
                if m.is_empty() || !m.chars().all(|c| c.is_ascii_uppercase()) {
                    return bad(
                        &format!("{key}.method"),
                        "must be an upper-case HTTP method",
                    );
                }
            }
            if let Some(h) = &r.header {
                let ok = h.split_once(':').is_some_and(|(n, _)| {
                    !n.trim().is_empty()
                        && n.trim()
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
                if !ok {
                    return bad(&format!("{key}.header"), "must be `Name: value`");
                }
            }
        }
        crate::edge::validate(self)?;
        let sticky = self.sticky || self.pools.iter().any(|p| p.sticky == Some(true));
        if sticky && cfg.auth.secret.is_none() {
            return Err(invalid(
                "auth.secret".into(),
                "required when gateway.sticky is on (it signs the cookie)".into(),
            ));
        }
        self.resolve(cfg).map(|_| ())
    }
}

fn invalid(key: String, reason: String) -> Error {
    Error::Invalid { key, reason }
}

#[cfg(test)]
mod tests;

//! `[gateway]` checked against the rest of the cluster file: pools
//! resolved to member addresses, algorithms, limits, routes, the edge
//! settings and stickiness. The tables themselves are `crate::gateway`
//! and `crate::edge`, which know nothing of the whole file.

use std::net::SocketAddr;

use super::{ClusterConfig, Role};
use crate::gateway::{GatewayConfig, ResolvedPool, ALGORITHMS};
use crate::Error;

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
        validate_edge(self)?;
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

/// Checks the edge settings of `[gateway]` and its routes.
fn validate_edge(g: &GatewayConfig) -> Result<(), Error> {
    g.request_headers.validate("gateway.request_headers")?;
    g.response_headers.validate("gateway.response_headers")?;
    for (i, r) in g.routes.iter().enumerate() {
        r.request_headers
            .validate(&format!("gateway.route[{i}].request_headers"))?;
        r.response_headers
            .validate(&format!("gateway.route[{i}].response_headers"))?;
    }
    let c = &g.compression;
    let key = |k: &str| format!("gateway.compression.{k}");
    if c.codings.is_empty() {
        return Err(invalid(
            key("codings"),
            "name at least one of br, gzip".into(),
        ));
    }
    for (i, cd) in c.codings.iter().enumerate() {
        if cd != "br" && cd != "gzip" {
            return Err(invalid(
                format!("gateway.compression.codings[{i}]"),
                format!("unknown `{cd}`; br or gzip"),
            ));
        }
    }
    if !(1..=9).contains(&c.gzip_level) {
        return Err(invalid(key("gzip_level"), "must be 1..=9".into()));
    }
    if c.brotli_quality > 11 {
        return Err(invalid(key("brotli_quality"), "must be 0..=11".into()));
    }
    if let Some(types) = &c.types {
        if let Some(i) = types.iter().position(|t| t.is_empty() || t.contains(' ')) {
            return Err(invalid(
                format!("gateway.compression.types[{i}]"),
                "must be a content type like `text/` or `application/json`".into(),
            ));
        }
    }
    if let Some(a) = &g.access_log {
        if a.path.is_empty() {
            return Err(invalid(
                "gateway.access_log.path".into(),
                "a file path or `-` for stdout".into(),
            ));
        }
        if a.format != "combined" && a.format != "json" {
            return Err(invalid(
                "gateway.access_log.format".into(),
                format!("unknown `{}`; combined or json", a.format),
            ));
        }
        if a.buffer_bytes < 4096 {
            return Err(invalid(
                "gateway.access_log.buffer_bytes".into(),
                "must be at least 4096 (a few lines)".into(),
            ));
        }
    }
    if let Some(t) = &g.tls {
        if t.certs.is_empty() {
            return Err(invalid(
                "gateway.tls.cert".into(),
                "at least one [[gateway.tls.cert]] with cert and key files".into(),
            ));
        }
    }
    Ok(())
}

fn invalid(key: String, reason: String) -> Error {
    Error::Invalid { key, reason }
}

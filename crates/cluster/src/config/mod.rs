//! The cluster file: members, replication and the limits every role applies.
//!
//! Parse -> validate -> share behind an `Arc`. Every table denies unknown
//! keys so that a typo is an error naming the key rather than a silently
//! ignored setting.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Largest body a needle can hold: the needle map keeps the data size in
/// 27 bits (see docs/formats.md), so one blob stays below 2^27 bytes and
/// larger bodies are stored in chunks (`limits.chunk_mb`).
pub const MAX_BODY_CEILING: u64 = (1 << 27) - 64;

/// The whole cluster file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Copies of each blob written on PUT (R). Default: 1 with one store,
    /// 2 when the cluster has two or more stores.
    #[serde(default)]
    pub replicas: Option<usize>,
    /// Write authorisation.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Request limits applied by request nodes.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Volume settings applied by store roles.
    #[serde(default)]
    pub store: StoreConfig,
    /// Cache tier settings (cache members and request nodes).
    #[serde(default)]
    pub cache: CacheConfig,
    /// Collapsed forwarding on the request nodes' miss path.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// The gateway: pools, routes, health, limits, stickiness.
    #[serde(default)]
    pub gateway: crate::gateway::GatewayConfig,
    /// The job queue and the nodes' upload workers.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Full-text search over book pages.
    #[serde(default)]
    pub search: SearchConfig,
    /// Where the name index lives: an index member (redb) or PostgreSQL.
    #[serde(default)]
    pub index: IndexConfig,
    /// The S3-compatible API.
    #[serde(default)]
    pub s3: S3Config,
    /// The web console.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Every process of the cluster.
    #[serde(default, rename = "member")]
    pub members: Vec<Member>,
}

mod gateway;
mod index;
mod member;
mod tables;
#[cfg(test)]
mod tests;

use index::validate_pg;
pub use index::{IndexBackend, IndexConfig, PgSettings};
pub use member::{Member, Role};
pub use tables::{
    AuthConfig, CacheConfig, CacheMode, ConsoleConfig, LimitsConfig, ProxyConfig, QueueBackend,
    QueueConfig, S3Config, S3Credential, SearchConfig, StoreConfig,
};

impl ClusterConfig {
    /// Reads, parses and validates a cluster file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            Error::Parse { message, .. } => Error::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates cluster-file text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let cfg: ClusterConfig = toml::from_str(text).map_err(|e| Error::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and consistency; every error names its key.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, reason: String| {
            Err(Error::Invalid {
                key: key.into(),
                reason,
            })
        };
        // A chunk is one needle (MAX_BODY_CEILING), with room to spare.
        if !(1..=100).contains(&self.limits.chunk_mb)
            || self.limits.chunk_mb << 20 > MAX_BODY_CEILING
        {
            return bad("limits.chunk_mb", "must be between 1 and 100".into());
        }
        let s3_nodes = self
            .members_with(Role::Node)
            .filter(|m| m.s3_addr.is_some())
            .count();
        for m in &self.members {
            if m.s3_addr.is_some() && !matches!(m.role, Role::Node | Role::Gateway) {
                return bad(
                    &format!("member.{}.s3_addr", m.name),
                    "only node members serve the S3 API, and gateways balance it".into(),
                );
            }
            if m.s3_addr.is_some() && m.role == Role::Gateway && s3_nodes == 0 {
                return bad(
                    &format!("member.{}.s3_addr", m.name),
                    "no node member has an s3_addr to balance across".into(),
                );
            }
            if m.s3_addr.is_some() && self.s3.credentials.is_empty() {
                return bad(
                    &format!("member.{}.s3_addr", m.name),
                    "needs at least one [[s3.credentials]]".into(),
                );
            }
        }
        if !(100..=60_000).contains(&self.console.sample_ms) {
            return bad("console.sample_ms", "must be 100..=60000".into());
        }
        if self.s3.abandoned_upload_secs == 0 {
            return bad("s3.abandoned_upload_secs", "must be at least 1".into());
        }
        for c in &self.s3.credentials {
            if c.access_key.is_empty() || c.access_key.len() > 128 {
                return bad(
                    "s3.credentials.access_key",
                    "must be 1 to 128 characters".into(),
                );
            }
            if c.secret_env.is_some() == c.secret_file.is_some() {
                return bad(
                    &format!("s3.credentials.{}", c.access_key),
                    "needs exactly one of secret_env and secret_file".into(),
                );
            }
        }
        if self.limits.max_body_bytes == 0 {
            return bad("limits.max_body_bytes", "must be at least 1".into());
        }
        let l = &self.limits;
        if l.max_connections == 0 {
            return bad("limits.max_connections", "must be at least 1".into());
        }
        if l.header_timeout_ms == 0 {
            return bad("limits.header_timeout_ms", "must be at least 1".into());
        }
        if !(8192..=1 << 20).contains(&l.max_header_bytes) {
            return bad(
                "limits.max_header_bytes",
                "must be between 8192 and 1048576".into(),
            );
        }
        if !(1..=1000).contains(&l.max_headers) {
            return bad("limits.max_headers", "must be between 1 and 1000".into());
        }
        if self.store.volume_bytes < 1 << 20 {
            return bad(
                "store.volume_bytes",
                "must be at least 1048576 (1 MiB)".into(),
            );
        }
        if !(self.store.compact_garbage_ratio > 0.0 && self.store.compact_garbage_ratio < 1.0) {
            return bad("store.compact_garbage_ratio", "must be in (0, 1)".into());
        }
        if self.cache.memory_mb == 0 {
            return bad("cache.memory_mb", "must be at least 1".into());
        }
        if self.cache.item_max == 0 || self.cache.item_max > self.cache.memory_mb << 20 {
            return bad(
                "cache.item_max",
                "must be between 1 and the cache memory".into(),
            );
        }
        if self.cache.hot_replicas == 0 {
            return bad("cache.hot_replicas", "must be at least 1".into());
        }
        let b = self.cache.bounded_load;
        if b != 0.0 && (b.is_nan() || b <= 1.0) {
            return bad(
                "cache.bounded_load",
                "must be 0 (off) or greater than 1".into(),
            );
        }
        if self.queue.max_payload_mb == 0 || self.queue.max_payload_mb > 1024 {
            return bad("queue.max_payload_mb", "must be between 1 and 1024".into());
        }
        if self
            .queue
            .thumbnail_widths
            .iter()
            .any(|&w| w == 0 || w > 8192)
        {
            return bad("queue.thumbnail_widths", "widths must be 1..=8192".into());
        }
        let s = &self.search;
        if s.timeout_ms == 0 {
            return bad("search.timeout_ms", "must be at least 1".into());
        }
        if s.writer_threads == 0 || s.writer_threads > 16 {
            return bad("search.writer_threads", "must be between 1 and 16".into());
        }
        if s.writer_mb < 16 * s.writer_threads || s.writer_mb > 16_384 {
            return bad(
                "search.writer_mb",
                "must be at least 16 per writer thread and at most 16384".into(),
            );
        }
        if s.serve_shards == 0 || s.serve_shards > 64 {
            return bad("search.serve_shards", "must be between 1 and 64".into());
        }
        if let Some(r) = s.replicas {
            let members = self.members_with(Role::Search).count();
            if r == 0 || (members > 0 && r > members) {
                return bad(
                    "search.replicas",
                    format!("must be between 1 and the {members} search members"),
                );
            }
        }
        if self.queue.attempts == 0 {
            return bad("queue.attempts", "must be at least 1".into());
        }
        let pg_queue = self.queue.backend == QueueBackend::Postgres;
        if self.members_with(Role::Search).count() > 0
            && self.members_with(Role::Queue).count() == 0
            && !pg_queue
        {
            return bad(
                "member",
                "`search` members need a queue (a `queue` member or queue.backend = \"postgres\"): pages are indexed through it".into(),
            );
        }
        if pg_queue {
            validate_pg(self.queue.pg())?;
        } else {
            if self.members_with(Role::Queue).count() > 1 {
                return bad(
                    "member",
                    "at most one `queue` member with the built-in broker (queue.backend = \"postgres\" allows several fronts)".into(),
                );
            }
            if self.queue.url.is_some() {
                return bad("queue.url", "only used with backend = \"postgres\"".into());
            }
        }
        if self.cache.session_ttl_secs == 0 {
            return bad("cache.session_ttl_secs", "must be at least 1".into());
        }
        if self.cache.down_after == 0 {
            return bad("cache.down_after", "must be at least 1".into());
        }
        if self.cache.timeout_ms == 0 {
            return bad("cache.timeout_ms", "must be at least 1".into());
        }
        if self.store.checkpoint_every == 0 {
            return bad("store.checkpoint_every", "must be at least 1".into());
        }
        for (key, t) in [
            ("auth.write_token", &self.auth.write_token),
            ("auth.admin_token", &self.auth.admin_token),
            ("auth.secret", &self.auth.secret),
        ] {
            if let Some(t) = t {
                if t.is_empty() || t.chars().any(|c| c.is_control() || c == ' ') {
                    return bad(key, "must be non-empty printable without spaces".into());
                }
            }
        }
        self.gateway.validate(self)?;
        let mut names = std::collections::HashSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return bad(
                    &format!("member[{i}].name"),
                    "must be non-empty ASCII letters, digits, '-', '_' or '.'".into(),
                );
            }
            if !names.insert(m.name.as_str()) {
                return bad(
                    &format!("member[{i}].name"),
                    format!("duplicate name `{}`", m.name),
                );
            }
            if m.is_internal() && !m.listen_addr().ip().is_loopback() && self.auth.secret.is_none()
            {
                return bad(
                    &format!("member[{i}].bind"),
                    format!(
                        "`{}` would expose the internal `{}` API to other machines: set auth.secret",
                        m.listen_addr(),
                        m.role.as_str()
                    ),
                );
            }
            if m.max_bytes.is_some() && m.role != Role::Store {
                return bad(
                    &format!("member[{i}].max_bytes"),
                    "only `store` members have a capacity".into(),
                );
            }
            let needs_dir = matches!(m.role, Role::Store | Role::Index | Role::Search)
                || (m.role == Role::Queue && !pg_queue)
                || (m.role == Role::Node && self.cache.local_disk_mb > 0);
            if needs_dir && m.data_dir.is_none() {
                return bad(
                    &format!("member[{i}].data_dir"),
                    format!("required for role `{}`", m.role.as_str()),
                );
            }
        }
        let stores = self.members_with(Role::Store).count();
        if let Some(r) = self.replicas {
            if r == 0 || (stores > 0 && r > stores) {
                return bad(
                    "replicas",
                    format!("must be between 1 and the number of stores ({stores})"),
                );
            }
        }
        // A gateway-only file (a balancer in front of other servers) needs
        // no index; a cluster with data roles needs exactly one.
        let data_roles = self
            .members
            .iter()
            .any(|m| matches!(m.role, Role::Store | Role::Node | Role::Index));
        if self.index.backend == IndexBackend::Redb && self.index.url.is_some() {
            return bad("index.url", "only used with backend = \"postgres\"".into());
        }
        let ix = &self.index;
        match ix.backend {
            IndexBackend::Redb => {
                if data_roles && self.members_with(Role::Index).count() != 1 {
                    return bad(
                        "member",
                        "the cluster needs exactly one `index` member (or index.backend = \"postgres\")".into(),
                    );
                }
            }
            IndexBackend::Postgres => {
                validate_pg(ix.pg())?;
                if self.members_with(Role::Index).count() > 0 {
                    return bad(
                        "member",
                        "with index.backend = \"postgres\" the nodes keep the names in PostgreSQL: remove the `index` member".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// Members of one role, in file order.
    pub fn members_with(&self, role: Role) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.role == role)
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Result<&Member, Error> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::UnknownMember(name.to_owned()))
    }

    /// R: the configured value, or 1 with one store and 2 with more.
    pub fn effective_replicas(&self) -> usize {
        self.replicas.unwrap_or_else(|| {
            if self.members_with(Role::Store).count() >= 2 {
                2
            } else {
                1
            }
        })
    }
}

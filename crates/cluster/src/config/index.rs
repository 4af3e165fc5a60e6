//! `[index]`: where the name index lives (an index member, or
//! PostgreSQL), and the PostgreSQL settings `[index]` and `[queue]` share.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// `[index]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// `redb` (an `index` member holds the names in a redb file; `serve`
    /// always uses redb) or `postgres` (nodes keep them in PostgreSQL and
    /// no index member runs). Default `redb`.
    pub backend: IndexBackend,
    /// With `postgres`: the database URL, several hosts allowed, e.g.
    /// `postgres://strata@db1:5432,db2:5432/strata?target_session_attrs=read-write`.
    /// Never a password: see `password_env` and `password_file`.
    pub url: Option<String>,
    /// Name of the environment variable holding the database password.
    pub password_env: Option<String>,
    /// File holding the database password (one line).
    pub password_file: Option<PathBuf>,
    /// Connections per node. Default 16.
    pub pool_size: usize,
    /// Server-side limit per statement, milliseconds. Default 5000.
    pub statement_timeout_ms: u64,
    /// Client-side limit per call (and per connection attempt),
    /// milliseconds: a database machine that vanished is given up on
    /// then. Default 5000.
    pub call_timeout_ms: u64,
    /// How long a request keeps retrying while no server accepts writes
    /// (the primary is lost and the standby not yet promoted),
    /// milliseconds. Default 30000.
    pub failover_wait_ms: u64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            backend: IndexBackend::Redb,
            url: None,
            password_env: None,
            password_file: None,
            pool_size: 16,
            statement_timeout_ms: 5000,
            call_timeout_ms: 5000,
            failover_wait_ms: 30_000,
        }
    }
}

/// `index.backend`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexBackend {
    /// An index member's redb file.
    #[default]
    Redb,
    /// PostgreSQL, reached by every node.
    Postgres,
}

/// The PostgreSQL settings of `[index]` or `[queue]`, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct PgSettings<'a> {
    /// `index` or `queue`.
    pub table: &'static str,
    /// The URL.
    pub url: Option<&'a str>,
    /// Environment variable with the password.
    pub password_env: Option<&'a str>,
    /// File with the password.
    pub password_file: Option<&'a Path>,
    /// Connections per process.
    pub pool_size: usize,
    /// Server-side statement limit, ms.
    pub statement_timeout_ms: u64,
    /// Client-side call limit, ms.
    pub call_timeout_ms: u64,
    /// Retry window across a failover, ms.
    pub failover_wait_ms: u64,
}

impl IndexConfig {
    /// The PostgreSQL settings of this table.
    pub fn pg(&self) -> PgSettings<'_> {
        PgSettings {
            table: "index",
            url: self.url.as_deref(),
            password_env: self.password_env.as_deref(),
            password_file: self.password_file.as_deref(),
            pool_size: self.pool_size,
            statement_timeout_ms: self.statement_timeout_ms,
            call_timeout_ms: self.call_timeout_ms,
            failover_wait_ms: self.failover_wait_ms,
        }
    }
}

/// Checks PostgreSQL settings (when the table's backend is PostgreSQL);
/// errors name the key.
pub(crate) fn validate_pg(p: PgSettings<'_>) -> Result<(), Error> {
    let table = p.table;
    let bad = |key: &str, reason: &str| {
        Err(Error::Invalid {
            key: format!("{table}.{key}"),
            reason: reason.into(),
        })
    };
    let Some(url) = p.url else {
        return bad("url", "required with backend = \"postgres\"");
    };
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return bad("url", "must start with postgres://");
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            return bad(
                "url",
                "holds a password: put it in password_env or password_file, never in the cluster file",
            );
        }
    }
    if url.contains("password=") {
        return bad(
            "url",
            "holds a password: put it in password_env or password_file, never in the cluster file",
        );
    }
    if !(1..=1000).contains(&p.pool_size) {
        return bad("pool_size", "must be between 1 and 1000");
    }
    for (key, v) in [
        ("statement_timeout_ms", p.statement_timeout_ms),
        ("call_timeout_ms", p.call_timeout_ms),
        ("failover_wait_ms", p.failover_wait_ms),
    ] {
        if v == 0 {
            return bad(key, "must be at least 1");
        }
    }
    if p.password_env.is_some() && p.password_file.is_some() {
        return bad(
            "password_env",
            "set password_env or password_file, not both",
        );
    }
    Ok(())
}

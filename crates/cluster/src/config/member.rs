//! `[[member]]`: one process of the cluster, its role and addresses.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One process of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Unique name, used by `--name` and recorded in blob replicas.
    pub name: String,
    /// What the process does.
    pub role: Role,
    /// Address it listens on, `IP:PORT`.
    pub addr: SocketAddr,
    /// Data directory, required for `store`, `index`, `queue` and `search`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// A `queue` member's beanstalkd-protocol address (optional).
    #[serde(default)]
    pub beanstalk_addr: Option<SocketAddr>,
    /// A `node` member also serves the S3 API here (optional; needs
    /// `[[s3.credentials]]`); a `gateway` member balances S3 requests here
    /// across the nodes' `s3_addr`s.
    #[serde(default)]
    pub s3_addr: Option<SocketAddr>,
    /// The address to listen on, when it differs from `addr` (behind NAT,
    /// or `0.0.0.0:PORT`). Default: `addr` for nodes and gateways; for the
    /// internal roles (store, index, cache, queue, search) the loopback
    /// address with `addr`'s port, so that they are never reachable from
    /// other machines unless this is set. A non-loopback `bind` of an
    /// internal role needs `auth.secret`.
    #[serde(default)]
    pub bind: Option<SocketAddr>,
    /// A `store` member's capacity: past this many bytes of volumes it
    /// refuses new blobs (507) and writers place them elsewhere; reads and
    /// deletes go on. Default: no limit.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

impl Member {
    /// True for the roles only other roles talk to.
    pub fn is_internal(&self) -> bool {
        matches!(
            self.role,
            Role::Store | Role::Index | Role::Cache | Role::Queue | Role::Search
        )
    }

    /// Where the process listens: `bind`, else `addr` for public roles
    /// and loopback with `addr`'s port for internal ones.
    pub fn listen_addr(&self) -> SocketAddr {
        match self.bind {
            Some(b) => b,
            None if self.is_internal() && !self.addr.ip().is_loopback() => {
                let lo: std::net::IpAddr = if self.addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                };
                SocketAddr::new(lo, self.addr.port())
            }
            None => self.addr,
        }
    }
}

/// The roles built so far.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Blob volumes (layer 1 of the index: blob id -> volume offset).
    Store,
    /// Name index (layer 0: key -> blob metadata).
    Index,
    /// Public HTTP API.
    Node,
    /// memcached-protocol cache server (the distributed cache).
    Cache,
    /// Load balancer and reverse proxy in front of the nodes.
    Gateway,
    /// Durable job queue (HTTP API, optional beanstalkd protocol).
    Queue,
    /// A shard of the full-text index of book pages.
    Search,
}

impl Role {
    /// The lowercase name used in the cluster file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Store => "store",
            Role::Index => "index",
            Role::Node => "node",
            Role::Cache => "cache",
            Role::Gateway => "gateway",
            Role::Queue => "queue",
            Role::Search => "search",
        }
    }
}

//! The cluster file: members, replication and the limits every role applies.
//!
//! Parse -> validate -> share behind an `Arc`. Every table denies unknown
//! keys so that a typo is an error naming the key rather than a silently
//! ignored setting.

use std::net::SocketAddr;
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
    /// Every process of the cluster.
    #[serde(default, rename = "member")]
    pub members: Vec<Member>,
}

/// `[auth]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// When set, PUT and DELETE need `Authorization: Bearer <token>`.
    /// GET stays public. Default: unset (writes are open).
    #[serde(default)]
    pub write_token: Option<String>,
    /// The cluster secret: signs the gateway's sticky-session cookies so
    /// that a client cannot choose its node. Required with sticky
    /// sessions; keep it the same on every gateway.
    #[serde(default)]
    pub secret: Option<String>,
    /// Bearer token of the gateway's admin API (add, remove, drain
    /// backends). Default: unset, the admin API is off.
    #[serde(default)]
    pub admin_token: Option<String>,
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted upload body, in bytes. Default 5 TiB
    /// (5497558138880), S3's largest object.
    pub max_body_bytes: u64,
    /// Bodies longer than this are stored as chunks of this size, each a
    /// replicated blob, plus a manifest (both APIs). MiB, 1 to 100: a
    /// chunk must fit one needle. Default 64.
    pub chunk_mb: u64,
    /// Most open client connections per HTTP role (node, store, index,
    /// queue, search, gateway); further connections wait in the listen
    /// backlog until one closes. Default 10000.
    pub max_connections: usize,
    /// A request head (line and headers) must arrive whole within this
    /// time, or the connection is closed: a slowloris client cannot hold
    /// a connection by trickling bytes. On the roles' own listeners it
    /// also closes keep-alive connections idle this long. Milliseconds,
    /// default 20000.
    pub header_timeout_ms: u64,
    /// Largest request head, bytes; larger gets 431. Default 65536.
    pub max_header_bytes: usize,
    /// Most request headers; more gets 431. Default 100.
    pub max_headers: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 5 << 40,
            chunk_mb: 64,
            max_connections: 10_000,
            header_timeout_ms: 20_000,
            max_header_bytes: 64 << 10,
            max_headers: 100,
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// A volume file is sealed and a new one started once it reaches this
    /// size, in bytes. Default 4 GiB (4294967296).
    pub volume_bytes: u64,
    /// A sealed volume is compacted when this fraction of its bytes is
    /// garbage (deleted or overwritten needles). Default 0.3.
    pub compact_garbage_ratio: f64,
    /// Needles appended between two checkpoints of the needle map to the
    /// volume's index file. Default 4096.
    pub checkpoint_every: u64,
    /// A store unreachable (to the nodes' health checks) this long is
    /// declared dead: each blob it held gets a new copy on another store,
    /// through repair jobs on the queue. Milliseconds; 0 = never. Default
    /// 600000 (10 minutes).
    pub dead_after_ms: u64,
    /// Each store reads back and verifies all its blobs this often and
    /// queues the repair of any bad needle from a good replica. Seconds;
    /// 0 = never (`POST /admin/scrub` still runs one). Default 604800
    /// (weekly).
    pub scrub_interval_secs: u64,
    /// Garbage collection: each store deletes the live copies no index
    /// entry names (left by a store that was dead while its blobs moved,
    /// by hedged writes, by failed overwrites) once they have been
    /// unnamed for this long and were written at least this long ago, so
    /// that a write still on its way to the index is never touched.
    /// Seconds. Default 3600.
    pub gc_grace_secs: u64,
    /// How often each store runs a collection pass. Seconds; 0 = never
    /// (`POST /admin/gc` still runs one). Default 21600 (6 hours).
    pub gc_interval_secs: u64,
    /// A node's read or write to a store with no answer after this long
    /// (plus the blob's transfer time at 50 MB/s) is also sent to the next
    /// replica or store, and the first answers win: a hung store costs
    /// this delay instead of a timeout. Milliseconds; 0 = off. Default 250.
    pub hedge_after_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            volume_bytes: 4 << 30,
            compact_garbage_ratio: 0.3,
            checkpoint_every: 4096,
            dead_after_ms: 600_000,
            scrub_interval_secs: 604_800,
            gc_grace_secs: 3600,
            gc_interval_secs: 21_600,
            hedge_after_ms: 250,
        }
    }
}

/// `[cache]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether request nodes use the cache tiers at all (and whether `serve`
    /// runs a cache node). Default true.
    pub enabled: bool,
    /// Memory of each cache member, MiB, per-item overhead included.
    /// Default 64.
    pub memory_mb: usize,
    /// Largest cached value, bytes. Default 1048576 (1 MiB).
    pub item_max: usize,
    /// `aside` (the node fills the cache after an origin read) or
    /// `through` (the cache member reads blob bytes from the stores itself
    /// on a miss, one origin read per key). Default `aside`.
    pub mode: CacheMode,
    /// Copies of a hot key in the distributed cache. Default 2.
    pub hot_replicas: usize,
    /// Reads of one key per second, on one node, that make it hot.
    /// Default 50.
    pub hot_threshold: u32,
    /// Each request node's local (in-process) cache, MiB; 0 disables it.
    /// Default 32.
    pub local_memory_mb: usize,
    /// Each request node's local disk tier, MiB, under `<data_dir>/cache` of
    /// the node member (which then needs a `data_dir`); 0 disables it.
    /// Survives restarts. Default 0.
    pub local_disk_mb: u64,
    /// Seconds a node-local copy of a key's metadata is trusted. This is the
    /// longest time another node can serve a value replaced elsewhere.
    /// Default 2.
    pub meta_ttl_secs: u32,
    /// Keys whose metadata and response header lines each request node
    /// keeps ready to answer with (the ready set, ~0.5 KiB per key; in
    /// `serve` its nodes share one). 0 disables it. Default 131072.
    pub ready_entries: usize,
    /// Bounded-load factor for reads of non-hot keys (consistent hashing
    /// with bounded loads): a member with more than this many times the
    /// average requests in flight is skipped. 0 = off. Default 0.
    pub bounded_load: f64,
    /// Cache request timeout, ms. Default 200.
    pub timeout_ms: u64,
    /// Consecutive failures that mark a cache member down. Default 3.
    pub down_after: u32,
    /// How long a down member is skipped before it is tried again, ms.
    /// Default 2000.
    pub retry_after_ms: u64,
    /// Seconds a session (`/v1/session`) lives after its last write; it is
    /// kept on `hot_replicas` cache members. Default 86400.
    pub session_ttl_secs: u32,
}

/// `[proxy]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Collapse concurrent store reads of one blob (and range) into one,
    /// on request nodes. Default true.
    pub collapse: bool,
    /// The same on cache members in `through` mode (concurrent misses of
    /// one key share one origin read). Default true.
    pub cache_collapse: bool,
    /// A fetch older than this gets no new followers (the next request
    /// leads a new one), ms. Default 5000.
    pub max_age_ms: u64,
    /// A follower waiting longer than this fetches by itself, ms.
    /// Default 5000.
    pub wait_timeout_ms: u64,
    /// Most followers of one fetch; more requests fetch directly.
    /// Default 10000.
    pub max_waiters: usize,
    /// Spatial collapsing: ranges of blobs bigger than this are served
    /// from aligned slices of this many bytes, each read and cached once;
    /// 0 turns it off. Default 1048576 (1 MiB).
    pub slice_bytes: u64,
    /// Batching: small reads on one remote store within this many
    /// microseconds go to it as one multi-get; 0 = off. Default 0 (off);
    /// 200 is a good start.
    pub batch_window_us: u64,
    /// Largest blob read through a batch, bytes. Default 65536.
    pub batch_max_bytes: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            collapse: true,
            cache_collapse: true,
            max_age_ms: 5000,
            wait_timeout_ms: 5000,
            max_waiters: 10_000,
            slice_bytes: 1 << 20,
            batch_window_us: 0,
            batch_max_bytes: 64 << 10,
        }
    }
}

/// Global-cache mode.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// The node reads the origin on a miss and fills the cache.
    #[default]
    Aside,
    /// The cache member reads the origin on a miss.
    Through,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            memory_mb: 64,
            item_max: 1 << 20,
            mode: CacheMode::Aside,
            hot_replicas: 2,
            hot_threshold: 50,
            local_memory_mb: 32,
            local_disk_mb: 0,
            bounded_load: 0.0,
            meta_ttl_secs: 2,
            ready_entries: 131_072,
            timeout_ms: 200,
            down_after: 3,
            retry_after_ms: 2000,
            session_ttl_secs: 86_400,
        }
    }
}

/// `[queue]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Largest job payload (an asynchronous upload's body), MiB. Default 64.
    pub max_payload_mb: usize,
    /// Seconds a finished job's result is kept. Default 86400.
    pub result_ttl_secs: u32,
    /// Built-in backend: a delete answers only once synced. Default false
    /// (written at once, synced with the next acknowledged change or within
    /// 20 ms; a machine crash in between can only bring the job back).
    pub sync_deletes: bool,
    /// Upload workers per request node. Default 2.
    pub workers: usize,
    /// Attempts of an asynchronous upload before it is a dead letter.
    /// Default 5.
    pub attempts: u32,
    /// Thumbnail widths, pixels, made after an asynchronous upload of a
    /// PNG or JPEG image; empty for none. Default [128, 512].
    pub thumbnail_widths: Vec<u32>,
    /// `builtin` (one `queue` member keeps the jobs in its own log) or
    /// `postgres` (the jobs live in PostgreSQL; node workers claim them
    /// there and any number of `queue` members are stateless fronts).
    /// Default `builtin`.
    pub backend: QueueBackend,
    /// With `postgres`: the database URL (the index's may be reused), as
    /// `index.url`. Never a password.
    pub url: Option<String>,
    /// Name of the environment variable holding the database password.
    pub password_env: Option<String>,
    /// File holding the database password (one line).
    pub password_file: Option<PathBuf>,
    /// Connections per process. Default 16.
    pub pool_size: usize,
    /// Server-side limit per statement, milliseconds. Default 5000.
    pub statement_timeout_ms: u64,
    /// Client-side limit per call, milliseconds. Default 5000.
    pub call_timeout_ms: u64,
    /// How long a call keeps retrying while no server accepts writes,
    /// milliseconds. Default 30000.
    pub failover_wait_ms: u64,
}

/// `queue.backend`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// The built-in broker's log on a `queue` member.
    #[default]
    Builtin,
    /// PostgreSQL, reached by every node and queue front.
    Postgres,
}

impl QueueConfig {
    /// The PostgreSQL settings of this table.
    pub fn pg(&self) -> PgSettings<'_> {
        PgSettings {
            table: "queue",
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

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_payload_mb: 64,
            result_ttl_secs: 86_400,
            sync_deletes: false,
            workers: 2,
            attempts: 5,
            thumbnail_widths: vec![128, 512],
            backend: QueueBackend::Builtin,
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

/// `[search]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// A shard slower than this is left out of an answer, which is then
    /// marked partial. Milliseconds, default 2000.
    pub timeout_ms: u64,
    /// Indexing memory per shard, MiB (at least 16 per thread). Default 64.
    pub writer_mb: usize,
    /// Indexing threads per shard. Default 1.
    pub writer_threads: usize,
    /// Shards `strata serve` runs in its process. Default 2.
    pub serve_shards: usize,
    /// Search members each book is indexed on, so that answers stay
    /// whole while a member is down. Default 2 with two or more search
    /// members, else 1; at most the number of search members. `strata
    /// serve`'s shards share one machine and keep one copy.
    pub replicas: Option<usize>,
}

impl SearchConfig {
    /// Replicas per book among `members` search members.
    pub fn replicas_among(&self, members: usize) -> usize {
        self.replicas.unwrap_or(members.min(2)).max(1)
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            timeout_ms: 2000,
            writer_mb: 64,
            writer_threads: 1,
            serve_shards: 2,
            replicas: None,
        }
    }
}

/// `[s3]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Domain for virtual-hosted-style requests (`bucket.{domain}`);
    /// path style always works. Default none.
    pub domain: Option<String>,
    /// Access keys accepted (`[[s3.credentials]]`). `strata serve` makes
    /// and prints a pair when none is given.
    pub credentials: Vec<S3Credential>,
    /// Multipart uploads neither completed nor aborted this long after they
    /// began are aborted (their parts deleted); chunks and parts that no
    /// record names are deleted once this old, so it is also the longest
    /// one upload may take. Seconds, default 86400.
    pub abandoned_upload_secs: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            domain: None,
            credentials: Vec::new(),
            abandoned_upload_secs: 86_400,
        }
    }
}

/// One `[[s3.credentials]]`: the secret never sits in the cluster file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Credential {
    /// The access key id.
    pub access_key: String,
    /// Environment variable holding the secret key.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the secret key (one line).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

impl S3Credential {
    /// The secret key, read from where the entry says.
    pub fn secret(&self) -> Result<String, Error> {
        let table = format!("s3.credentials.{}", self.access_key);
        crate::auth::read_secret(
            &table,
            ("secret_env", self.secret_env.as_deref()),
            ("secret_file", self.secret_file.as_deref()),
        )?
        .ok_or_else(|| Error::Invalid {
            key: table,
            reason: "needs exactly one of secret_env and secret_file".into(),
        })
    }
}

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
fn validate_pg(p: PgSettings<'_>) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
replicas = 2
[auth]
write_token = "s3cret"
[[member]]
name = "idx"
role = "index"
addr = "127.0.0.1:7000"
data_dir = "/tmp/idx"
[[member]]
name = "s1"
role = "store"
addr = "127.0.0.1:7001"
data_dir = "/tmp/s1"
[[member]]
name = "s2"
role = "store"
addr = "127.0.0.1:7002"
data_dir = "/tmp/s2"
[[member]]
name = "n1"
role = "node"
addr = "127.0.0.1:8080"
"#;

    #[test]
    fn parses_a_good_file() {
        let c = ClusterConfig::parse(GOOD).expect("parse");
        assert_eq!(c.members.len(), 4);
        assert_eq!(c.effective_replicas(), 2);
        assert_eq!(c.limits.max_body_bytes, 5 << 40);
        assert_eq!(c.limits.chunk_mb, 64);
        assert_eq!(c.member("s2").expect("s2").role, Role::Store);
        assert!(matches!(c.member("zz"), Err(Error::UnknownMember(_))));
    }

    #[test]
    fn unknown_key_is_named() {
        let text = GOOD.replace("write_token", "write_tokn");
        let err = ClusterConfig::parse(&text)
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("write_tokn"), "{err}");
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let text = format!("colour = 3\n{GOOD}");
        let err = ClusterConfig::parse(&text)
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            (GOOD.replace("replicas = 2", "replicas = 3"), "replicas"),
            (
                format!(
                    "[limits]\nmax_body_bytes = 0\n{}",
                    GOOD.replace("replicas = 2\n", "")
                ),
                "limits.max_body_bytes",
            ),
            (GOOD.replace("role = \"node\"", "role = \"nod\""), "nod"),
            (GOOD.replace("127.0.0.1:7002", "not-an-addr"), "addr"),
            (
                GOOD.replace("name = \"s2\"", "name = \"s1\""),
                "member[2].name",
            ),
            (
                GOOD.replace("data_dir = \"/tmp/s1\"\n", ""),
                "member[1].data_dir",
            ),
        ];
        for (text, key) in cases {
            let err = ClusterConfig::parse(&text).expect_err(key).to_string();
            assert!(err.contains(key), "expected `{key}` in: {err}");
        }
    }
    #[test]
    fn bad_limits_and_member_settings_are_named() {
        let body = GOOD.replace("replicas = 2\n", "");
        let cases = [
            (
                format!("[limits]\nmax_connections = 0\n{body}"),
                "limits.max_connections",
            ),
            (
                format!("[limits]\nheader_timeout_ms = 0\n{body}"),
                "limits.header_timeout_ms",
            ),
            (
                format!("[limits]\nmax_header_bytes = 100\n{body}"),
                "limits.max_header_bytes",
            ),
            (
                format!("[limits]\nmax_headers = 0\n{body}"),
                "limits.max_headers",
            ),
            (
                format!("[limits]\nmax_conections = 5\n{body}"),
                "max_conections",
            ),
            (format!("[store]\nscrub_every = 5\n{body}"), "scrub_every"),
            (format!("[limits]\nchunk_mb = 0\n{body}"), "limits.chunk_mb"),
            (
                format!("[limits]\nchunk_mb = 200\n{body}"),
                "limits.chunk_mb",
            ),
            (
                format!("[s3]\nabandoned_upload_secs = 0\n{body}"),
                "s3.abandoned_upload_secs",
            ),
            (
                body.replace(
                    "role = \"node\"",
                    "role = \"node\"\ns3_addr = \"127.0.0.1:9000\"",
                ),
                "needs at least one [[s3.credentials]]",
            ),
            (
                format!("[[s3.credentials]]\naccess_key = \"K\"\n{body}"),
                "needs exactly one of secret_env and secret_file",
            ),
            (
                format!(
                    "[[s3.credentials]]\naccess_key = \"K\"\nsecret_env = \"E\"\n{body}\
                     [[member]]\nname = \"g\"\nrole = \"gateway\"\naddr = \"127.0.0.1:80\"\n\
                     s3_addr = \"127.0.0.1:9000\"\n"
                ),
                "no node member has an s3_addr to balance across",
            ),
            (
                format!(
                    "[[s3.credentials]]\naccess_key = \"K\"\nsecret_env = \"E\"\n{}",
                    body.replace(
                        "role = \"store\"",
                        "role = \"store\"\ns3_addr = \"127.0.0.1:9000\"",
                    )
                ),
                "only node members serve the S3 API, and gateways balance it",
            ),
            (format!("[s3]\nchunk_mb = 8\n{body}"), "chunk_mb"),
            (
                body.replace("role = \"node\"", "role = \"node\"\nmax_bytes = 10"),
                "max_bytes",
            ),
            (
                body.replace(
                    "data_dir = \"/tmp/s1\"",
                    "data_dir = \"/tmp/s1\"\nbind = \"0.0.0.0:7001\"",
                ),
                "auth.secret",
            ),
        ];
        for (text, key) in cases {
            let err = ClusterConfig::parse(&text).expect_err(key).to_string();
            assert!(err.contains(key), "expected `{key}` in: {err}");
        }
        // With the secret, the public bind is accepted.
        let ok = body
            .replace(
                "data_dir = \"/tmp/s1\"",
                "data_dir = \"/tmp/s1\"\nbind = \"0.0.0.0:7001\"",
            )
            .replace("[auth]\n", "[auth]\nsecret = \"k\"\n");
        assert!(ClusterConfig::parse(&ok).is_ok());
    }

    #[test]
    fn bad_queue_session_and_idle_values_are_named() {
        let body = GOOD.replace("replicas = 2\n", "");
        let queue_member =
            "\n[[member]]\nname = \"q\"\nrole = \"queue\"\naddr = \"127.0.0.1:7700\"\n";
        let cases = [
            (
                format!("[queue]\nmax_payload_mb = 0\n{body}"),
                "queue.max_payload_mb",
            ),
            (
                format!("[queue]\nmax_payload_mb = 2048\n{body}"),
                "queue.max_payload_mb",
            ),
            (format!("[queue]\nattempts = 0\n{body}"), "queue.attempts"),
            (
                format!("[queue]\nthumbnail_widths = [128, 0]\n{body}"),
                "queue.thumbnail_widths",
            ),
            (
                format!("[queue]\nthumbnail_widths = [9000]\n{body}"),
                "queue.thumbnail_widths",
            ),
            (format!("[queue]\nworkerz = 2\n{body}"), "workerz"),
            (
                format!("[cache]\nsession_ttl_secs = 0\n{body}"),
                "cache.session_ttl_secs",
            ),
            (
                format!("[gateway]\nidle_timeout_ms = 0\n{body}"),
                "idle_timeout_ms",
            ),
            // A queue member needs a data directory, and there is one at most.
            (format!("{body}{queue_member}"), "data_dir"),
            (
                format!(
                    "{body}{queue_member}data_dir = \"/q1\"\n{}data_dir = \"/q2\"\n",
                    queue_member.replace("\"q\"", "\"q2\"")
                ),
                "queue",
            ),
        ];
        for (text, key) in cases {
            let err = ClusterConfig::parse(&text).expect_err(key).to_string();
            assert!(err.contains(key), "expected `{key}` in: {err}");
        }
        // The defaults hold together.
        let ok = ClusterConfig::parse(&format!("{body}{queue_member}data_dir = \"/q\"\n"))
            .expect("valid");
        assert_eq!(ok.queue.thumbnail_widths, vec![128, 512]);
    }

    #[test]
    fn bad_search_values_are_named() {
        let body = GOOD.replace("replicas = 2\n", "");
        let member =
            "\n[[member]]\nname = \"shard-1\"\nrole = \"search\"\naddr = \"127.0.0.1:7800\"\n";
        let cases = [
            ("[search]\ntimeout_ms = 0\n", "search.timeout_ms"),
            ("[search]\nwriter_threads = 0\n", "search.writer_threads"),
            ("[search]\nwriter_threads = 17\n", "search.writer_threads"),
            ("[search]\nwriter_mb = 8\n", "search.writer_mb"),
            (
                "[search]\nwriter_threads = 4\nwriter_mb = 32\n",
                "search.writer_mb",
            ),
            ("[search]\nserve_shards = 0\n", "search.serve_shards"),
            ("[search]\nreplicas = 0\n", "search.replicas"),
            ("[search]\nshards = 2\n", "shards"),
        ];
        for (head, key) in cases {
            let err = ClusterConfig::parse(&format!("{head}{body}"))
                .expect_err(key)
                .to_string();
            assert!(err.contains(key), "expected `{key}` in: {err}");
        }
        // A search member needs a data directory, and a queue member.
        let queue = "\n[[member]]\nname = \"q\"\nrole = \"queue\"\naddr = \"127.0.0.1:7700\"\ndata_dir = \"/q\"\n";
        let err = ClusterConfig::parse(&format!("{body}{queue}{member}"))
            .expect_err("no data_dir")
            .to_string();
        assert!(err.contains("data_dir"), "{err}");
        let err = ClusterConfig::parse(&format!("{body}{member}data_dir = \"/s\"\n"))
            .expect_err("no queue")
            .to_string();
        assert!(err.contains("queue"), "{err}");
        let ok = ClusterConfig::parse(&format!("{body}{queue}{member}data_dir = \"/s\"\n"))
            .expect("valid");
        assert_eq!(ok.members_with(Role::Search).count(), 1);
        assert_eq!(ok.search, SearchConfig::default());
        assert_eq!(ok.search.replicas_among(1), 1);
        assert_eq!(ok.search.replicas_among(3), 2);
        // More replicas than search members cannot be placed.
        let err = ClusterConfig::parse(&format!(
            "[search]\nreplicas = 2\n{body}{queue}{member}data_dir = \"/s\"\n"
        ))
        .expect_err("too many replicas")
        .to_string();
        assert!(err.contains("search.replicas"), "{err}");
    }

    /// `GOOD` with the index in PostgreSQL: its index member removed.
    fn pg_index(extra: &str) -> String {
        let without_member = GOOD.replace(
            "[[member]]\nname = \"idx\"\nrole = \"index\"\naddr = \"127.0.0.1:7000\"\ndata_dir = \"/tmp/idx\"\n",
            "",
        );
        format!("{without_member}\n{extra}")
    }

    #[test]
    fn postgres_backends_are_checked_and_errors_name_the_key() {
        let url = "postgres://strata@db1:5432,db2:5432/strata?target_session_attrs=read-write";
        let ok = ClusterConfig::parse(&pg_index(&format!(
            "[index]\nbackend = \"postgres\"\nurl = \"{url}\"\npassword_env = \"PGPW\"\n"
        )))
        .expect("valid");
        assert_eq!(ok.index.backend, IndexBackend::Postgres);
        assert_eq!(ok.index.pg().url, Some(url));
        assert_eq!(ok.index.pool_size, 16);
        let cases = [
            ("[index]\nbackend = \"postgres\"\n".to_owned(), "index.url"),
            (
                "[index]\nbackend = \"postgres\"\nurl = \"postgres://strata:pw@db1/strata\"\n".to_owned(),
                "index.url",
            ),
            (
                "[index]\nbackend = \"postgres\"\nurl = \"postgres://strata@db1/strata?password=pw\"\n".to_owned(),
                "index.url",
            ),
            (
                "[index]\nbackend = \"postgres\"\nurl = \"mysql://db1/x\"\n".to_owned(),
                "index.url",
            ),
            (
                format!("[index]\nbackend = \"postgres\"\nurl = \"{url}\"\npassword_env = \"A\"\npassword_file = \"/f\"\n"),
                "index.password_env",
            ),
            (
                format!("[index]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 0\n"),
                "index.pool_size",
            ),
            (
                format!("[index]\nbackend = \"postgres\"\nurl = \"{url}\"\nfailover_wait_ms = 0\n"),
                "index.failover_wait_ms",
            ),
            ("[index]\nbackend = \"sqlite\"\n".to_owned(), "backend"),
            (
                format!("[queue]\nbackend = \"postgres\"\nurl = \"{url}\"\ncall_timeout_ms = 0\n"),
                "queue.call_timeout_ms",
            ),
            ("[queue]\nbackend = \"postgres\"\n".to_owned(), "queue.url"),
        ];
        for (head, key) in cases {
            let err = ClusterConfig::parse(&pg_index(&format!(
                "{head}{}",
                if head.starts_with("[queue]") {
                    format!("[index]\nbackend = \"postgres\"\nurl = \"{url}\"\n")
                } else {
                    String::new()
                }
            )))
            .expect_err(key)
            .to_string();
            assert!(err.contains(key), "expected `{key}` in: {err}");
        }
        // With PostgreSQL there is no index member; with redb, no URL.
        let err = ClusterConfig::parse(&format!(
            "{GOOD}\n[index]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
        ))
        .expect_err("index member")
        .to_string();
        assert!(err.contains("remove the `index` member"), "{err}");
        let err = ClusterConfig::parse(&format!("{GOOD}\n[index]\nurl = \"{url}\"\n"))
            .expect_err("url with redb")
            .to_string();
        assert!(err.contains("index.url"), "{err}");
        let err = ClusterConfig::parse(&pg_index(""))
            .expect_err("no index")
            .to_string();
        assert!(err.contains("index.backend"), "{err}");
        // Queue fronts over PostgreSQL: several, no data directory.
        let fronts = "\n[[member]]\nname = \"q1\"\nrole = \"queue\"\naddr = \"127.0.0.1:7700\"\n\
                      [[member]]\nname = \"q2\"\nrole = \"queue\"\naddr = \"127.0.0.1:7701\"\n";
        let ok = ClusterConfig::parse(&format!(
            "{GOOD}{fronts}\n[queue]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
        ))
        .expect("fronts");
        assert_eq!(ok.members_with(Role::Queue).count(), 2);
        let err = ClusterConfig::parse(&format!("{GOOD}{fronts}"))
            .expect_err("two brokers")
            .to_string();
        assert!(err.contains("at most one `queue` member"), "{err}");
    }
}

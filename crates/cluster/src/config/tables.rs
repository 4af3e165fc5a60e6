//! The settings tables every role reads: `[auth]`, `[limits]`, `[store]`,
//! `[cache]`, `[proxy]`, `[queue]`, `[search]`, `[s3]`. Each has one
//! `Default` (what an empty table means) and denies unknown keys.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

use super::index::PgSettings;

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

/// `[console]`: the web console under `/_strata/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console on the gateway (or a node when there is none).
    /// Default true.
    pub enabled: bool,
    /// How often the console reads every member's figures, milliseconds
    /// (100-60000). Default 5000; 15 minutes are kept.
    pub sample_ms: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            sample_ms: 5000,
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

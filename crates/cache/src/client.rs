//! The distributed-cache client a request node uses: a consistent-hash ring
//! over cache nodes, pooled connections speaking the memcached text
//! protocol, replicas for hot keys, and failure handling that turns a dead
//! cache node into misses, never into errors.
//!
//! Failure rules: a node that errors or times out `down_after` times in a
//! row is marked down for `retry_after`; while down, its keys go to the next
//! node on the ring, and reads that find nothing go to the origin. When a
//! node comes back it is flushed before use, because it may hold values
//! that were invalidated while it was unreachable.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster::Ring;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Per-request timeout (connect included).
    pub timeout: Duration,
    /// Consecutive failures that mark a node down.
    pub down_after: u32,
    /// How long a down node is left alone.
    pub retry_after: Duration,
    /// Copies kept of a hot key (R).
    pub hot_replicas: usize,
    /// Idle connections kept per node.
    pub pool: usize,
    /// Bounded-load mode: a member with more than this factor times the
    /// average number of requests in flight is skipped for non-hot keys
    /// (consistent hashing with bounded loads). `None` = plain ring.
    pub bounded_load: Option<f64>,
    /// memcached ASCII authentication sent on every new connection: the
    /// data of a `set`, `<user> <password>`. `None` = none.
    pub auth: Option<Vec<u8>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_millis(200),
            down_after: 3,
            retry_after: Duration::from_secs(2),
            hot_replicas: 2,
            pool: 16,
            bounded_load: None,
            auth: None,
        }
    }
}

/// Per-node counters (exported on the node's `/metrics`).
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Gets that found the key.
    pub hits: AtomicU64,
    /// Gets that did not.
    pub misses: AtomicU64,
    /// Requests that failed or timed out.
    pub errors: AtomicU64,
    /// Times the node was marked down.
    pub down_marks: AtomicU64,
}

struct Node {
    name: String,
    addr: SocketAddr,
    pool: Mutex<Vec<BufReader<TcpStream>>>,
    failures: AtomicU32,
    /// Millis since `epoch` until which the node is down (0 = up).
    down_until: AtomicU64,
    /// Set when marked down; cleared after the flush that readmits it.
    needs_flush: AtomicBool,
    counters: NodeCounters,
    /// Requests in flight (bounded-load mode).
    in_flight: AtomicU64,
}

/// The distributed-cache client.
pub struct CacheClient {
    ring: Ring,
    nodes: Vec<Node>,
    opts: ClientOptions,
    epoch: Instant,
    rng: AtomicU64,
}

type Conn = BufReader<TcpStream>;

impl CacheClient {
    /// A client for `nodes` (name, address).
    pub fn new(nodes: &[(String, SocketAddr)], opts: ClientOptions) -> CacheClient {
        let names: Vec<&str> = nodes.iter().map(|n| n.0.as_str()).collect();
        CacheClient {
            ring: Ring::new(&names, cluster::DEFAULT_POINTS),
            nodes: nodes
                .iter()
                .map(|(name, addr)| Node {
                    name: name.clone(),
                    addr: *addr,
                    pool: Mutex::new(Vec::new()),
                    failures: AtomicU32::new(0),
                    down_until: AtomicU64::new(0),
                    needs_flush: AtomicBool::new(false),
                    counters: NodeCounters::default(),
                    in_flight: AtomicU64::new(0),
                })
                .collect(),
            opts,
            epoch: Instant::now(),
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// Node names and their counters, for metrics.
    pub fn counters(&self) -> impl Iterator<Item = (&str, &NodeCounters, bool)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), &n.counters, self.is_up(i)))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn is_up(&self, i: usize) -> bool {
        let until = self.nodes[i].down_until.load(Ordering::Relaxed);
        until == 0 || self.now_ms() >= until
    }

    /// Up to `n` live nodes for `key`, in ring order: the owner, then the
    /// nodes that take over its keys when it is down.
    fn targets(&self, key: &[u8], n: usize) -> Vec<usize> {
        self.ring
            .owners(key, self.nodes.len())
            .into_iter()
            .filter(|&i| self.is_up(i))
            .take(n)
            .collect()
    }

    fn failed(&self, i: usize) {
        let node = &self.nodes[i];
        node.counters.errors.fetch_add(1, Ordering::Relaxed);
        let f = node.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if f >= self.opts.down_after {
            node.failures.store(0, Ordering::Relaxed);
            node.down_until.store(
                self.now_ms() + self.opts.retry_after.as_millis() as u64,
                Ordering::Relaxed,
            );
            node.needs_flush.store(true, Ordering::Relaxed);
            node.counters.down_marks.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut p) = node.pool.lock() {
                p.clear();
            }
            tracing::warn!(node = %node.name, "cache node marked down");
        }
    }

    async fn conn(&self, i: usize) -> std::io::Result<Conn> {
        let pooled = self.nodes[i].pool.lock().ok().and_then(|mut p| p.pop());
        if let Some(c) = pooled {
            return Ok(c);
        }
        let s = TcpStream::connect(self.nodes[i].addr).await?;
        s.set_nodelay(true)?;
        let mut c = BufReader::new(s);
        if let Some(cred) = &self.opts.auth {
            let mut login = format!("set auth 0 0 {}\r\n", cred.len()).into_bytes();
            login.extend_from_slice(cred);
            login.extend_from_slice(b"\r\n");
            c.get_mut().write_all(&login).await?;
            expect_line(&mut c, b"STORED\r\n").await?;
        }
        Ok(c)
    }

    fn give_back(&self, i: usize, c: Conn) {
        if let Ok(mut p) = self.nodes[i].pool.lock() {
            if p.len() < self.opts.pool {
                p.push(c);
            }
        }
    }

    /// Runs one exchange with node `i` under the timeout; on failure the
    /// node's failure count grows and the connection is dropped.
    async fn call<T>(
        &self,
        i: usize,
        req: &[u8],
        read: impl AsyncFnOnce(&mut Conn) -> std::io::Result<T>,
    ) -> Option<T> {
        let work = async {
            let mut c = self.conn(i).await?;
            if self.nodes[i].needs_flush.load(Ordering::Relaxed) {
                // Back from down: it may hold values invalidated meanwhile.
                c.get_mut().write_all(b"flush_all\r\n").await?;
                expect_line(&mut c, b"OK\r\n").await?;
                self.nodes[i].needs_flush.store(false, Ordering::Relaxed);
            }
            c.get_mut().write_all(req).await?;
            let v = read(&mut c).await?;
            Ok::<_, std::io::Error>((v, c))
        };
        match tokio::time::timeout(self.opts.timeout, work).await {
            Ok(Ok((v, c))) => {
                self.nodes[i].failures.store(0, Ordering::Relaxed);
                self.give_back(i, c);
                Some(v)
            }
            _ => {
                self.failed(i);
                None
            }
        }
    }

    fn pick(&self, n: usize) -> usize {
        // xorshift on a shared word: only spreads reads over replicas.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x % n as u64) as usize
    }

    /// Reads `key`. A hot key is read from one of its R replicas. Errors and
    /// timeouts are misses.
    pub async fn get(&self, key: &[u8], hot: bool) -> Option<Bytes> {
        let r = if hot {
            self.opts.hot_replicas.max(1)
        } else {
            1
        };
        let bounded = match (self.opts.bounded_load, hot) {
            (Some(c), false) => self.bounded_target(key, c),
            _ => None,
        };
        let i = match bounded {
            Some(i) => i,
            None => {
                let t = self.targets(key, r);
                if t.is_empty() {
                    return None;
                }
                t[self.pick(t.len())]
            }
        };
        let mut req = Vec::with_capacity(key.len() + 6);
        req.extend_from_slice(b"get ");
        req.extend_from_slice(key);
        req.extend_from_slice(b"\r\n");
        self.nodes[i].in_flight.fetch_add(1, Ordering::Relaxed);
        let got = self
            .call(i, &req, async |c: &mut Conn| read_get(c).await)
            .await
            .flatten();
        self.nodes[i].in_flight.fetch_sub(1, Ordering::Relaxed);
        let ctr = &self.nodes[i].counters;
        if got.is_some() {
            &ctr.hits
        } else {
            &ctr.misses
        }
        .fetch_add(1, Ordering::Relaxed);
        got
    }

    /// The member to read `key` from in bounded-load mode: the first live
    /// one clockwise whose requests in flight are under the bound.
    fn bounded_target(&self, key: &[u8], c: f64) -> Option<usize> {
        let loads: Vec<u64> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if self.is_up(i) {
                    n.in_flight.load(Ordering::Relaxed)
                } else {
                    u64::MAX / 4
                }
            })
            .collect();
        self.ring
            .owner_bounded(key, &loads, c)
            .filter(|&i| self.is_up(i))
    }

    /// Stores `key` (on R replicas when hot). Failures are ignored: a
    /// missing cache entry only costs an origin read.
    pub async fn set(&self, key: &[u8], value: &Bytes, ttl: u32, hot: bool) {
        let r = if hot {
            self.opts.hot_replicas.max(1)
        } else {
            1
        };
        let req = set_request(key, value, ttl);
        for i in self.targets(key, r) {
            // An oversized value is refused with SERVER_ERROR: fine, skip.
            self.call(i, &req, async |c: &mut Conn| read_line(c).await.map(|_| ()))
                .await;
        }
    }

    /// Stores `key` on its R replicas (`hot_replicas`) whatever its
    /// heat: for values that must survive the loss of a member, such as
    /// sessions. Returns how many replicas took it.
    pub async fn set_replicated(&self, key: &[u8], value: &Bytes, ttl: u32) -> usize {
        let req = set_request(key, value, ttl);
        let mut stored = 0;
        for i in self.targets(key, self.opts.hot_replicas.max(1)) {
            let ok = self
                .call(i, &req, async |c: &mut Conn| read_line(c).await)
                .await;
            if ok.is_some_and(|l| l.starts_with(b"STORED")) {
                stored += 1;
            }
        }
        stored
    }

    /// Reads a value written with [`CacheClient::set_replicated`]: its
    /// replicas in ring order (and the next member, which holds the copy
    /// when a replica was down at write time), first hit wins.
    pub async fn get_replicated(&self, key: &[u8]) -> Option<Bytes> {
        let mut req = Vec::with_capacity(key.len() + 6);
        req.extend_from_slice(b"get ");
        req.extend_from_slice(key);
        req.extend_from_slice(b"\r\n");
        for i in self.targets(key, self.opts.hot_replicas.max(1) + 1) {
            let got = self
                .call(i, &req, async |c: &mut Conn| read_get(c).await)
                .await
                .flatten();
            if got.is_some() {
                return got;
            }
        }
        None
    }

    /// Deletes `key` everywhere it may be: its R replicas and the next node
    /// that would take over for one of them.
    pub async fn delete(&self, key: &[u8]) {
        let mut req = Vec::with_capacity(key.len() + 9);
        req.extend_from_slice(b"delete ");
        req.extend_from_slice(key);
        req.extend_from_slice(b"\r\n");
        for i in self.targets(key, self.opts.hot_replicas.max(1) + 1) {
            self.call(i, &req, async |c: &mut Conn| read_line(c).await.map(|_| ()))
                .await;
        }
    }
}

/// `set <key> 0 <ttl> <len>\r\n<value>\r\n`.
fn set_request(key: &[u8], value: &Bytes, ttl: u32) -> Vec<u8> {
    let mut req = Vec::with_capacity(key.len() + value.len() + 40);
    req.extend_from_slice(b"set ");
    req.extend_from_slice(key);
    req.extend_from_slice(format!(" 0 {ttl} {}\r\n", value.len()).as_bytes());
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    req
}

async fn read_line(c: &mut Conn) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    c.read_until(b'\n', &mut line).await?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line)
}

async fn expect_line(c: &mut Conn, want: &[u8]) -> std::io::Result<()> {
    let l = read_line(c).await?;
    if l != want {
        return Err(std::io::Error::other(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&l)
        )));
    }
    Ok(())
}

/// Reads a `get` reply: one VALUE (or none) and END.
async fn read_get(c: &mut Conn) -> std::io::Result<Option<Bytes>> {
    let line = read_line(c).await?;
    if line == b"END\r\n" {
        return Ok(None);
    }
    let bad = || std::io::Error::other("malformed VALUE line");
    if !line.starts_with(b"VALUE ") {
        return Err(bad());
    }
    let len: usize = std::str::from_utf8(&line)
        .map_err(|_| bad())?
        .split_whitespace()
        .nth(3)
        .and_then(|l| l.parse().ok())
        .ok_or_else(bad)?;
    let mut data = vec![0u8; len + 2];
    c.read_exact(&mut data).await?;
    data.truncate(len);
    expect_line(c, b"END\r\n").await?;
    Ok(Some(Bytes::from(data)))
}

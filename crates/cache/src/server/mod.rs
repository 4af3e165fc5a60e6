//! The memcached-compatible TCP server.
//!
//! One task per connection reads into a buffer, runs every complete command
//! it holds (pipelining), and writes all their replies with one `writev`
//! (large values by reference, the crate's `reply`). A bad
//! command gets memcached's error reply on that connection only; nothing is
//! shared between connections but the cache and the counters.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::engine::{Arith, Cache, StoreMode, StoreResult};
use crate::reply::Reply;
use crate::text::{parse, Cmd, Parsed, StoreOp};
pub use stats::ServerStats;
use stats::{inc, stats, Fmt, LocalStats};

mod stats;

/// Version string sent for `version` (clients parse the leading digits).
pub const VERSION: &str = "1.6.0-strata";

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections above this get `ERROR Too many open connections`.
    pub max_connections: usize,
    /// Worker threads (reported by `stats`).
    pub threads: usize,
    /// memcached's ASCII authentication: when set, a connection must first
    /// send `set <any key> 0 0 <n>` with the data `<user> <password>`
    /// equal to this (compared in constant time); anything else is
    /// refused and the connection closed.
    pub auth: Option<Vec<u8>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 10_000,
            threads: 1,
            auth: None,
        }
    }
}

/// The user name strata's cache clients authenticate as (the password is
/// the cluster secret).
pub const AUTH_USER: &str = "strata";

/// memcached's replies to unauthenticated commands and failed logins.
const UNAUTHENTICATED: &[u8] = b"CLIENT_ERROR unauthenticated\r\n";
const AUTH_FAILED: &[u8] = b"CLIENT_ERROR authentication failure\r\n";

/// A cache plus the protocol state shared by its connections.
pub struct CacheServer {
    /// The engine.
    pub cache: Arc<Cache>,
    /// Counters.
    pub stats: ServerStats,
    opts: ServerOptions,
    started: Instant,
    /// Read-through origin (global-cache mode `through`), if any.
    pub through: Option<crate::through::ReadThrough>,
}

impl CacheServer {
    /// Wraps `cache`.
    pub fn new(cache: Arc<Cache>, opts: ServerOptions) -> Arc<Self> {
        Arc::new(CacheServer {
            cache,
            stats: ServerStats::default(),
            opts,
            started: Instant::now(),
            through: None,
        })
    }

    /// Wraps `cache`, reading misses through from `origin`.
    pub fn with_origin(
        cache: Arc<Cache>,
        opts: ServerOptions,
        origin: Arc<dyn crate::through::Origin>,
    ) -> Arc<Self> {
        Self::with_read_through(cache, opts, crate::through::ReadThrough::new(origin))
    }

    /// Wraps `cache`, reading misses through `rt`.
    pub fn with_read_through(
        cache: Arc<Cache>,
        opts: ServerOptions,
        rt: crate::through::ReadThrough,
    ) -> Arc<Self> {
        Arc::new(CacheServer {
            cache,
            stats: ServerStats::default(),
            opts,
            started: Instant::now(),
            through: Some(rt),
        })
    }
}

/// Accepts connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    server: Arc<CacheServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    // Out of fds and the like: keep serving the others.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::task::yield_now().await;
                        continue;
                    }
                };
                let s = server.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &s).await {
                        tracing::debug!(error = %e, "cache connection ended");
                    }
                });
            }
        }
    }
}

async fn connection(mut stream: TcpStream, s: &CacheServer) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let n = s.stats.curr_connections.fetch_add(1, Ordering::Relaxed) + 1;
    inc(&s.stats.total_connections);
    struct Guard<'a>(&'a AtomicU64);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _g = Guard(&s.stats.curr_connections);
    if n as usize > s.opts.max_connections {
        inc(&s.stats.rejected_connections);
        stream
            .write_all(b"ERROR Too many open connections\r\n")
            .await?;
        return Ok(());
    }
    let item_max = s.cache.config().item_max;
    let mut inb = BytesMut::with_capacity(16 << 10);
    let mut out = Reply::with_capacity(16 << 10);
    let mut swallow = 0usize;
    let mut local = LocalStats::default();
    let mut authed = s.opts.auth.is_none();
    loop {
        let mut quit = false;
        loop {
            if !authed && swallow == 0 {
                match login(&inb, item_max, s.opts.auth.as_deref().unwrap_or_default()) {
                    Login::Wait => break,
                    Login::Ok(used) => {
                        inb.advance(used);
                        out.extend_from_slice(b"STORED\r\n");
                        authed = true;
                        continue;
                    }
                    Login::Refused(msg) => {
                        out.extend_from_slice(msg);
                        quit = true;
                        break;
                    }
                }
            }
            if swallow > 0 {
                let n = swallow.min(inb.len());
                inb.advance(n);
                swallow -= n;
                if swallow > 0 {
                    break;
                }
            }
            match parse(&inb, item_max) {
                Parsed::Incomplete => break,
                Parsed::Close(msg) => {
                    out.extend_from_slice(msg);
                    quit = true;
                    break;
                }
                Parsed::Cmd(
                    Cmd::Get {
                        keys,
                        cas,
                        touch: None,
                    },
                    used,
                ) if s.through.is_some() => {
                    // Misses are read through from the origin before the
                    // reply, so this get waits on I/O.
                    local.flush(&s.stats);
                    get_through(s, &keys, cas, &mut out).await;
                    inb.advance(used);
                }
                Parsed::Cmd(cmd, used) => {
                    let close = execute(s, cmd, &mut out, &mut swallow, &mut local);
                    inb.advance(used);
                    if close {
                        quit = true;
                        break;
                    }
                }
            }
            if out.len() > 256 << 10 {
                // A long pipeline: send what we have so memory stays bounded.
                write(&mut stream, &mut out, s).await?;
            }
        }
        local.flush(&s.stats);
        write(&mut stream, &mut out, s).await?;
        if quit {
            return Ok(());
        }
        if inb.capacity() - inb.len() < 4096 {
            inb.reserve(16 << 10);
        }
        let n = stream.read_buf(&mut inb).await?;
        if n == 0 {
            return Ok(());
        }
        s.stats.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }
}

enum Login {
    /// Not a whole command yet.
    Wait,
    /// Authenticated by a command of this many bytes.
    Ok(usize),
    /// Refused: send this and close.
    Refused(&'static [u8]),
}

/// The first command of a connection when authentication is on: only a
/// `set` whose data is the credential gets in.
fn login(buf: &[u8], item_max: usize, credential: &[u8]) -> Login {
    match parse(buf, item_max) {
        Parsed::Incomplete => Login::Wait,
        Parsed::Cmd(
            Cmd::Store {
                op: StoreOp::Set,
                data,
                ..
            },
            used,
        ) => {
            if cluster::auth::ct_eq(data, credential) {
                Login::Ok(used)
            } else {
                Login::Refused(AUTH_FAILED)
            }
        }
        _ => Login::Refused(UNAUTHENTICATED),
    }
}

/// `get`/`gets` in read-through mode: a miss is loaded from the origin
/// (collapsed with concurrent misses of the same key) and then answered.
async fn get_through(s: &CacheServer, keys: &[&[u8]], cas: bool, out: &mut Reply) {
    let Some(rt) = &s.through else { return };
    for &k in keys {
        inc(&s.stats.cmd_get);
        let mut item = s.cache.get(k);
        if item.is_none() && rt.load(&s.cache, k).await.is_some() {
            item = s.cache.peek(k);
        }
        match item {
            Some(it) => {
                inc(&s.stats.get_hits);
                value_reply(out, k, &it, cas);
            }
            None => inc(&s.stats.get_misses),
        }
    }
    out.put_slice(b"END\r\n");
}

/// One `VALUE <key> <flags> <bytes> [<cas>]` block of a get reply.
fn value_reply(out: &mut Reply, key: &[u8], it: &crate::engine::Item, cas: bool) {
    out.put_slice(b"VALUE ");
    out.put_slice(key);
    let _ = if cas {
        write!(Fmt(out), " {} {} {}\r\n", it.flags, it.value.len(), it.cas)
    } else {
        write!(Fmt(out), " {} {}\r\n", it.flags, it.value.len())
    };
    out.put_value(&it.value);
    out.put_slice(b"\r\n");
}

async fn write(stream: &mut TcpStream, out: &mut Reply, s: &CacheServer) -> std::io::Result<()> {
    if !out.is_empty() {
        s.stats
            .bytes_written
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        out.send(stream).await?;
    }
    Ok(())
}

fn line(out: &mut BytesMut, noreply: bool, msg: &[u8]) {
    if !noreply {
        out.put_slice(msg);
    }
}

/// Runs one command, appending its reply. Returns true to close.
fn execute(
    s: &CacheServer,
    cmd: Cmd,
    out: &mut Reply,
    swallow: &mut usize,
    st: &mut LocalStats,
) -> bool {
    let c = &s.cache;
    let st = &*st;
    match cmd {
        Cmd::Get { keys, cas, touch } => {
            for k in &keys {
                inc(&st.cmd_get);
                let item = match touch {
                    Some(exp) => {
                        inc(&st.cmd_touch);
                        let it = c.get_and_touch(k, exp);
                        inc(if it.is_some() {
                            &st.touch_hits
                        } else {
                            &st.touch_misses
                        });
                        it
                    }
                    None => c.get(k),
                };
                match item {
                    Some(it) => {
                        inc(&st.get_hits);
                        value_reply(out, k, &it, cas);
                    }
                    None => inc(&st.get_misses),
                }
            }
            out.put_slice(b"END\r\n");
        }
        Cmd::Store {
            op,
            key,
            flags,
            exptime,
            data,
            cas,
            noreply,
        } => {
            inc(&st.cmd_set);
            let mode = match op {
                StoreOp::Set => StoreMode::Set,
                StoreOp::Add => StoreMode::Add,
                StoreOp::Replace => StoreMode::Replace,
                StoreOp::Append => StoreMode::Append,
                StoreOp::Prepend => StoreMode::Prepend,
                StoreOp::Cas => StoreMode::Cas(cas),
            };
            let res = c.store(
                mode,
                key,
                bytes::Bytes::copy_from_slice(data),
                flags,
                exptime,
            );
            if op == StoreOp::Cas {
                match res {
                    StoreResult::Stored(_) => inc(&st.cas_hits),
                    StoreResult::Exists => inc(&st.cas_badval),
                    StoreResult::NotFound => inc(&st.cas_misses),
                    _ => {}
                }
            }
            let msg: &[u8] = match res {
                StoreResult::Stored(_) => b"STORED\r\n",
                StoreResult::NotStored => b"NOT_STORED\r\n",
                StoreResult::Exists => b"EXISTS\r\n",
                StoreResult::NotFound => b"NOT_FOUND\r\n",
                StoreResult::TooLarge => b"SERVER_ERROR object too large for cache\r\n",
            };
            line(out, noreply, msg);
        }
        Cmd::TooLarge {
            key,
            set,
            noreply,
            skip,
        } => {
            inc(&st.cmd_set);
            if set {
                // As memcached: a refused set must not leave the old value.
                c.delete(key);
            }
            *swallow = skip;
            line(out, noreply, b"SERVER_ERROR object too large for cache\r\n");
        }
        Cmd::BadChunk { noreply } => line(out, noreply, b"CLIENT_ERROR bad data chunk\r\n"),
        Cmd::Delete { key, noreply } => {
            let hit = c.delete(key);
            inc(if hit {
                &st.delete_hits
            } else {
                &st.delete_misses
            });
            line(
                out,
                noreply,
                if hit {
                    b"DELETED\r\n"
                } else {
                    b"NOT_FOUND\r\n"
                },
            );
        }
        Cmd::Arith {
            key,
            delta,
            incr,
            noreply,
        } => match c.arith(key, delta, incr) {
            Arith::Value(v, _) => {
                inc(if incr { &st.incr_hits } else { &st.decr_hits });
                if !noreply {
                    let _ = write!(Fmt(out), "{v}\r\n");
                }
            }
            Arith::NotFound => {
                inc(if incr {
                    &st.incr_misses
                } else {
                    &st.decr_misses
                });
                line(out, noreply, b"NOT_FOUND\r\n");
            }
            Arith::NonNumeric => line(
                out,
                noreply,
                b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            ),
        },
        Cmd::Touch {
            key,
            exptime,
            noreply,
        } => {
            inc(&st.cmd_touch);
            let hit = c.touch(key, exptime);
            inc(if hit {
                &st.touch_hits
            } else {
                &st.touch_misses
            });
            line(
                out,
                noreply,
                if hit {
                    b"TOUCHED\r\n"
                } else {
                    b"NOT_FOUND\r\n"
                },
            );
        }
        Cmd::FlushAll { delay, noreply } => {
            inc(&st.cmd_flush);
            c.flush_all(delay);
            line(out, noreply, b"OK\r\n");
        }
        Cmd::Version => {
            let _ = write!(Fmt(out), "VERSION {VERSION}\r\n");
        }
        Cmd::Verbosity { noreply } => line(out, noreply, b"OK\r\n"),
        Cmd::Stats { group } => {
            // Counters of this batch so far must show in its own `stats`.
            st.flush(&s.stats);
            match group.as_deref() {
                None => stats(s, out),
                Some("settings") => {
                    let _ = write!(
                    Fmt(out),
                    "STAT maxbytes {}\r\nSTAT maxconns {}\r\nSTAT item_size_max {}\r\nSTAT num_threads {}\r\nSTAT evictions on\r\nSTAT cas_enabled yes\r\nEND\r\n",
                    c.config().max_bytes,
                    s.opts.max_connections,
                    c.config().item_max,
                    s.opts.threads
                );
                }
                Some("items" | "slabs" | "sizes" | "conns") => out.put_slice(b"END\r\n"),
                Some(_) => out.put_slice(b"ERROR\r\n"),
            }
        }
        Cmd::Quit => return true,
        Cmd::MetaNoop => out.put_slice(b"MN\r\n"),
        Cmd::Reply(msg, quiet) => line(out, quiet, msg),
        Cmd::Swallow(msg, skip) => {
            *swallow = skip;
            out.put_slice(msg);
        }
        Cmd::Meta(m) => {
            match m.op {
                crate::meta::MetaOp::Get => inc(&st.cmd_get),
                crate::meta::MetaOp::Set => inc(&st.cmd_set),
                _ => {}
            }
            crate::meta::execute(c, m, out);
        }
    }
    false
}

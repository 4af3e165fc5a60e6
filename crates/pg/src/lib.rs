//! strata's PostgreSQL plumbing, shared by the cluster's name index
//! (`index::pg`) and job queue (`queue::pg`).
//!
//! - [`PgOptions`]: the `url` (several hosts, `target_session_attrs=read-write`
//!   picks the one that accepts writes), pool size, statement and call
//!   timeouts, and the password, which comes from the environment or a file
//!   and never from the cluster file.
//! - [`Db`]: a pool of connections ([`deadpool_postgres`]). [`Db::retry`]
//!   hands out connections for one logical operation and, when a call fails
//!   the way a lost or failing-over server fails (connection closed, I/O
//!   error, no answer in time, "the database is shutting down"), drops that
//!   connection and tries again on a fresh one until `retry_for` has passed.
//!   A fresh connection goes to whichever host accepts writes now, so after
//!   an operator or Patroni promotes the standby, requests resume by
//!   themselves. A call retried after its answer was lost may have
//!   committed: callers make such calls idempotent.
//! - [`Db::migrate`]: schema versions per component in `strata_schema`,
//!   applied under an advisory lock; a database newer than the binary is
//!   refused.
//!
//! Errors are one enum, [`Error`].

use std::future::Future;
use std::time::{Duration, Instant};

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};

mod hosts;
use hosts::{Hosts, PoolConnect};

pub use deadpool_postgres::Object as Client;
pub use tokio_postgres::{Row, Statement};

/// Everything the PostgreSQL backends can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No server that accepts writes answered within `retry_for`.
    #[error("PostgreSQL unavailable: {0}")]
    Unavailable(String),
    /// The server refused the statement (not a connection problem).
    #[error("PostgreSQL: {0}")]
    Database(String),
    /// The database's schema is newer than this binary knows.
    #[error("the database's {component} schema is version {found}, newer than this strata knows ({supported}); upgrade strata")]
    SchemaTooNew {
        /// `index` or `queue`.
        component: String,
        /// Version found in the database.
        found: i32,
        /// Newest version this binary knows.
        supported: i32,
    },
    /// The options are unusable; names the config key.
    #[error("{key}: {reason}")]
    Config {
        /// e.g. `index.url`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user@h1:5432,h2:5432/db?target_session_attrs=read-write`.
    pub url: String,
    /// The config table these came from (`index` or `queue`), for errors.
    pub key: String,
    /// Password (from `password_env` or `password_file`); `None` to use
    /// the URL's or none.
    pub password: Option<String>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Server-side limit per statement.
    pub statement_timeout: Duration,
    /// Client-side limit per call (also bounds connecting): a call to a
    /// machine that vanished without closing its sockets gives up then.
    pub call_timeout: Duration,
    /// How long one operation keeps retrying across connection failures
    /// (covers a failover).
    pub retry_for: Duration,
}

impl PgOptions {
    /// Options with the defaults of the `[index]`/`[queue]` tables.
    pub fn new(key: &str, url: &str) -> PgOptions {
        PgOptions {
            url: url.to_owned(),
            key: key.to_owned(),
            password: None,
            pool_size: 16,
            statement_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(30),
        }
    }
}

/// A pool of connections to the host that accepts writes.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    opts: PgOptions,
    /// The URL's hosts, shared with the pool (LISTEN connects outside it).
    hosts: Arc<Hosts>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("key", &self.opts.key).finish()
    }
}

/// Why one call failed.
#[derive(Debug)]
pub enum CallError {
    /// The server or the connection failed.
    Pg(tokio_postgres::Error),
    /// No answer within `call_timeout`.
    Timeout,
}

impl From<tokio_postgres::Error> for CallError {
    fn from(e: tokio_postgres::Error) -> Self {
        CallError::Pg(e)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Pg(e) => match e.as_db_error() {
                Some(d) => write!(f, "{} ({})", d.message(), d.code().code()),
                None => write!(f, "{e}"),
            },
            CallError::Timeout => f.write_str("no answer in time"),
        }
    }
}

impl CallError {
    /// True for a transaction that lost a conflict (serialization failure,
    /// deadlock): the connection and its server are fine.
    fn is_conflict(&self) -> bool {
        matches!(self, CallError::Pg(e) if e
            .as_db_error()
            .is_some_and(|d| matches!(d.code().code(), "40001" | "40P01")))
    }

    /// True for failures a lost or failing-over server causes, after which
    /// a fresh connection may succeed.
    pub fn is_transient(&self) -> bool {
        let e = match self {
            CallError::Timeout => return true,
            CallError::Pg(e) => e,
        };
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            // 08: connection exceptions; 57P01-03: shutting down / starting
            // up; 25006: a read-only server (a standby, until promoted);
            // 53300: too many connections; 40001/40P01: retry the
            // transaction.
            return code.starts_with("08")
                || matches!(
                    code,
                    "57P01" | "57P02" | "57P03" | "25006" | "53300" | "40001" | "40P01"
                );
        }
        e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
    }
}

impl Db {
    /// A pool over `opts.url`. Connects lazily: a database that is down now
    /// is tried again on the first call.
    pub fn new(opts: PgOptions) -> Result<Db> {
        let bad = |reason: String| Error::Config {
            key: format!("{}.url", opts.key),
            reason,
        };
        let mut cfg: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|e| bad(format!("not a PostgreSQL URL: {e}")))?;
        if cfg.get_hosts().is_empty() {
            return Err(bad("names no host".into()));
        }
        if let Some(p) = &opts.password {
            cfg.password(p);
        }
        if cfg.get_user().is_none() {
            return Err(bad("names no user (postgres://USER@host/db)".into()));
        }
        cfg.connect_timeout(opts.call_timeout);
        // A connection to a machine that vanished must be closed before a
        // caller is handed it: callers behind a gateway give up (and drop
        // their call) sooner than the call timeout, so a call on a dead
        // connection may never fail and purge the pool. Idle ones (LISTEN's,
        // pooled ones between calls) are noticed by keepalive within about
        // 3 s; one with a call in flight when its bytes go unacknowledged
        // for the call timeout. Either way the pool's recycle check
        // (`is_closed`) then discards it.
        cfg.keepalives(true);
        cfg.keepalives_idle(Duration::from_secs(1));
        cfg.keepalives_interval(Duration::from_secs(1));
        cfg.keepalives_retries(2);
        cfg.tcp_user_timeout(opts.call_timeout);
        cfg.application_name("strata");
        cfg.options(format!(
            "-c statement_timeout={}",
            opts.statement_timeout.as_millis()
        ));
        let hosts = Arc::new(Hosts::new(&cfg));
        let mgr = Manager::from_connect(
            cfg.clone(),
            PoolConnect(hosts.clone()),
            ManagerConfig {
                // A closed connection is noticed without a round trip; one
                // that hangs is caught by the call timeout and discarded.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // A new connection tries the hosts (the last primary first), each
        // for up to `call_timeout` (a vanished machine sends no refusal),
        // so making one may take that long per host before the one that
        // accepts writes answers: a shorter limit would never get past a
        // dead host.
        let n = cfg.get_hosts().len().max(1) as u32;
        let create = opts.call_timeout * n + Duration::from_secs(1);
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(create))
            .create_timeout(Some(create))
            .recycle_timeout(Some(opts.call_timeout))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Db { pool, opts, hosts })
    }

    /// The options in force.
    pub fn options(&self) -> &PgOptions {
        &self.opts
    }

    /// Opens up to 4 of the pool's connections at once, so that the first
    /// requests after a start do not each wait for a connection to be
    /// made (authentication is slow on purpose). Failures are left to the
    /// calls that follow.
    pub async fn warm_up(&self) {
        let n = self.opts.pool_size.clamp(1, 4);
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..n {
            let pool = self.pool.clone();
            opening.spawn(async move { pool.get().await.ok() });
        }
        // Held until all are open, then back to the pool together.
        let _open = opening.join_all().await;
    }

    /// `host:port` of the host that accepted the pool's last connection:
    /// the one that accepts writes, as far as strata knows.
    pub fn writable_host(&self) -> String {
        self.hosts.preferred()
    }

    /// Starts one logical operation's attempts.
    pub fn retry(&self) -> Retry<'_> {
        Retry {
            db: self,
            deadline: Instant::now() + self.opts.retry_for,
            delay: Duration::from_millis(25),
            last: None,
        }
    }

    /// Brings `component`'s schema to `steps.len()` by running the steps
    /// it has not run yet, in one transaction under an advisory lock (two
    /// nodes starting together migrate once). Refuses a schema newer than
    /// `steps`.
    pub async fn migrate(&self, component: &str, steps: &[&str]) -> Result<()> {
        let supported = steps.len() as i32;
        let mut r = self.retry();
        loop {
            let mut c = r.client().await?;
            let res = r
                .timed(async {
                    let tx = c.transaction().await?;
                    tx.batch_execute(
                        "SELECT pg_advisory_xact_lock(7355608001);
                         CREATE TABLE IF NOT EXISTS strata_schema (
                             component text PRIMARY KEY, version int NOT NULL)",
                    )
                    .await?;
                    let found: i32 = tx
                        .query_opt(
                            "SELECT version FROM strata_schema WHERE component = $1",
                            &[&component],
                        )
                        .await?
                        .map_or(0, |row| row.get(0));
                    if found > supported {
                        return Ok(Err(found));
                    }
                    for step in &steps[found as usize..] {
                        tx.batch_execute(step).await?;
                    }
                    tx.execute(
                        "INSERT INTO strata_schema VALUES ($1, $2)
                         ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
                        &[&component, &supported],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(Ok(found))
                })
                .await;
            match res {
                Ok(Ok(from)) => {
                    if from < supported {
                        tracing::info!(component, from, to = supported, "schema migrated");
                    }
                    return Ok(());
                }
                Ok(Err(found)) => {
                    return Err(Error::SchemaTooNew {
                        component: component.to_owned(),
                        found,
                        supported,
                    })
                }
                Err(e) => r.failed(c, e).await?,
            }
        }
    }
}

impl Db {
    /// Runs one statement (prepared once per connection) with retries
    /// across connection failures: see [`Db::retry`]. The statement must
    /// be safe to run again when its answer was lost.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let mut r = self.retry();
        loop {
            let c = r.client().await?;
            let res = r
                .timed(async {
                    let st = c.prepare_cached(sql).await?;
                    c.query(&st, params).await
                })
                .await;
            match res {
                Ok(rows) => return Ok(rows),
                Err(e) => r.failed(c, e).await?,
            }
        }
    }

    /// Keeps a connection outside the pool listening on `channel` (to the
    /// host that accepts writes, reconnecting across a failover) and calls
    /// `wake(Some(payload))` per notification, and `wake(None)` whenever
    /// (re)connected, since notifications sent meanwhile were missed. Ends
    /// with the returned task (abort it).
    pub fn listen(
        &self,
        channel: &'static str,
        wake: impl Fn(Option<&str>) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let hosts = self.hosts.clone();
        tokio::spawn(async move {
            loop {
                match hosts.connect().await {
                    Ok((client, mut conn)) => {
                        let messages = async {
                            while let Some(m) =
                                std::future::poll_fn(|cx| conn.poll_message(cx)).await
                            {
                                match m {
                                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                        wake(Some(n.payload()))
                                    }
                                    Ok(_) => {}
                                    Err(_) => break,
                                }
                            }
                        };
                        let subscribe = async {
                            if client
                                .batch_execute(&format!("LISTEN {channel}"))
                                .await
                                .is_ok()
                            {
                                wake(None);
                            }
                            std::future::pending::<()>().await
                        };
                        tokio::select! {
                            _ = messages => {}
                            _ = subscribe => {}
                        }
                        tracing::debug!(channel, "LISTEN connection lost; reconnecting");
                    }
                    Err(e) => tracing::debug!(channel, error = %e, "LISTEN connection failed"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }
}

/// The attempts of one operation: see [`Db::retry`].
pub struct Retry<'a> {
    db: &'a Db,
    deadline: Instant,
    delay: Duration,
    last: Option<String>,
}

impl Retry<'_> {
    /// A pooled connection, waiting across failures until the deadline.
    pub async fn client(&mut self) -> Result<Object> {
        loop {
            match self.db.pool.get().await {
                Ok(c) => return Ok(c),
                Err(deadpool_postgres::PoolError::Backend(e)) => {
                    let e = CallError::Pg(e);
                    // A wrong password or a missing database will not get
                    // better by waiting.
                    if !e.is_transient() {
                        return Err(Error::Database(format!(
                            "connecting to {} ({}.url): {e}",
                            self.db.opts.url, self.db.opts.key
                        )));
                    }
                    self.last = Some(e.to_string());
                    self.backoff().await?;
                }
                Err(e) => {
                    self.last = Some(e.to_string());
                    self.backoff().await?;
                }
            }
        }
    }

    /// Runs one call with the call timeout.
    pub async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.db.opts.call_timeout, call).await {
            Ok(r) => r.map_err(CallError::Pg),
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// Judges a failed call made on `client`: a transient failure discards
    /// the connection and waits before the next attempt (`Ok`); any other
    /// failure, or the deadline, ends the operation (`Err`).
    pub async fn failed(&mut self, client: Object, e: CallError) -> Result<()> {
        if !e.is_transient() {
            return Err(Error::Database(e.to_string()));
        }
        // Never hand this connection out again: it may be half-closed or
        // talking to a server that is gone or no longer the primary.
        drop(Object::take(client));
        if !e.is_conflict() {
            // Nor the idle ones made before: they went to the same server,
            // and each would cost a caller a call timeout to find out.
            let now = Instant::now();
            self.db.pool.retain(|_, m| m.created > now);
        }
        tracing::debug!(key = %self.db.opts.key, error = %e, "retrying on a fresh connection");
        self.last = Some(e.to_string());
        self.backoff().await
    }

    async fn backoff(&mut self) -> Result<()> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(Error::Unavailable(format!(
                "{} ({}.url): {}",
                self.db.opts.url,
                self.db.opts.key,
                self.last.as_deref().unwrap_or("no answer")
            )));
        }
        tokio::time::sleep(self.delay.min(self.deadline - now)).await;
        self.delay = (self.delay * 2).min(Duration::from_millis(500));
        Ok(())
    }
}

/// Reads a password for `key` from the environment variable `env` or the
/// file `file` (trailing newline dropped); at most one may be set.
pub fn read_password(
    key: &str,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>> {
    cluster::auth::read_secret(key, ("password_env", env), ("password_file", file)).map_err(|e| {
        match e {
            cluster::Error::Invalid { key, reason } => Error::Config { key, reason },
            e => Error::Config {
                key: key.to_owned(),
                reason: e.to_string(),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_come_from_a_file_or_the_environment_and_errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("strata-pg-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").expect("write");
        assert_eq!(
            read_password("index", None, Some(&file))
                .expect("file")
                .as_deref(),
            Some("s3cret")
        );
        assert_eq!(read_password("index", None, None).expect("none"), None);
        std::env::set_var("STRATA_PG_TEST_PW", "from-env");
        assert_eq!(
            read_password("queue", Some("STRATA_PG_TEST_PW"), None)
                .expect("env")
                .as_deref(),
            Some("from-env")
        );
        let both = read_password("index", Some("X"), Some(&file)).expect_err("both");
        assert!(both.to_string().contains("index.password_env"), "{both}");
        let unset = read_password("queue", Some("STRATA_PG_TEST_UNSET"), None).expect_err("unset");
        assert!(unset.to_string().contains("queue.password_env"), "{unset}");
        let missing = read_password("index", None, Some(&dir.join("nope"))).expect_err("missing");
        assert!(
            missing.to_string().contains("index.password_file"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_url_is_refused_naming_the_key() {
        for url in ["not a url", "postgres:///db"] {
            let e = Db::new(PgOptions::new("queue", url)).expect_err(url);
            assert!(e.to_string().starts_with("queue.url"), "{e}");
        }
    }
}

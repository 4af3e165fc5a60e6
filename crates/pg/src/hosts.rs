//! Connecting to whichever of the URL's hosts accepts writes, trying first
//! the host that did last time.
//!
//! tokio-postgres tries a multi-host URL's hosts in the order written,
//! each for up to the connect timeout. Once the first host's machine has
//! vanished (it sends no refusal), every new connection would first spend
//! that whole timeout on it, and a caller that gives up sooner (a request
//! whose client went away) would abort the attempt before it reached the
//! promoted standby: connections would never be made again. So each host
//! gets a configuration of its own, the last host that accepted a
//! connection is tried first, and a connection attempt runs in a task of
//! its own, finishing (and teaching the next attempt which host is the
//! primary now) even when the caller that started it is gone.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Connect;
use tokio::task::JoinHandle;
use tokio_postgres::config::Host;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};

/// A connection not yet driven: the caller spawns it or polls its messages.
pub type Raw = (Client, Connection<Socket, NoTlsStream>);

/// The hosts of one URL, each with its own configuration.
#[derive(Debug)]
pub struct Hosts {
    configs: Vec<Config>,
    /// Index into `configs` of the host that accepted the last connection.
    preferred: AtomicUsize,
}

impl Hosts {
    /// One single-host configuration per host of `cfg`, keeping every
    /// other setting (user, password, database, timeouts, options,
    /// `target_session_attrs`).
    pub fn new(cfg: &Config) -> Hosts {
        let ports = cfg.get_ports();
        let addrs = cfg.get_hostaddrs();
        let configs = cfg
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let mut one = Config::new();
                match host {
                    Host::Tcp(h) => one.host(h),
                    Host::Unix(p) => one.host_path(p),
                };
                if let Some(a) = addrs.get(i) {
                    one.hostaddr(*a);
                }
                // One port for all hosts, or one each.
                if let Some(p) = ports.get(i).or(ports.first()) {
                    one.port(*p);
                }
                if let Some(u) = cfg.get_user() {
                    one.user(u);
                }
                if let Some(p) = cfg.get_password() {
                    one.password(p);
                }
                if let Some(d) = cfg.get_dbname() {
                    one.dbname(d);
                }
                if let Some(o) = cfg.get_options() {
                    one.options(o);
                }
                if let Some(a) = cfg.get_application_name() {
                    one.application_name(a);
                }
                if let Some(t) = cfg.get_connect_timeout() {
                    one.connect_timeout(*t);
                }
                if let Some(t) = cfg.get_tcp_user_timeout() {
                    one.tcp_user_timeout(*t);
                }
                one.keepalives(cfg.get_keepalives());
                one.keepalives_idle(cfg.get_keepalives_idle());
                if let Some(t) = cfg.get_keepalives_interval() {
                    one.keepalives_interval(t);
                }
                if let Some(r) = cfg.get_keepalives_retries() {
                    one.keepalives_retries(r);
                }
                one.channel_binding(cfg.get_channel_binding());
                one.target_session_attrs(cfg.get_target_session_attrs());
                one.ssl_mode(cfg.get_ssl_mode());
                one
            })
            .collect();
        Hosts {
            configs,
            preferred: AtomicUsize::new(0),
        }
    }

    /// `host:port` of the host that accepted the last connection (the
    /// first one before any did).
    pub fn preferred(&self) -> String {
        let c = &self.configs[self.preferred.load(Ordering::Relaxed)];
        let host = match &c.get_hosts()[0] {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        };
        match c.get_ports().first() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    /// Connects to a host that accepts, starting with the one that accepted
    /// last time. The next host is tried when one fails, or when one has
    /// not answered within the hedge delay (a quarter of the connect
    /// timeout, 100 ms to 1 s): a vanished machine then costs that long,
    /// not its whole connect timeout, and the first host to accept wins.
    /// The error is the last host's.
    pub async fn connect(&self) -> Result<Raw, tokio_postgres::Error> {
        let n = self.configs.len();
        let hedge = self.configs[0]
            .get_connect_timeout()
            .map_or(HEDGE_MAX, |t| (*t / 4).clamp(HEDGE_MIN, HEDGE_MAX));
        let first = self.preferred.load(Ordering::Relaxed);
        let mut attempts = tokio::task::JoinSet::new();
        let mut started = 0;
        let mut last = None;
        loop {
            if started < n {
                let at = (first + started) % n;
                let cfg = self.configs[at].clone();
                attempts.spawn(async move { (at, cfg.connect(NoTls).await) });
                started += 1;
            }
            let done = if started < n {
                tokio::select! {
                    done = attempts.join_next() => done,
                    _ = tokio::time::sleep(hedge) => continue,
                }
            } else {
                attempts.join_next().await
            };
            match done {
                Some(Ok((at, Ok(raw)))) => {
                    if at != first {
                        tracing::info!(host = ?self.configs[at].get_hosts(), "PostgreSQL accepts writes on another host now");
                    }
                    self.preferred.store(at, Ordering::Relaxed);
                    // Dropping the set aborts the attempts still running.
                    return Ok(raw);
                }
                Some(Ok((_, Err(e)))) => last = Some(e),
                Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
                None if started < n => {}
                None => return Err(last.expect("a URL names at least one host")),
            }
        }
    }
}

/// Bounds of how long a host may take to accept before the next one is
/// tried as well. Connecting (TCP, authentication, the read-write check)
/// takes a few milliseconds on a healthy network; the password hashing of
/// authentication is slow on purpose, so the delay does not go lower.
const HEDGE_MIN: Duration = Duration::from_millis(100);
const HEDGE_MAX: Duration = Duration::from_secs(1);

/// The pool's way of connecting: [`Hosts::connect`] in a task of its own.
pub struct PoolConnect(pub Arc<Hosts>);

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Connect for PoolConnect {
    fn connect(
        &self,
        _: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let hosts = self.0.clone();
        // Not aborted when the pool's caller is dropped: see the module doc.
        let attempt = tokio::spawn(async move {
            let (client, conn) = hosts.connect().await?;
            let driver = tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "PostgreSQL connection ended");
                }
            });
            Ok((client, driver))
        });
        Box::pin(async move {
            match attempt.await {
                Ok(r) => r,
                // Only a panic inside tokio-postgres gets here.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }
}

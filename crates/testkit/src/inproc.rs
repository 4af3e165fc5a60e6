//! Roles inside the test process.

use std::net::SocketAddr;
use std::path::Path;

use cluster::ClusterConfig;
use tokio::net::TcpListener;

use crate::Client;

/// `strata serve` running inside the test, on a port-0 listener.
pub struct InProc {
    /// The running roles.
    pub handle: strata::ServeHandle,
    /// Client for the public API.
    pub client: Client,
}

impl InProc {
    /// Starts every role over `data` with settings `cfg` (no members).
    pub async fn serve(cfg: &ClusterConfig, data: &Path) -> anyhow::Result<InProc> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let handle = strata::start_serve(cfg, data, listener).await?;
        let client = Client::new(format!("http://{}", handle.addr));
        Ok(InProc { handle, client })
    }

    /// Starts with default settings.
    pub async fn serve_default(data: &Path) -> anyhow::Result<InProc> {
        Self::serve(&ClusterConfig::parse("")?, data).await
    }

    /// Public API address (the gateway).
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// A client for request node `i` behind the gateway (its own counters
    /// on `/metrics`).
    pub fn node(&self, i: usize) -> Client {
        Client::new(format!("http://{}", self.handle.node_addrs[i]))
    }

    /// Stops everything cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.handle.shutdown().await
    }
}

/// A whole cluster (index, stores, node) as tasks of the test process, each
/// role on its own port-0 listener and talking to the others over HTTP,
/// exactly as separate processes would.
pub struct InProcCluster {
    /// The cluster file the roles were started from (real addresses).
    pub cfg: std::sync::Arc<ClusterConfig>,
    /// Client for the node's public API.
    pub client: Client,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl InProcCluster {
    /// One index, `stores` stores with R = `replicas`, one node.
    pub async fn start(stores: usize, replicas: usize) -> anyhow::Result<InProcCluster> {
        Self::start_with_caches(stores, replicas, 0, "").await
    }

    /// Like [`InProcCluster::start`], plus `caches` cache members and extra
    /// cluster-file text.
    pub async fn start_with_caches(
        stores: usize,
        replicas: usize,
        caches: usize,
        extra: &str,
    ) -> anyhow::Result<InProcCluster> {
        let dir = tempfile::tempdir()?;
        let mut listeners = Vec::new();
        let mut text = format!("replicas = {replicas}\n{extra}\n");
        let mut add =
            |name: String, role: &str, data: bool, l: TcpListener| -> anyhow::Result<()> {
                text.push_str(&format!(
                    "\n[[member]]\nname = \"{name}\"\nrole = \"{role}\"\naddr = \"{}\"\n",
                    l.local_addr()?
                ));
                if data {
                    text.push_str(&format!(
                        "data_dir = \"{}\"\n",
                        dir.path().join(&name).display()
                    ));
                }
                listeners.push((name, l));
                Ok(())
            };
        add(
            "index".into(),
            "index",
            true,
            TcpListener::bind("127.0.0.1:0").await?,
        )?;
        for i in 1..=stores {
            add(
                format!("store-{i}"),
                "store",
                true,
                TcpListener::bind("127.0.0.1:0").await?,
            )?;
        }
        for i in 1..=caches {
            add(
                format!("cache-{i}"),
                "cache",
                false,
                TcpListener::bind("127.0.0.1:0").await?,
            )?;
        }
        add(
            "node".into(),
            "node",
            false,
            TcpListener::bind("127.0.0.1:0").await?,
        )?;
        let cfg = std::sync::Arc::new(ClusterConfig::parse(&text)?);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for (name, l) in listeners {
            let (cfg, rx) = (cfg.clone(), rx.clone());
            tasks.push(tokio::spawn(async move {
                strata::run_role(cfg, &name, l, rx).await
            }));
        }
        let client = Client::new(format!("http://{}", cfg.member("node")?.addr));
        Ok(InProcCluster {
            cfg,
            client,
            stop,
            tasks,
            _dir: dir,
        })
    }

    /// Base URL of member `name`'s HTTP API.
    pub fn url(&self, name: &str) -> String {
        self.cfg
            .member(name)
            .map(|m| format!("http://{}", m.addr))
            .unwrap_or_default()
    }

    /// Stops every role and waits for them.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await??;
        }
        Ok(())
    }
}

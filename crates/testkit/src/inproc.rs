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
        let client = Client::new(format!("http://{}", handle.node_addr));
        Ok(InProc { handle, client })
    }

    /// Starts with default settings.
    pub async fn serve_default(data: &Path) -> anyhow::Result<InProc> {
        Self::serve(&ClusterConfig::parse("")?, data).await
    }

    /// Public API address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.node_addr
    }

    /// Stops everything cleanly.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.handle.shutdown().await
    }
}

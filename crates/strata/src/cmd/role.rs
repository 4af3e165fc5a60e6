//! `strata store|index|node|search`: one member of a cluster file.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cluster::ClusterConfig;
use tokio::sync::watch;

/// A member of a cluster file, by name.
#[derive(clap::Args)]
pub struct RoleArgs {
    /// The cluster file (TOML) listing every member.
    #[arg(long)]
    pub config: PathBuf,
    /// This process's member name in the cluster file.
    #[arg(long)]
    pub name: String,
    /// Runtime worker threads (default: TOKIO_WORKER_THREADS or cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs member `a.name` of `a.config` until `rx` says stop.
pub async fn run(a: RoleArgs, rx: watch::Receiver<bool>) -> anyhow::Result<()> {
    let cfg = Arc::new(ClusterConfig::load(&a.config)?);
    let me = cfg.member(&a.name)?.clone();
    let listener = strata::sockets::bind(me.listen_addr())
        .await
        .with_context(|| format!("cannot listen on {}", me.listen_addr()))?;
    println!(
        "strata {}: {} listening on http://{}",
        me.role.as_str(),
        me.name,
        me.listen_addr()
    );
    strata::run_role(cfg, &a.name, listener, rx).await
}

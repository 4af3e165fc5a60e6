//! `strata reindex`: search shards rebuilt from the index and the stored
//! page texts.

use std::path::PathBuf;

use cluster::ClusterConfig;

/// Rebuild search shards from the index and the stored page texts
/// (after a search member lost its data, or missed changes for longer
/// than its catch-up jobs waited).
#[derive(clap::Args)]
pub struct Reindex {
    /// A cluster file: pages go to its search members while they serve.
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    pub config: Option<PathBuf>,
    /// The data directory of `strata serve` (stop it first).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Only this search member (default: every one).
    #[arg(long)]
    pub member: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `strata reindex`.
pub async fn run(a: Reindex) -> anyhow::Result<()> {
    let Reindex {
        config,
        data,
        member,
        quiet,
    } = a;
    let r = match (config, data) {
        (Some(path), _) => {
            let cfg = ClusterConfig::load(&path)?;
            strata::reindex::run_cluster(&cfg, member.as_deref(), quiet).await?
        }
        (None, Some(dir)) => strata::reindex::run_serve(&dir, member.as_deref(), quiet).await?,
        (None, None) => anyhow::bail!("pass --config or --data"),
    };
    println!(
        "reindexed {} pages of {} keys in {:.1} s: {} page copies applied, {} already current, {} without stored text (uploaded before text was kept), {} with unreadable text (their blobs are gone or no store answered: see the log; a second run retries them)",
        r.pages, r.keys, r.secs, r.applied, r.stale, r.without_text, r.unreadable
    );
    Ok(())
}

//! `strata recover-index`: the name index rebuilt from the stores.

use std::path::PathBuf;
use std::sync::Arc;

use cluster::ClusterConfig;

/// Rebuild the name index from the stores' needles (after the index
/// was lost): every key with its record, deleted keys staying deleted.
#[derive(clap::Args)]
pub struct RecoverIndex {
    /// A cluster file: its stores are read (while they serve) and its
    /// `[index]` backend is written.
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    pub config: Option<PathBuf>,
    /// The data directory of `strata serve` (stop it first).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Write over an index that already holds keys (and remove keys no
    /// store names).
    #[arg(long)]
    pub replace: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `strata recover-index`.
pub async fn run(a: RecoverIndex) -> anyhow::Result<()> {
    let RecoverIndex {
        config,
        data,
        replace,
        quiet,
    } = a;
    let (stores, index): (Vec<node::StoreMember>, Arc<dyn index::Index>) = match (config, data) {
        (Some(path), _) => {
            let cfg = ClusterConfig::load(&path)?;
            let stores = strata::cluster_stores(&cfg);
            if stores.is_empty() {
                anyhow::bail!("{} names no store", path.display());
            }
            (stores, strata::cluster_index_backend(&cfg).await?)
        }
        (None, Some(dir)) => {
            let (store, db) = strata::open_serve_data(&dir)?;
            let local = node::StoreMember {
                name: strata::SERVE_STORE.into(),
                handle: node::StoreHandle::Local(store),
            };
            (vec![local], db)
        }
        (None, None) => anyhow::bail!("pass --config or --data"),
    };
    let s = strata::recover::run(&stores, index, replace, quiet).await?;
    println!(
        "recovered {} keys ({} replicas) from {} needles in {:.1} s: {} conflicts resolved, {} deleted keys kept deleted, {} keys no store names removed, {} needles without a key (volume format 1)",
        s.keys, s.replicas, s.needles, s.secs, s.conflicts, s.deleted, s.removed, s.unnamed
    );
    Ok(())
}

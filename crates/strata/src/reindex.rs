//! `strata reindex`: rebuilds search shards from the index and the stored
//! page texts ([`node::reindex`]), with a progress bar.
//!
//! With `--config` the run is a node of the cluster of its own: it reads
//! the configured index backend and the stores, and sends pages to the
//! search members over their internal API while they serve. With `--data`
//! it opens a stopped `strata serve`'s index, store and shards directly.

use std::path::Path;
use std::sync::Arc;

use cluster::ClusterConfig;
use indicatif::{ProgressBar, ProgressStyle};
use node::reindex::{Progress, Report};
use node::search::{SearchTier, ShardHandle, ShardMember};
use node::{IndexHandle, Node, StoreHandle, StoreMember};

/// Rebuilds `member` (or every search member) of the cluster in `cfg`.
pub async fn run_cluster(
    cfg: &ClusterConfig,
    member: Option<&str>,
    quiet: bool,
) -> anyhow::Result<Report> {
    let node = crate::cluster_node(cfg, None).await?;
    run(&node, member, quiet).await
}

/// Rebuilds the shards of the stopped `strata serve` whose data is in
/// `dir` (`member` is `search-0`, `search-1`, … or every one).
pub async fn run_serve(dir: &Path, member: Option<&str>, quiet: bool) -> anyhow::Result<Report> {
    let cfg = ClusterConfig::parse("")?;
    let (store, db) = crate::open_serve_data(dir)?;
    // As many shards as serve makes by default, or as it made (it may
    // have been given serve_shards); a lost shard directory is made anew.
    let mut n = cfg.search.serve_shards;
    while dir.join("search").join(n.to_string()).is_dir() {
        n += 1;
    }
    let shards = (0..n)
        .map(|i| {
            let shard = crate::open_shard(&cfg, &dir.join("search").join(i.to_string()))?;
            Ok(ShardMember {
                name: format!("search-{i}"),
                handle: ShardHandle::Local(shard),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut opts = crate::node_options(&cfg);
    opts.replicas = 1;
    let node = Node::new(
        opts,
        IndexHandle::new(db),
        vec![StoreMember {
            name: crate::SERVE_STORE.into(),
            handle: StoreHandle::Local(store),
        }],
        Vec::new(),
        None,
    );
    node.set_search(SearchTier::new(
        shards,
        std::time::Duration::from_millis(cfg.search.timeout_ms),
        1,
    ));
    run(&node, member, quiet).await
}

async fn run(node: &Arc<Node>, member: Option<&str>, quiet: bool) -> anyhow::Result<Report> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} pages  {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut counting = true;
    let report = node::reindex::run(node, member, |p: Progress| {
        if counting && p.total > 0 {
            counting = false;
            bar.set_style(style.clone());
            bar.set_length(p.total);
            bar.set_message("");
        }
        if counting {
            bar.set_message(format!("reading the index: {} keys", p.listed));
            bar.tick();
        } else {
            bar.set_position(p.done);
        }
    })
    .await?;
    bar.finish_and_clear();
    Ok(report)
}

//! `strata`: one binary, one role per process (or all of them with `serve`).
//! This file parses the command line and starts the runtime; each
//! subcommand lives in `cmd/`.

use clap::{Parser, Subcommand};
use tokio::sync::watch;

mod cmd;

/// strata — a horizontally scalable data-access tier for image hosting.
#[derive(Parser)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run every role in one process on loopback: the embedded default.
    Serve(cmd::serve::Serve),
    /// Run a memcached-compatible cache server: standalone with --listen and
    /// --memory-mb, or as a cluster member with --config and --name.
    Cache(cmd::cache::Cache),
    /// Run the gateway (load balancer and reverse proxy): standalone in
    /// front of the given backends, or as the gateway member --name of a
    /// cluster file (pools and routes from its [gateway] table; SIGHUP
    /// reloads the file).
    Gateway(cmd::gateway::Gateway),
    /// Run the durable job queue: standalone with --listen and --data, or as
    /// the queue member --name of a cluster file.
    Queue(cmd::queue::Queue),
    /// Run a blob store (volumes + needle map) from a cluster file.
    Store(cmd::role::RoleArgs),
    /// Run the name index from a cluster file.
    Index(cmd::role::RoleArgs),
    /// Run a request node (the public API) from a cluster file.
    Node(cmd::role::RoleArgs),
    /// Run a search shard (book pages) from a cluster file.
    Search(cmd::role::RoleArgs),
    /// Bulk-load a directory of books: DIR/<book>/<page>.png (or .jpg, ...)
    /// with DIR/<book>/<page>.txt; returns once every page is searchable.
    Import(cmd::import::Import),
    /// Rebuild the name index from the stores' needles (after the index
    /// was lost): every key with its record, deleted keys staying deleted.
    RecoverIndex(cmd::recover_index::RecoverIndex),
    /// Rebuild search shards from the index and the stored page texts
    /// (after a search member lost its data, or missed changes for longer
    /// than its catch-up jobs waited).
    Reindex(cmd::reindex::Reindex),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // s3s logs every refused S3 request (a 404, a bad signature)
            // as an error; the client got S3's error body already.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,s3s=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let threads = match &cli.cmd {
        Cmd::Serve(a) => a.threads,
        Cmd::Cache(a) => a.threads,
        Cmd::Gateway(a) => a.threads,
        Cmd::Queue(a) => a.threads,
        Cmd::Store(a) | Cmd::Index(a) | Cmd::Node(a) | Cmd::Search(a) => a.threads,
        Cmd::Import(_) | Cmd::RecoverIndex(_) | Cmd::Reindex(_) => None,
    };
    // One thread: a current-thread runtime, where a woken task runs on the
    // thread that woke it with no cross-thread handoff (the gateway's
    // proxied request wakes several tasks per request).
    let mut rt = if threads == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    rt.enable_all();
    if let Some(n) = threads.filter(|&n| n > 1) {
        rt.worker_threads(n);
    }
    rt.build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (stop, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    match cli.cmd {
        Cmd::Serve(a) => cmd::serve::run(a, rx).await,
        Cmd::Cache(a) => cmd::cache::run(a, rx).await,
        Cmd::Gateway(a) => cmd::gateway::run(a, rx).await,
        Cmd::Queue(a) => cmd::queue::run(a, rx).await,
        Cmd::Import(a) => cmd::import::run(a).await,
        Cmd::RecoverIndex(a) => cmd::recover_index::run(a).await,
        Cmd::Reindex(a) => cmd::reindex::run(a).await,
        Cmd::Store(a) | Cmd::Index(a) | Cmd::Node(a) | Cmd::Search(a) => {
            cmd::role::run(a, rx).await
        }
    }
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

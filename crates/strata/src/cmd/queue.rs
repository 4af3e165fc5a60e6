//! `strata queue`: the job queue, standalone or as a cluster member.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cluster::ClusterConfig;
use tokio::sync::watch;

/// Run the durable job queue: standalone with --listen and --data, or as
/// the queue member --name of a cluster file.
#[derive(clap::Args)]
pub struct Queue {
    /// The cluster file (run as the queue member --name).
    #[arg(long, requires = "name", conflicts_with_all = ["data", "beanstalk_listen"])]
    pub config: Option<PathBuf>,
    /// This process's member name in the cluster file.
    #[arg(long, requires = "config")]
    pub name: Option<String>,
    /// Address of the HTTP/JSON API.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Directory of the job log.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Also speak the beanstalkd protocol on this address.
    #[arg(long)]
    pub beanstalk_listen: Option<SocketAddr>,
    /// Answer a delete only once it is synced (`queue.sync_deletes`).
    #[arg(long, conflicts_with = "config")]
    pub sync_deletes: bool,
    /// Runtime worker threads (default: TOKIO_WORKER_THREADS or cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `strata queue` until `rx` says stop.
pub async fn run(a: Queue, rx: watch::Receiver<bool>) -> anyhow::Result<()> {
    match a {
        Queue {
            config: Some(config),
            name: Some(name),
            ..
        } => {
            let cfg = Arc::new(ClusterConfig::load(&config)?);
            let me = cfg.member(&name)?.clone();
            if me.role != cluster::Role::Queue {
                anyhow::bail!(
                    "member `{name}` has role `{}`, not `queue`",
                    me.role.as_str()
                );
            }
            let listener = strata::sockets::bind(me.listen_addr())
                .await
                .with_context(|| format!("cannot listen on {}", me.listen_addr()))?;
            println!("strata queue: {} on http://{}", me.name, me.listen_addr());
            strata::run_role(cfg, &name, listener, rx).await
        }
        Queue {
            listen,
            data,
            beanstalk_listen,
            sync_deletes,
            ..
        } => {
            let data = data.context("give --data DIR (or --config and --name)")?;
            let mut cfg = ClusterConfig::parse("")?;
            cfg.queue.sync_deletes = sync_deletes;
            let broker = strata::open_broker(&cfg, &data)?;
            if let Some(b) = beanstalk_listen {
                let l = strata::sockets::bind(b)
                    .await
                    .with_context(|| format!("cannot listen on {b}"))?;
                println!("strata queue: beanstalkd protocol on {}", l.local_addr()?);
                tokio::spawn(queue::beanstalk::serve(
                    l,
                    broker.clone(),
                    queue::beanstalk::BeanstalkOptions::default(),
                    strata::shutdown_signal(rx.clone()),
                ));
            }
            let listener = strata::sockets::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            println!(
                "strata queue: jobs API on http://{}",
                listener.local_addr()?
            );
            strata::sockets::warn_unused();
            queue::http::serve(listener, broker, strata::shutdown_signal(rx)).await?;
            Ok(())
        }
    }
}

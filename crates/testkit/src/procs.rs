//! Members as real `strata` processes, for kill -9 and failover tests.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Client, FaultProxy};

/// A loopback address nobody holds now, outside the range the kernel hands
/// out by itself (see [`crate::ports`]), for a server the kit cannot hand
/// a socket to (a peer in a benchmark): it binds the port itself, later.
/// A member's addresses are held sockets instead ([`crate::Socket`]).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    Ok(SocketAddr::new(ip, crate::ports::free_port(ip)?))
}

/// A cluster of processes started from one cluster file.
pub struct Procs {
    bin: PathBuf,
    dir: tempfile::TempDir,
    cfg_path: PathBuf,
    /// Member name -> (address, role as given to the binary).
    members: BTreeMap<String, (SocketAddr, &'static str)>,
    children: BTreeMap<String, Child>,
    /// Members' listening sockets, bound when their ports were chosen and
    /// held until the member is started with them.
    held: BTreeMap<String, std::net::TcpListener>,
    /// Members' further sockets ([`Layout::sockets`]), by member name.
    sockets: Vec<(String, crate::Socket)>,
    serve: bool,
    /// Environment for every member (e.g. a database password).
    env: Vec<(String, String)>,
    proxies: BTreeMap<String, FaultProxy>,
}

/// Which members a process cluster has besides the index.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Stores `store-1..`.
    pub stores: usize,
    /// R.
    pub replicas: usize,
    /// Cache members `cache-1..`.
    pub caches: usize,
    /// 0: one member `node` and no gateway; more: `node-1..` behind
    /// a member `gateway`.
    pub nodes: usize,
    /// A member `queue`.
    pub queue: bool,
    /// Search members `search-1..`.
    pub shards: usize,
    /// Members reached through a [`FaultProxy`]: their `addr` in the
    /// cluster file is the proxy's, and they `bind` their own.
    pub proxied: Vec<String>,
    /// Extra lines for one member's table, e.g. `("store-3", "max_bytes = 1000")`.
    pub member_lines: Vec<(String, String)>,
    /// The index lives outside the cluster (`index.backend = "postgres"`
    /// in the extra text): no `index` member.
    pub external_index: bool,
    /// Further listening sockets a member is handed with its main one:
    /// those the test puts in its lines or the extra text (an `s3_addr`,
    /// `gateway.tls.listen`).
    pub sockets: Vec<(String, crate::Socket)>,
}

impl Procs {
    /// One index, `stores` stores with R = `replicas`, and one node, each a
    /// process of `bin` (pass `env!("CARGO_BIN_EXE_strata")`).
    pub async fn cluster(bin: &Path, stores: usize, replicas: usize) -> anyhow::Result<Procs> {
        Self::cluster_with_caches(bin, stores, replicas, 0, "").await
    }

    /// Like [`Procs::cluster`], plus `caches` cache members (`cache-1`, ...)
    /// and extra cluster-file text (e.g. a `[cache]` table).
    pub async fn cluster_with_caches(
        bin: &Path,
        stores: usize,
        replicas: usize,
        caches: usize,
        extra: &str,
    ) -> anyhow::Result<Procs> {
        let l = Layout {
            stores,
            replicas,
            caches,
            ..Layout::default()
        };
        Self::launch(bin, l, extra).await
    }

    /// Like [`Procs::cluster_with_caches`] but with `nodes` request nodes
    /// (`node-1`, ...) behind a member `gateway`, which [`Procs::client`]
    /// then talks to.
    pub async fn cluster_with_gateway(
        bin: &Path,
        stores: usize,
        replicas: usize,
        caches: usize,
        nodes: usize,
        extra: &str,
    ) -> anyhow::Result<Procs> {
        let l = Layout {
            stores,
            replicas,
            caches,
            nodes,
            ..Layout::default()
        };
        Self::launch(bin, l, extra).await
    }

    /// One index, `stores` stores with R = `replicas`, a `queue` member
    /// and one node (whose workers take upload jobs from it).
    pub async fn cluster_with_queue(
        bin: &Path,
        stores: usize,
        replicas: usize,
        extra: &str,
    ) -> anyhow::Result<Procs> {
        Self::cluster_with_search(bin, stores, replicas, 0, extra).await
    }

    /// [`Procs::cluster_with_queue`] plus `shards` search members
    /// `search-1..`.
    pub async fn cluster_with_search(
        bin: &Path,
        stores: usize,
        replicas: usize,
        shards: usize,
        extra: &str,
    ) -> anyhow::Result<Procs> {
        let l = Layout {
            stores,
            replicas,
            queue: true,
            shards,
            ..Layout::default()
        };
        Self::launch(bin, l, extra).await
    }

    /// A cluster of any [`Layout`], each member a process of `bin`, with
    /// `extra` cluster-file text.
    pub async fn launch(bin: &Path, l: Layout, extra: &str) -> anyhow::Result<Procs> {
        Self::launch_with_env(bin, l, extra, &[]).await
    }

    /// [`Procs::launch`] with environment variables for every member.
    pub async fn launch_with_env(
        bin: &Path,
        l: Layout,
        extra: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Procs> {
        let Layout {
            stores,
            replicas,
            caches,
            nodes,
            queue,
            shards,
            ref proxied,
            ref member_lines,
            external_index,
            ref sockets,
        } = l;
        let dir = tempfile::tempdir()?;
        let mut text = format!("replicas = {replicas}\n{extra}\n");
        let mut addrs = BTreeMap::new();
        let mut proxies = BTreeMap::new();
        let mut planned = Vec::new();
        let mut add = |name: String, role: &'static str, data: bool| -> anyhow::Result<()> {
            planned.push((name, role, data));
            Ok(())
        };
        if !external_index {
            add("index".into(), "index", true)?;
        }
        for i in 1..=stores {
            add(format!("store-{i}"), "store", true)?;
        }
        for i in 1..=caches {
            add(format!("cache-{i}"), "cache", false)?;
        }
        if queue {
            add("queue".into(), "queue", true)?;
        }
        for i in 1..=shards {
            add(format!("search-{i}"), "search", true)?;
        }
        if nodes == 0 {
            add("node".into(), "node", false)?;
        } else {
            for i in 1..=nodes {
                add(format!("node-{i}"), "node", false)?;
            }
            add("gateway".into(), "gateway", false)?;
        }
        let mut held = BTreeMap::new();
        for (name, role, data) in planned {
            let listener = crate::ports::listen_free()?;
            let addr = listener.local_addr()?;
            held.insert(name.clone(), listener);
            text.push_str(&format!(
                "\n[[member]]\nname = \"{name}\"\nrole = \"{role}\"\n"
            ));
            if proxied.contains(&name) {
                // Others dial the proxy; the process listens behind it.
                let p = FaultProxy::start("127.0.0.1:0".parse()?, addr).await?;
                text.push_str(&format!("addr = \"{}\"\nbind = \"{addr}\"\n", p.addr()));
                proxies.insert(name.clone(), p);
            } else {
                text.push_str(&format!("addr = \"{addr}\"\n"));
            }
            if data {
                text.push_str(&format!(
                    "data_dir = \"{}\"\n",
                    dir.path().join(&name).display()
                ));
            }
            for (m, line) in member_lines {
                if *m == name {
                    text.push_str(&format!("{line}\n"));
                }
            }
            addrs.insert(name, (addr, role));
        }
        let cfg_path = dir.path().join("cluster.toml");
        std::fs::write(&cfg_path, text)?;
        let mut p = Procs {
            bin: bin.to_owned(),
            dir,
            cfg_path,
            members: addrs,
            children: BTreeMap::new(),
            held,
            sockets: sockets.clone(),
            serve: false,
            proxies,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        // The gateway last: its first health checks should find the nodes up.
        let (gw, names): (Vec<String>, Vec<String>) =
            p.members.keys().cloned().partition(|n| n == "gateway");
        for n in &names {
            p.start(n)?;
        }
        for n in &names {
            p.wait_ready(n).await?;
        }
        for n in &gw {
            p.start(n)?;
            p.wait_ready(n).await?;
        }
        Ok(p)
    }

    /// `strata serve` as one process over a data dir inside the kit's temp dir.
    pub async fn serve(bin: &Path) -> anyhow::Result<Procs> {
        let dir = tempfile::tempdir()?;
        let mut addrs = BTreeMap::new();
        let listener = crate::ports::listen_free()?;
        addrs.insert("serve".to_owned(), (listener.local_addr()?, "serve"));
        let cfg_path = dir.path().join("unused.toml");
        let mut p = Procs {
            bin: bin.to_owned(),
            dir,
            cfg_path,
            members: addrs,
            children: BTreeMap::new(),
            held: BTreeMap::from([("serve".to_owned(), listener)]),
            sockets: Vec::new(),
            serve: true,
            proxies: BTreeMap::new(),
            env: Vec::new(),
        };
        p.start("serve")?;
        p.wait_ready("serve").await?;
        Ok(p)
    }

    /// Starts (or restarts) member `name`, handing it its listening
    /// sockets through standard input (`strata::sockets::hand_over`): each
    /// the one held since its port was chosen, or (a restart) the port
    /// bound again now.
    pub fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let rebind = |addr: SocketAddr| {
            std::net::TcpListener::bind(addr)
                .map_err(|e| anyhow::anyhow!("member {name}: cannot bind {addr} again: {e}"))
        };
        let mut listeners = vec![match self.held.remove(name) {
            Some(l) => l,
            None => rebind(self.members[name].0)?,
        }];
        for (_, s) in self.sockets.iter().filter(|(m, _)| m == name) {
            listeners.push(match s.take() {
                Some(l) => l,
                None => rebind(s.addr())?,
            });
        }
        let mut cmd = Command::new(&self.bin);
        strata::sockets::hand_over(&mut cmd, &listeners)?;
        if self.serve {
            cmd.arg("serve")
                .arg("--data")
                .arg(self.dir.path().join("data"))
                .arg("--listen")
                .arg(self.members[name].0.to_string());
        } else {
            cmd.arg(self.members[name].1)
                .arg("--config")
                .arg(&self.cfg_path)
                .arg("--name")
                .arg(name);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("--threads")
            .arg("2")
            .env("RUST_LOG", "warn,s3s=off")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn()?;
        self.children.insert(name.to_owned(), child);
        Ok(())
    }

    /// Waits until `name` answers `/healthz`.
    pub async fn wait_ready(&self, name: &str) -> anyhow::Result<()> {
        if self.members[name].1 == "cache" {
            // A cache member speaks memcached, not HTTP: ready = accepting.
            let accepting = async {
                while tokio::net::TcpStream::connect(self.members[name].0)
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            return tokio::time::timeout(Duration::from_secs(20), accepting)
                .await
                .map_err(|_| anyhow::anyhow!("member {name} did not start"));
        }
        Client::new(format!("http://{}", self.members[name].0))
            .wait_ready("/healthz", Duration::from_secs(20))
            .await
            .map_err(|e| anyhow::anyhow!("member {name}: {e}"))
    }

    /// The fault proxy in front of member `name` (see [`Layout::proxied`]).
    pub fn proxy(&self, name: &str) -> &FaultProxy {
        &self.proxies[name]
    }

    /// SIGSTOP: the process hangs (sockets stay open, nothing answers).
    pub fn pause(&self, name: &str) -> anyhow::Result<()> {
        crate::faults::signal(self.pid(name)?, "STOP")
    }

    /// SIGCONT after [`Procs::pause`].
    pub fn resume(&self, name: &str) -> anyhow::Result<()> {
        crate::faults::signal(self.pid(name)?, "CONT")
    }

    fn pid(&self, name: &str) -> anyhow::Result<u32> {
        Ok(self
            .children
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("{name} is not running"))?
            .id())
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(mut c) = self.children.remove(name) {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Restarts a killed member and waits for it.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.kill(name)?;
        self.start(name)?;
        self.wait_ready(name).await
    }

    /// Address of member `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.members[name].0
    }

    /// Client for the public API (the gateway if there is one, else the
    /// node, or `serve`).
    pub fn client(&self) -> Client {
        let n = if self.serve {
            "serve"
        } else if self.members.contains_key("gateway") {
            "gateway"
        } else {
            "node"
        };
        Client::new(format!("http://{}", self.members[n].0))
    }

    /// Client for member `name` (e.g. one node behind the gateway).
    pub fn client_of(&self, name: &str) -> Client {
        Client::new(format!("http://{}", self.members[name].0))
    }

    /// The cluster file the members were started from.
    pub fn cfg_path(&self) -> &Path {
        &self.cfg_path
    }

    /// Sends SIGHUP to member `name` (a gateway reloads its file).
    pub fn hangup(&self, name: &str) -> anyhow::Result<()> {
        crate::faults::signal(self.pid(name)?, "HUP")
    }

    /// The temp dir holding data and the cluster file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `strata` binary for tests outside the strata package (which get it
/// as `CARGO_BIN_EXE_strata`): built here with the same cargo and profile
/// as the running test, so it is never stale.
pub fn strata_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test path {}", exe.display()))?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "strata", "--bin", "strata"]);
    if release {
        cmd.arg("--release");
    }
    let ok = cmd.status()?.success();
    anyhow::ensure!(ok, "building the strata binary failed");
    let bin = profile_dir.join("strata");
    anyhow::ensure!(bin.exists(), "{} was not built", bin.display());
    Ok(bin)
}

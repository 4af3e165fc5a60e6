//! A throwaway PostgreSQL for tests: a primary and, when asked, a
//! synchronous streaming standby, made with `initdb` and `pg_basebackup`
//! from Debian's `postgresql` package in a temporary directory, on free
//! ports, deleted when dropped.
//!
//! PostgreSQL refuses to run as root and tests run as root, so the
//! servers run as the `postgres` user the package creates (as the caller
//! when not root). The database user `strata` has a password (SCRAM over
//! TCP) so the backends' password path is exercised. The default
//! collation is ICU `en-US`, under which `"B" > "a"`: a backend that
//! forgot `COLLATE "C"` would list keys in the wrong order.
//!
//! A test that needs PostgreSQL and cannot find it fails with the reason
//! (install the `postgresql` package); nothing is skipped.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The database user and database the servers are made with.
pub const USER: &str = "strata";
/// The database name.
pub const DATABASE: &str = "strata";

/// Where the server binaries are: `$STRATA_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` with an `initdb`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(d) = std::env::var("STRATA_PG_BIN") {
        return Ok(PathBuf::from(d));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, b)) => Ok(b),
        None => bail!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql: \
             install the `postgresql` package (apt-get install postgresql; .ci/run does) \
             or point STRATA_PG_BIN at a bin directory"
        ),
    }
}

/// uid and gid to run the servers as: the `postgres` user when we are root.
fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no Uid in /proc/self/status")?;
    if euid != "0" {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .context("tests run as root and there is no `postgres` user to run PostgreSQL as: install the `postgresql` package")?;
    let f: Vec<&str> = line.split(':').collect();
    Ok(Some((f[2].parse()?, f[3].parse()?)))
}

/// One PostgreSQL server process.
pub struct PgServer {
    /// Address it listens on.
    pub host: IpAddr,
    /// Its port.
    pub port: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Extra `-c name=value` settings.
    settings: Vec<String>,
    /// A command prefix, e.g. `ip netns exec m1`.
    wrap: Vec<String>,
}

impl PgServer {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, as a machine's death would: no shutdown checkpoint.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The postmaster's children notice its death and exit by
        // themselves (PostgreSQL's postmaster-death check).
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A primary and an optional synchronous standby.
pub struct PgCluster {
    /// The server that started as primary.
    pub primary: PgServer,
    /// The synchronous standby, if made.
    pub standby: Option<PgServer>,
    /// The `strata` user's password.
    pub password: String,
    tools: Tools,
    // Last: removed after the servers are dead.
    _dir: tempfile::TempDir,
}

/// Running PostgreSQL's programs: where they are, as whom, with which
/// password, in which directory.
struct Tools {
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    password: String,
    dir: PathBuf,
}

/// How to make a [`PgCluster`].
#[derive(Clone, Debug)]
pub struct PgSpec {
    /// Make a synchronous standby too.
    pub standby: bool,
    /// Primary's address and its command prefix (network namespace).
    pub primary_host: IpAddr,
    /// Prefix for the primary's commands.
    pub primary_wrap: Vec<String>,
    /// Standby's address.
    pub standby_host: IpAddr,
    /// Prefix for the standby's commands.
    pub standby_wrap: Vec<String>,
}

impl Default for PgSpec {
    fn default() -> Self {
        PgSpec {
            standby: false,
            primary_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            primary_wrap: Vec::new(),
            standby_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            standby_wrap: Vec::new(),
        }
    }
}

impl PgCluster {
    /// One server on loopback, no standby.
    pub fn single() -> anyhow::Result<PgCluster> {
        Self::start(PgSpec::default())
    }

    /// A primary with a synchronous standby, both on loopback.
    pub fn replicated() -> anyhow::Result<PgCluster> {
        Self::start(PgSpec {
            standby: true,
            ..PgSpec::default()
        })
    }

    /// Makes and starts the servers of `spec`.
    pub fn start(spec: PgSpec) -> anyhow::Result<PgCluster> {
        sweep_orphans();
        let dir = tempfile::Builder::new().prefix("strata-pg").tempdir()?;
        // Whose servers these are, for the sweep of a later run.
        std::fs::write(
            dir.path().join("creator.pid"),
            std::process::id().to_string(),
        )?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64
            ^ u64::from(std::process::id());
        let t = Tools {
            bin: bin_dir()?,
            owner: run_as()?,
            password: format!("pw-{seed:016x}"),
            dir: dir.path().to_path_buf(),
        };
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{}\n", t.password))?;
        t.chown_tree(dir.path())?;
        let data = dir.path().join("primary");
        t.run(
            &[],
            Command::new(t.bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", USER, "-E", "UTF8", "--locale=C.UTF-8"])
                .args(["--locale-provider=icu", "--icu-locale=en-US"])
                .args(["--auth-host=scram-sha-256", "--auth-local=trust"])
                .arg(format!("--pwfile={}", pwfile.display())),
        )
        .context("initdb")?;
        // Connections and replication from any address (the standby and
        // the nodes may sit in other network namespaces).
        let hba = data.join("pg_hba.conf");
        let mut conf = std::fs::read_to_string(&hba)?;
        conf.push_str(
            "host all all 0.0.0.0/0 scram-sha-256\nhost replication all 0.0.0.0/0 scram-sha-256\n",
        );
        std::fs::write(&hba, conf)?;
        let mut primary = PgServer {
            host: spec.primary_host,
            port: 0,
            data,
            log: dir.path().join("primary.log"),
            child: None,
            settings: Vec::new(),
            wrap: spec.primary_wrap.clone(),
        };
        t.launch(&mut primary)?;
        let (h, p) = (primary.host.to_string(), primary.port.to_string());
        t.run(
            &primary.wrap,
            Command::new(t.bin.join("createdb")).args(["-h", &h, "-p", &p, "-U", USER, DATABASE]),
        )
        .context("createdb")?;
        let mut pg = PgCluster {
            primary,
            standby: None,
            password: t.password.clone(),
            tools: t,
            _dir: dir,
        };
        if spec.standby {
            let t = &pg.tools;
            let sdata = t.dir.join("standby");
            t.run(
                &spec.standby_wrap,
                Command::new(t.bin.join("pg_basebackup"))
                    .args(["-h", &h, "-p", &p, "-U", USER, "-X", "stream", "-c", "fast"])
                    .arg("-D")
                    .arg(&sdata),
            )
            .context("pg_basebackup")?;
            std::fs::write(sdata.join("standby.signal"), "")?;
            let mut auto = std::fs::read_to_string(sdata.join("postgresql.auto.conf"))?;
            auto.push_str(&format!(
                "primary_conninfo = 'host={h} port={p} user={USER} password={} application_name=standby'\n",
                t.password
            ));
            std::fs::write(sdata.join("postgresql.auto.conf"), auto)?;
            t.chown_tree(&sdata)?;
            let mut standby = PgServer {
                host: spec.standby_host,
                port: 0,
                data: sdata,
                log: t.dir.join("standby.log"),
                child: None,
                // Once promoted it has no standby of its own: it must not
                // wait for one.
                settings: vec!["synchronous_standby_names=".into()],
                wrap: spec.standby_wrap.clone(),
            };
            t.launch(&mut standby)?;
            pg.standby = Some(standby);
            // Only now make commits wait for the standby (createdb above
            // would otherwise have waited for a standby not yet made).
            pg.sql_primary("ALTER SYSTEM SET synchronous_standby_names = '*'")?;
            pg.sql_primary("SELECT pg_reload_conf()")?;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let out = pg.sql_primary(
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
                )?;
                if out.trim() == "1" {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the standby never became synchronous:\n{}",
                        pg.standby.as_ref().map(|s| s.log()).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(pg)
    }
}

impl Tools {
    fn chown_tree(&self, p: &Path) -> anyhow::Result<()> {
        if let Some((u, g)) = self.owner {
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{u}:{g}"))
                .arg(p)
                .status()?;
            if !st.success() {
                bail!("chown -R {}", p.display());
            }
        }
        Ok(())
    }

    /// `program` as the servers' user, after the command prefix `wrap` (a
    /// network namespace: entered as root, then privileges dropped with
    /// setpriv, since `ip netns exec` needs root).
    fn command(&self, wrap: &[String], program: &std::ffi::OsStr) -> Command {
        let Some((first, rest)) = wrap.split_first() else {
            let mut c = Command::new(program);
            if let Some((u, g)) = self.owner {
                c.uid(u).gid(g);
            }
            return c;
        };
        let mut c = Command::new(first);
        c.args(rest);
        if let Some((u, g)) = self.owner {
            c.arg("setpriv")
                .arg(format!("--reuid={u}"))
                .arg(format!("--regid={g}"))
                .args(["--clear-groups", "--"]);
        }
        c.arg(program);
        c
    }

    /// Runs a PostgreSQL tool as the servers' user, with the password.
    fn run(&self, wrap: &[String], cmd: &mut Command) -> anyhow::Result<String> {
        let mut full = self.command(wrap, cmd.get_program());
        full.args(cmd.get_args())
            .env("PGPASSWORD", &self.password)
            .env("LC_ALL", "C.UTF-8")
            .current_dir(&self.dir);
        let out = full
            .output()
            .with_context(|| format!("running {}", cmd.get_program().to_string_lossy()))?;
        if !out.status.success() {
            bail!(
                "{} failed: {}{}",
                cmd.get_program().to_string_lossy(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `s` on a free port (trying again on another if the port was
    /// taken between the probe and PostgreSQL's bind) and waits until it
    /// accepts connections.
    fn launch(&self, s: &mut PgServer) -> anyhow::Result<()> {
        for _ in 0..5 {
            s.port = crate::ports::free_port(s.host)?;
            let log = std::fs::File::create(&s.log)?;
            if let Some((u, g)) = self.owner {
                std::os::unix::fs::chown(&s.log, Some(u), Some(g))?;
            }
            let mut cmd = self.command(&s.wrap, self.bin.join("postgres").as_os_str());
            cmd.arg("-D").arg(&s.data);
            for set in [
                format!("listen_addresses={}", s.host),
                format!("port={}", s.port),
                format!("unix_socket_directories={}", self.dir.display()),
                "fsync=on".into(),
                "synchronous_commit=on".into(),
                "shared_buffers=32MB".into(),
                "max_connections=200".into(),
                "wal_level=replica".into(),
                "max_wal_senders=5".into(),
                "logging_collector=off".into(),
            ]
            .iter()
            .chain(&s.settings)
            {
                cmd.arg("-c").arg(set);
            }
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .env("LC_ALL", "C.UTF-8");
            s.child = Some(cmd.spawn().context("starting postgres")?);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if !s.running() {
                    break;
                }
                let ready = self.run(
                    &s.wrap,
                    Command::new(self.bin.join("pg_isready")).args([
                        "-q",
                        "-h",
                        &s.host.to_string(),
                        "-p",
                        &s.port.to_string(),
                    ]),
                );
                if ready.is_ok() {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("postgres did not start within 60 s:\n{}", s.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let log = s.log();
            if !log.contains("could not bind") && !log.contains("Address already in use") {
                bail!("postgres exited at start:\n{log}");
            }
        }
        bail!("postgres found no free port in 5 tries")
    }
}

impl PgCluster {
    /// Runs `sql` on the primary with psql; its unaligned output.
    pub fn sql_primary(&self, sql: &str) -> anyhow::Result<String> {
        self.sql(&self.primary, sql)
    }

    /// Runs `sql` on `server` with psql; its unaligned output.
    pub fn sql(&self, server: &PgServer, sql: &str) -> anyhow::Result<String> {
        self.tools.run(
            &server.wrap,
            Command::new(self.tools.bin.join("psql"))
                .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .args([
                    "-h",
                    &server.host.to_string(),
                    "-p",
                    &server.port.to_string(),
                ])
                .args(["-U", USER, "-d", DATABASE, "-c", sql]),
        )
    }

    /// Makes another database on the primary (a clean slate for one test
    /// scenario) and returns its URL.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        self.sql_primary(&format!("CREATE DATABASE \"{name}\""))?;
        Ok(self
            .url()
            .replace(&format!("/{DATABASE}?"), &format!("/{name}?")))
    }

    /// A URL naming every server, for `target_session_attrs=read-write`
    /// to pick the one that accepts writes (without the password).
    pub fn url(&self) -> String {
        let mut hosts = vec![self.primary.addr()];
        if let Some(s) = &self.standby {
            hosts.push(s.addr());
        }
        format!(
            "postgres://{USER}@{}/{DATABASE}?target_session_attrs=read-write",
            hosts.join(",")
        )
    }

    /// Promotes the standby (as an operator or Patroni would after the
    /// primary's loss) and waits until it accepts writes.
    pub fn promote(&self) -> anyhow::Result<()> {
        let s = self.standby.as_ref().context("no standby to promote")?;
        self.tools.run(
            &s.wrap,
            Command::new(self.tools.bin.join("pg_ctl"))
                .args(["promote", "-w", "-t", "60", "-D"])
                .arg(&s.data),
        )?;
        Ok(())
    }
}

/// Stops the servers and removes the directories of earlier runs whose
/// test process died without dropping its [`PgCluster`] (killed by a
/// timeout or SIGKILL), so that they do not pile up on a machine.
fn sweep_orphans() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let named = e.file_name().to_string_lossy().starts_with("strata-pg");
        let Ok(pid) = std::fs::read_to_string(dir.join("creator.pid")) else {
            continue;
        };
        if !named || Path::new("/proc").join(pid.trim()).exists() {
            continue;
        }
        for server in ["primary", "standby"] {
            let pid_file = dir.join(server).join("postmaster.pid");
            if let Some(pid) = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.lines().next().map(str::to_owned))
            {
                let _ = Command::new("kill")
                    .args(["-9", &pid])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Machines for multi-machine tests: each one a network namespace with its
//! own address on a bridge, so that a cluster file can name every member by
//! a real, non-loopback address, and a whole machine can be taken down (its
//! processes killed, its link cut) or cut off and brought back.
//!
//! The bridge lives in the test's own namespace with the subnet's `.254`,
//! so the test reaches every machine directly. Addresses are in
//! `10.213.X.0/24`, X derived from the test process's id so that two test
//! binaries running at once do not collide; nothing outside these
//! namespaces is ever addressed. Everything is removed on drop. Creating
//! namespaces needs root (`CAP_NET_ADMIN`): without it, [`Net::new`] fails
//! and says why.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// One machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Its name in the test.
    pub name: String,
    /// The namespace.
    pub ns: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The host side of its link (on the bridge).
    link: String,
}

/// A bridge and the machines on it.
pub struct Net {
    bridge: String,
    machines: Vec<Machine>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    /// Makes a machine per name, all up.
    pub fn new(names: &[&str]) -> anyhow::Result<Net> {
        let pid = std::process::id();
        let tag = format!("{:04x}", pid & 0xFFFF);
        let subnet = 20 + (pid % 200) as u8;
        let bridge = format!("stb{tag}");
        let mut net = Net {
            bridge: bridge.clone(),
            machines: Vec::new(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"]).context(
            "network namespaces cannot be created here (the machines test needs root and iproute2)",
        )?;
        ip(&[
            "addr",
            "add",
            &format!("10.213.{subnet}.254/24"),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for (i, name) in names.iter().enumerate() {
            let n = i + 1;
            let m = Machine {
                name: name.to_string(),
                ns: format!("strata-{tag}-{name}"),
                ip: Ipv4Addr::new(10, 213, subnet, n as u8),
                link: format!("st{tag}{n:02}"),
            };
            let peer = format!("sp{tag}{n:02}");
            ip(&["netns", "add", &m.ns])?;
            net.machines.push(m.clone());
            ip(&[
                "link", "add", &m.link, "type", "veth", "peer", "name", &peer,
            ])?;
            ip(&["link", "set", &m.link, "master", &bridge])?;
            ip(&["link", "set", &m.link, "up"])?;
            ip(&["link", "set", &peer, "netns", &m.ns])?;
            let inside = |args: &[&str]| {
                let mut full = vec!["netns", "exec", m.ns.as_str(), "ip"];
                full.extend_from_slice(args);
                ip(&full)
            };
            inside(&["link", "set", &peer, "name", "eth0"])?;
            inside(&["addr", "add", &format!("{}/24", m.ip), "dev", "eth0"])?;
            inside(&["link", "set", "eth0", "up"])?;
            inside(&["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Machine `name`.
    pub fn machine(&self, name: &str) -> &Machine {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no machine {name}"))
    }

    /// The command prefix that runs a program on machine `name`.
    pub fn wrap(&self, name: &str) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.machine(name).ns.clone(),
        ]
    }

    /// A command running `program` on machine `name`.
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.machine(name).ns])
            .arg(program);
        c
    }

    /// Cuts machine `name` off: its link goes down (packets to and from it
    /// vanish, connections hang as with a pulled cable).
    pub fn cut(&self, name: &str) -> anyhow::Result<()> {
        ip(&["link", "set", &self.machine(name).link, "down"])
    }

    /// Brings machine `name`'s link back.
    pub fn heal(&self, name: &str) -> anyhow::Result<()> {
        ip(&["link", "set", &self.machine(name).link, "up"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for m in &self.machines {
            // Any process left in the namespace dies with the test's
            // children; deleting the host side removes the pair.
            let _ = ip(&["link", "del", &m.link]);
            let _ = ip(&["netns", "del", &m.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

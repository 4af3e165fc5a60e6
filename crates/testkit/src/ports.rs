//! Ports for members that tests start as processes.
//!
//! A member's port is chosen and bound here ([`listen_free`]), and the
//! listening socket itself is handed to the child as its standard input
//! (`STRATA_LISTENER=stdin`, see `strata::sockets`), so the port is never
//! free between the choice and the child's first accept. A killed member
//! is restarted on the same port (its cluster file names it): the kit
//! binds it again for the new child. A listener a test adds itself (an S3,
//! TLS or beanstalkd one) is a [`Socket`], bound the same way and handed
//! over with the member's main one. Only servers the kit cannot hand a
//! socket to (PostgreSQL) get a bare port from [`free_port`], chosen now
//! and bound by the server later. A port from the OS's ephemeral range
//! (what `bind(…:0)` and every outgoing connection take) can be taken in
//! the meantime by any other test's connection or port-0 probe; CI once
//! lost a run that way (a restarted broker found its port taken and the
//! test waited forever).
//! So member ports come from just below the ephemeral range, which the
//! kernel never hands out by itself, and each is given out once per test
//! process.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// How many ports below the ephemeral range are ours to walk through.
const WINDOW: u16 = 12_000;

/// The window of ports to hand out: `[start, start + len)`.
fn window() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let lo = range
        .as_deref()
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(32_768);
    // A machine whose ephemeral range starts low leaves no room below it;
    // the top of the port space is used then (ports the kernel also hands
    // out, but rarely: it starts from a random point).
    if lo >= 1_024 + WINDOW {
        (lo - WINDOW, WINDOW)
    } else {
        (u16::MAX - WINDOW, WINDOW)
    }
}

/// The next offset into the window. It starts at a point of the process id
/// so that two test processes at once (a bench beside a test) rarely walk
/// the same ports.
fn next_offset() -> u32 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    NEXT.get_or_init(|| AtomicU32::new(std::process::id().wrapping_mul(7_919)))
        .fetch_add(1, Ordering::Relaxed)
}

/// The first listener `bind` gets on a port of the window, walking it
/// from this process's next offset.
fn bind_in_window(mut bind: impl FnMut(u16) -> io::Result<TcpListener>) -> io::Result<TcpListener> {
    let (start, len) = window();
    for _ in 0..len {
        let port = start + (next_offset() % u32::from(len)) as u16;
        if let Ok(l) = bind(port) {
            return Ok(l);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "no free port in {start}..{}",
            u32::from(start) + u32::from(len)
        ),
    ))
}

/// A listener on a loopback port from the window, held from this moment:
/// the member it is handed to ([`crate::Procs`]) takes it as it is, so no
/// other process can take the port in between.
pub fn listen_free() -> io::Result<TcpListener> {
    bind_in_window(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)))
}

/// A listening socket a test puts in a member's configuration (an
/// `s3_addr`, `gateway.tls.listen`, a `beanstalk_addr`): bound now in the
/// window, held until [`crate::Procs`] hands it to the member with the
/// member's main socket (see [`crate::Layout::sockets`]), so the port is
/// never free in between. Clones share the one socket, which is handed
/// over once; a restarted member gets the port bound again.
#[derive(Debug, Clone)]
pub struct Socket {
    addr: SocketAddr,
    held: Arc<Mutex<Option<TcpListener>>>,
}

impl Socket {
    /// A loopback socket on a free port of the window.
    pub fn free() -> io::Result<Socket> {
        let l = listen_free()?;
        Ok(Socket {
            addr: l.local_addr()?,
            held: Arc::new(Mutex::new(Some(l))),
        })
    }

    /// Its address, for the configuration.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listener, the first time; `None` once handed over.
    pub(crate) fn take(&self) -> Option<TcpListener> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A port on `ip` nobody holds now, and that no other caller in this
/// process is given again until the window wraps (12 000 ports later).
/// `ip` may be an address of a network namespace, not ours to bind; a
/// probe on loopback stands in for it then (each namespace has its own
/// ports, and loopback's are what collide with ours). The probe is
/// released at once: the child binds the port later.
pub fn free_port(ip: IpAddr) -> io::Result<u16> {
    let probe = bind_in_window(|port| {
        TcpListener::bind((ip, port)).or_else(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, port)))
    })?;
    Ok(probe.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_and_never_repeat() {
        let mut seen = std::collections::HashSet::new();
        let ephemeral = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (start, len) = window();
        for _ in 0..500 {
            let p = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
            assert!(seen.insert(p), "port {p} handed out twice");
            assert!((start..start + len).contains(&p));
        }
        // The kernel's own choice lies above the window, unless this
        // machine's ephemeral range left no room below it.
        if start != u16::MAX - WINDOW {
            assert!(ephemeral >= start + len, "{ephemeral} below {start}+{len}");
        }
    }
}

//! Listening sockets: bound here, or handed over already listening by
//! whoever started the process.
//!
//! With `STRATA_LISTENER=stdin` the process's standard input is a
//! listening TCP socket (inetd's "wait" convention), and a listener asked
//! for the address it is bound to takes it instead of binding again. Why:
//! a supervisor (or the test kit) that picks a member's port can bind it
//! and keep it bound until the member owns it, so no other process can
//! take the port in between — choosing a free port, releasing it and
//! letting the child bind it later is a race. Every other address is bound
//! as usual. Standard input is the one descriptor std lends out without
//! `unsafe`, which the workspace denies.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::{Mutex, OnceLock};

use tokio::net::TcpListener;

/// The variable that says standard input is a listening socket.
pub const LISTENER: &str = "STRATA_LISTENER";

/// The inherited listener, until it is taken.
fn inherited() -> &'static Mutex<Option<std::net::TcpListener>> {
    static INHERITED: OnceLock<Mutex<Option<std::net::TcpListener>>> = OnceLock::new();
    INHERITED.get_or_init(|| {
        let on = std::env::var(LISTENER).is_ok_and(|v| v == "stdin");
        Mutex::new(on.then(adopt_stdin).flatten())
    })
}

/// Standard input as a listener, if it is a listening TCP socket.
fn adopt_stdin() -> Option<std::net::TcpListener> {
    let fd = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "{LISTENER}=stdin: standard input is closed; ignored");
            return None;
        }
    };
    let l = std::net::TcpListener::from(fd);
    match l.local_addr() {
        Ok(_) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "{LISTENER}=stdin: standard input is not a listening socket; ignored");
            None
        }
    }
}

/// A listener on `addr`: the inherited socket bound to it if there is
/// one, else a new one.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let handed = {
        let mut slot = inherited().lock().unwrap_or_else(|p| p.into_inner());
        let ours = slot
            .as_ref()
            .is_some_and(|l| l.local_addr().is_ok_and(|a| a == addr));
        if ours {
            slot.take()
        } else {
            None
        }
    };
    match handed {
        Some(l) => {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        }
        None => TcpListener::bind(addr).await,
    }
}

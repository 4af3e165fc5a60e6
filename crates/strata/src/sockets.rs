//! Listening sockets: bound here, or handed over already listening by
//! whoever started the process.
//!
//! With `STRATA_LISTENER=stdin`, standard input carries sockets that are
//! already listening, and a listener asked for an address one of them is
//! bound to takes it instead of binding again. Why: a supervisor (or the
//! test kit) that picks a member's ports can bind them and keep them bound
//! until the member owns them, so no other process can take a port in
//! between — choosing a free port, releasing it and letting the child bind
//! it later is a race. Every other address is bound as usual.
//!
//! Standard input is the one descriptor std lends out without `unsafe`,
//! which the workspace denies, so it carries them in one of two ways:
//!
//! - it *is* a listening TCP socket (inetd's "wait" convention): one
//!   listener, for a supervisor that has only the main address to give;
//! - it is a Unix stream socket whose first message carries the listeners
//!   as `SCM_RIGHTS` (one byte of data, as a stream socket needs some):
//!   any number of them — a node's S3 listener beside its HTTP one, a
//!   gateway's TLS one. [`hand_over`] writes that message; it is what the
//!   test kit uses.
//!
//! A handed-over socket nothing asks for is closed with a warning once the
//! process has bound all it binds ([`warn_unused`]).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use tokio::net::TcpListener;

/// The variable that says standard input carries listening sockets.
pub const LISTENER: &str = "STRATA_LISTENER";

/// Most sockets one message hands over.
pub const MAX_HANDED: usize = 16;

/// The inherited listeners not taken yet.
fn inherited() -> &'static Mutex<Vec<std::net::TcpListener>> {
    static INHERITED: OnceLock<Mutex<Vec<std::net::TcpListener>>> = OnceLock::new();
    INHERITED.get_or_init(|| {
        let on = std::env::var(LISTENER).is_ok_and(|v| v == "stdin");
        Mutex::new(if on { adopt_stdin() } else { Vec::new() })
    })
}

/// The listeners standard input carries (see the module doc); none, with
/// a warning, when it carries something else.
fn adopt_stdin() -> Vec<std::net::TcpListener> {
    let fd = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "{LISTENER}=stdin: standard input is closed; ignored");
            return Vec::new();
        }
    };
    let fds = match rustix::net::sockopt::socket_domain(&fd) {
        Ok(AddressFamily::UNIX) => match receive(&fd) {
            Ok(fds) => fds,
            Err(e) => {
                tracing::warn!(error = %e, "{LISTENER}=stdin: no sockets came on standard input; ignored");
                return Vec::new();
            }
        },
        Ok(_) => vec![fd],
        Err(e) => {
            tracing::warn!(error = %e, "{LISTENER}=stdin: standard input is not a listening socket; ignored");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for fd in fds {
        let l = std::net::TcpListener::from(fd);
        match l.local_addr() {
            Ok(_) => out.push(l),
            Err(e) => {
                tracing::warn!(error = %e, "{LISTENER}=stdin: a handed-over descriptor is not a listening TCP socket; ignored");
            }
        }
    }
    out
}

/// The descriptors of the first message on the Unix socket `sock`.
fn receive(sock: &OwnedFd) -> std::io::Result<Vec<OwnedFd>> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_HANDED))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        // Not inherited by anything this process starts.
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.bytes == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the socket was closed with no message",
        ));
    }
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    // More than the limit (the buffer's alignment leaves room for a few
    // over it), or more than fit and the kernel dropped the rest: some
    // address the starter meant to hold would be bound afresh. Refuse
    // them all (the received ones close here) rather than keep a part.
    if fds.len() > MAX_HANDED || got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than {MAX_HANDED} sockets were handed over"),
        ));
    }
    Ok(fds)
}

/// Sends `listeners` as one `SCM_RIGHTS` message on `sock` (one byte of
/// data: a stream socket carries no message without some).
fn send(sock: &UnixStream, listeners: &[std::net::TcpListener]) -> std::io::Result<()> {
    let fds: Vec<_> = listeners.iter().map(|l| l.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("no room for the descriptors"));
    }
    rustix::net::sendmsg(
        sock,
        &[IoSlice::new(b"L")],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Makes `cmd` start with `listeners` handed over (at most
/// [`MAX_HANDED`]): sets [`LISTENER`] and gives it a standard input that
/// carries them. The caller's copies may be dropped once this returns; the
/// child gets its own.
pub fn hand_over(cmd: &mut Command, listeners: &[std::net::TcpListener]) -> std::io::Result<()> {
    if listeners.len() > MAX_HANDED {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} sockets to hand over; at most {MAX_HANDED}",
                listeners.len()
            ),
        ));
    }
    let (ours, theirs) = UnixStream::pair()?;
    // The message waits in the socket until the child reads it, so it can
    // be sent before the child exists.
    send(&ours, listeners)?;
    cmd.env(LISTENER, "stdin")
        .stdin(Stdio::from(OwnedFd::from(theirs)));
    Ok(())
}

/// A listener on `addr`: the inherited socket bound to it if there is
/// one, else a new one.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let handed = {
        let mut all = inherited().lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .position(|l| l.local_addr().is_ok_and(|a| a == addr))
            .map(|i| all.swap_remove(i))
    };
    match handed {
        Some(l) => {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        }
        None => TcpListener::bind(addr).await,
    }
}

/// Closes the handed-over sockets nothing took, each with a warning: a
/// supervisor gave an address the configuration does not listen on, and
/// clients of it would otherwise wait on a backlog nobody accepts from.
/// Call once every listener of the process is bound.
pub fn warn_unused() {
    let left = std::mem::take(&mut *inherited().lock().unwrap_or_else(|p| p.into_inner()));
    for l in left {
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::warn!(%addr, "{LISTENER}=stdin: a handed-over socket is not in the configuration; closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(n: usize) -> Vec<std::net::TcpListener> {
        (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect()
    }

    /// What a child does at start, over a socket pair made here.
    fn handed(listeners: &[std::net::TcpListener]) -> std::io::Result<Vec<SocketAddr>> {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        send(&ours, listeners).expect("send");
        Ok(receive(&OwnedFd::from(theirs))?
            .into_iter()
            .map(|fd| std::net::TcpListener::from(fd).local_addr().expect("addr"))
            .collect())
    }

    #[test]
    fn several_listeners_cross_one_message_and_keep_their_addresses() {
        let ls = listeners(3);
        let want: Vec<_> = ls.iter().map(|l| l.local_addr().expect("addr")).collect();
        assert_eq!(handed(&ls).expect("receive"), want);
    }

    #[test]
    fn more_sockets_than_the_receiver_takes_are_refused_not_cut_short() {
        // Another starter than `hand_over`, which would refuse to send so many.
        for n in [MAX_HANDED + 1, 3 * MAX_HANDED] {
            let e = handed(&listeners(n)).expect_err("too many");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{n}: {e}");
        }
    }

    #[test]
    fn a_closed_socket_with_no_message_is_an_error_not_an_empty_hand() {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        drop(ours);
        let e = receive(&OwnedFd::from(theirs)).expect_err("nothing sent");
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn too_many_sockets_are_refused_before_anything_is_sent() {
        let mut cmd = Command::new("true");
        let e = hand_over(&mut cmd, &listeners(MAX_HANDED + 1)).expect_err("too many");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }
}

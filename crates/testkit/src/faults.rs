//! Fault injection between roles: a TCP proxy whose behaviour a test
//! switches at run time, and signals that crash or hang a process.
//!
//! A member that should sit behind a proxy gets the proxy's address as its
//! `addr` in the cluster file (what every other role dials) and its own
//! `bind` address to listen on, so every link *to* that member crosses the
//! proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the link does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bytes pass untouched.
    Pass,
    /// Each chunk of bytes, either way, waits this long first.
    Latency(Duration),
    /// New connections are accepted and closed at once; open ones are
    /// closed (a peer that refuses work).
    Drop,
    /// Every connection, open or new, is reset (RST).
    Reset,
    /// A partition: connections open and stay open, but no byte crosses
    /// either way, so peers wait until their own timeouts.
    Blackhole,
}

/// A TCP proxy in front of one address.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `listen` (port 0 for any) and forwards to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<FaultProxy> {
        let l = TcpListener::bind(listen).await?;
        let addr = l.local_addr()?;
        let (fault, rx) = watch::channel(Fault::Pass);
        let task = tokio::spawn(accept_loop(l, target, rx));
        Ok(FaultProxy { addr, fault, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault; open connections follow at once.
    pub fn set(&self, f: Fault) {
        let _ = self.fault.send(f);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(l: TcpListener, target: SocketAddr, rx: watch::Receiver<Fault>) {
    loop {
        let Ok((down, _)) = l.accept().await else {
            continue;
        };
        let rx = rx.clone();
        tokio::spawn(async move {
            let fault = *rx.borrow();
            match fault {
                Fault::Drop => return,
                Fault::Reset => return reset(down),
                _ => {}
            }
            let Ok(up) = TcpStream::connect(target).await else {
                return reset(down);
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            link(down, up, rx).await;
        });
    }
}

/// Closes with RST instead of FIN (linger 0).
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

/// Pumps both ways until either side closes or the fault says otherwise.
async fn link(down: TcpStream, up: TcpStream, rx: watch::Receiver<Fault>) {
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    // When one direction ends, the other is told to stop too: a half-open
    // link would leave the peer waiting forever.
    let (stop, stop_rx) = watch::channel(false);
    let stop = Arc::new(stop);
    let a = tokio::spawn(pump(dr, uw, rx.clone(), stop.clone(), stop_rx.clone()));
    let b = tokio::spawn(pump(ur, dw, rx, stop, stop_rx));
    let (Ok((dr, uw, ra)), Ok((ur, dw, rb))) = (a.await, b.await) else {
        return;
    };
    // Whole streams again: dropping a write half alone would send a FIN
    // before any reset.
    let (Ok(down), Ok(up)) = (dr.reunite(dw), ur.reunite(uw)) else {
        return;
    };
    if ra || rb {
        let _ = down.set_zero_linger();
        let _ = up.set_zero_linger();
    }
}

/// Copies `r` to `w` under the current fault until either side closes,
/// the fault ends the link, or the other direction stopped. Returns the
/// halves and whether the link is to be reset.
async fn pump(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    mut rx: watch::Receiver<Fault>,
    stop: Arc<watch::Sender<bool>>,
    mut stopped: watch::Receiver<bool>,
) -> (OwnedReadHalf, OwnedWriteHalf, bool) {
    let mut buf = vec![0u8; 64 << 10];
    let mut reset = false;
    loop {
        let fault = *rx.borrow_and_update();
        match fault {
            Fault::Drop => break,
            Fault::Reset => {
                reset = true;
                break;
            }
            Fault::Blackhole => {
                // Hold the connection, move nothing, until the fault changes.
                tokio::select! {
                    c = rx.changed() => if c.is_err() { break },
                    _ = stopped.wait_for(|s| *s) => break,
                }
                continue;
            }
            Fault::Pass | Fault::Latency(_) => {}
        }
        let n = tokio::select! {
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // Re-check the fault even while idle.
            c = rx.changed() => {
                if c.is_err() {
                    break;
                }
                continue;
            }
            _ = stopped.wait_for(|s| *s) => break,
        };
        // Bytes read just as a partition starts are lost.
        let now = *rx.borrow();
        match now {
            Fault::Latency(d) => tokio::time::sleep(d).await,
            Fault::Pass => {}
            _ => continue,
        }
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = stop.send(true);
    (r, w, reset)
}

/// Sends `signal` (e.g. "STOP", "CONT", "KILL") to process `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?
        .success();
    anyhow::ensure!(ok, "kill -{signal} {pid} failed");
    Ok(())
}

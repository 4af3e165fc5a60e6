//! Connections to backends: a pooled idle socket (checked for a close
//! the backend sent while it sat idle, when the request must not be
//! repeated) or a new one within the connect timeout; and a client
//! connection whose first bytes were already read, replayed for the full
//! path.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::gateway::Gateway;
use crate::pool::Backend;

/// A pooled or new connection to a backend.
pub(crate) async fn connect(
    gw: &Gateway,
    b: &Backend,
    check_alive: bool,
) -> std::io::Result<(TcpStream, bool)> {
    loop {
        let idle = b.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(s) = idle else { break };
        if !check_alive {
            return Ok((s, true));
        }
        // A request that must not be repeated goes on a connection seen
        // open just now: an idle one the backend closed reads as EOF.
        let mut probe = [0u8; 1];
        match s.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok((s, true)),
            _ => continue,
        }
    }
    Ok((dial(gw, b).await?, false))
}

/// A new connection to backend `b`, within the connect timeout.
pub(crate) async fn dial(gw: &Gateway, b: &Backend) -> std::io::Result<TcpStream> {
    let s = tokio::time::timeout(gw.options().connect_timeout, TcpStream::connect(b.addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A client connection whose first bytes were already read: they are read
/// again first, so the full path sees the connection from the start of the
/// request the fast path declined.
pub(crate) struct Prefixed {
    prefix: BytesMut,
    inner: TcpStream,
}

impl Prefixed {
    pub(crate) fn new(prefix: BytesMut, inner: TcpStream) -> Prefixed {
        Prefixed { prefix, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

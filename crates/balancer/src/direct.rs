//! Reads answered by a backend in this process, written straight to the
//! client connection.
//!
//! A backend served in this process (`strata serve`'s nodes) may offer
//! [`DirectReads`]: it takes a GET or HEAD as a path and the two headers a
//! read depends on, and gives back the status, its header lines and the
//! body as bytes it already holds. The relay (the crate's fast path) picks the
//! backend as for any request (balancing, health, stickiness, admission,
//! rate limits, metrics, the access log) and writes the head and the body
//! in one vectored write: no request or response object is built on either
//! side, and the body is copied once, by the kernel, into the socket.
//!
//! A read the backend does not answer this way (not a blob, say) is
//! [`Direct::Declined`] before anything is counted, and goes the full path.
//!
//! This module holds what such a backend offers ([`LocalBackend`]: its
//! [`LocalService`] and its [`DirectReads`]); writing a direct answer on
//! the client connection is the crate's private `answer` module.

use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use hyper::{Request, Response};

use crate::body::UpBody;

/// A GET or HEAD, as much of it as a read depends on.
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    /// HEAD rather than GET.
    pub head: bool,
    /// Path and query, as the client sent them.
    pub target: &'a str,
    /// The `If-None-Match` header.
    pub if_none_match: Option<&'a str>,
    /// The `Range` header.
    pub range: Option<&'a str>,
}

/// A backend's answer to a [`Read`].
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header lines, each `name: value\r\n`, without `Content-Length`,
    /// `Connection` or `Set-Cookie` (the gateway writes those).
    pub lines: Bytes,
    /// More header lines made for this answer alone (`content-range`).
    pub more: Option<String>,
    /// `Content-Length` (`None`: a response without one, a 304).
    pub length: Option<u64>,
    /// The body (empty for HEAD and 304).
    pub body: Bytes,
    /// A body that is a range of a file instead, sent with `sendfile(2)`:
    /// from the page cache to the socket with no copy through user space.
    pub file: Option<FileBody>,
    /// A body sent as it arrives instead (an object read chunk by chunk);
    /// `length` says how long it is, and a body that fails or ends short
    /// closes the connection.
    pub stream: Option<StreamedBody>,
}

/// A body read while it is sent.
pub struct StreamedBody(
    pub Pin<Box<dyn hyper::body::Body<Data = Bytes, Error = std::io::Error> + Send>>,
);

impl std::fmt::Debug for StreamedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamedBody")
    }
}

/// A range of an open file sent as a body.
#[derive(Clone)]
pub struct FileBody {
    /// The file.
    pub file: Arc<dyn AsFd + Send + Sync>,
    /// Offset of the first byte.
    pub offset: u64,
    /// Bytes to send.
    pub len: u64,
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBody")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

/// How a backend takes a [`Read`].
pub enum Direct {
    /// Answered without waiting.
    Now(Reply),
    /// Answered once this completes (an index lookup, a remote store).
    Later(Pin<Box<dyn Future<Output = Reply> + Send>>),
    /// Not a read it answers directly: the full path serves it.
    Declined,
}

/// Reads a backend in this process answers directly.
pub trait DirectReads: Send + Sync {
    /// Whether it answers `r` directly: asked before a backend is picked,
    /// so that a read it does not take is balanced once, by the full path.
    fn takes(&self, r: &Read<'_>) -> bool;

    /// Takes one read; nothing is done or counted for one it declines.
    fn read(&self, r: &Read<'_>) -> Direct;
}

/// A backend served in this process: every request as a value, and reads
/// answered directly if it offers them.
#[derive(Clone)]
pub struct LocalBackend {
    /// The backend's whole API.
    pub service: LocalService,
    /// Its direct reads, if any.
    pub reads: Option<Arc<dyn DirectReads>>,
}

/// The whole API of a backend that runs in this process (`strata serve`'s
/// nodes): the gateway hands it each request as a value and takes its
/// response, with no HTTP exchange in between. Its address stays its name
/// in the pool (balancing, stickiness, metrics) and what health checks
/// call.
pub type LocalService = Arc<
    dyn Fn(Request<UpBody>) -> Pin<Box<dyn Future<Output = Response<UpBody>> + Send>> + Send + Sync,
>;

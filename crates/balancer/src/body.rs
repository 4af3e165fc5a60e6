//! Bodies as the gateway passes them on: one boxed type for requests sent
//! upstream and responses sent downstream, whatever produced them (hyper,
//! a backend in this process, the edge's compressor, the gateway's own
//! short answers).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Response, StatusCode};

/// Error of a body the gateway relays (hyper's, or an upstream that broke
/// off mid-body).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of requests sent upstream and responses sent downstream.
pub type UpBody = BoxBody<Bytes, BoxError>;

/// A body that is `Send` but not `Sync` (axum's) as an [`UpBody`]. Polling
/// takes `&mut self`, so the mutex is never contended; it only makes the
/// wrapper `Sync`.
pub fn send_body<B>(body: B) -> UpBody
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    struct SyncBody<B>(std::sync::Mutex<B>);
    impl<B> Body for SyncBody<B>
    where
        B: Body<Data = Bytes> + Send + Unpin,
        B::Error: Into<BoxError>,
    {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let b = self
                .get_mut()
                .0
                .get_mut()
                .unwrap_or_else(|p| p.into_inner());
            Pin::new(b).poll_frame(cx).map_err(Into::into)
        }
        fn is_end_stream(&self) -> bool {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_end_stream()
        }
        fn size_hint(&self) -> SizeHint {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).size_hint()
        }
    }
    SyncBody(std::sync::Mutex::new(body)).boxed()
}

/// A plain-text response.
pub(crate) fn plain(status: StatusCode, msg: &str) -> Response<UpBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.to_owned()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

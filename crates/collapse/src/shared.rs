//! Streaming to followers: one origin body, many readers, each getting the
//! bytes as they arrive.
//!
//! The leader pushes chunks into a [`SharedBody`]; every reader gets the
//! chunks pushed so far and then each new one through its own channel
//! (the chunks are shared `Bytes`, so a slow reader queues pointers, not
//! copies). The body ends either finished or failed; a failed body makes
//! every reader's next read an error, so a cut-off origin read is never
//! presented as a complete body.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

type Chunk = Result<Bytes, String>;

enum State {
    Open,
    Done,
    Failed(String),
}

struct Inner {
    chunks: Vec<Bytes>,
    readers: Vec<mpsc::UnboundedSender<Chunk>>,
    state: State,
}

/// One body being received, readable by many.
pub struct SharedBody {
    inner: Mutex<Inner>,
}

/// One reader of a [`SharedBody`].
pub struct SharedReader {
    rx: mpsc::UnboundedReceiver<Chunk>,
}

impl SharedBody {
    /// An open, empty body.
    pub fn new() -> Arc<SharedBody> {
        Arc::new(SharedBody {
            inner: Mutex::new(Inner {
                chunks: Vec::new(),
                readers: Vec::new(),
                state: State::Open,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a chunk and hands it to every reader.
    pub fn push(&self, chunk: Bytes) {
        let mut g = self.lock();
        g.readers.retain(|r| r.send(Ok(chunk.clone())).is_ok());
        g.chunks.push(chunk);
    }

    /// The body is complete: readers end after the chunks they have.
    pub fn finish(&self) {
        let mut g = self.lock();
        g.state = State::Done;
        g.readers.clear();
    }

    /// The origin read failed midway: every reader's next read is an error.
    pub fn fail(&self, why: String) {
        let mut g = self.lock();
        for r in g.readers.drain(..) {
            let _ = r.send(Err(why.clone()));
        }
        g.state = State::Failed(why);
    }

    /// A reader that starts from the first byte.
    pub fn reader(&self) -> SharedReader {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut g = self.lock();
        for c in &g.chunks {
            let _ = tx.send(Ok(c.clone()));
        }
        match &g.state {
            State::Open => g.readers.push(tx),
            State::Done => {}
            State::Failed(why) => {
                let _ = tx.send(Err(why.clone()));
            }
        }
        SharedReader { rx }
    }
}

impl SharedReader {
    /// The next chunk: `None` at the end, `Some(Err)` if the origin read
    /// failed.
    pub fn poll_chunk(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, String>>> {
        self.rx.poll_recv(cx)
    }

    /// The next chunk, awaited.
    pub async fn next(&mut self) -> Option<Result<Bytes, String>> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_readers_replay_and_failures_reach_everyone() {
        let b = SharedBody::new();
        let mut early = b.reader();
        b.push(Bytes::from_static(b"ab"));
        let mut late = b.reader();
        b.push(Bytes::from_static(b"cd"));
        b.finish();
        let mut after = b.reader();
        for r in [&mut early, &mut late, &mut after] {
            assert_eq!(r.next().await, Some(Ok(Bytes::from_static(b"ab"))));
            assert_eq!(r.next().await, Some(Ok(Bytes::from_static(b"cd"))));
            assert_eq!(r.next().await, None);
        }
        let f = SharedBody::new();
        let mut r1 = f.reader();
        f.push(Bytes::from_static(b"x"));
        f.fail("origin reset".into());
        let mut r2 = f.reader();
        for r in [&mut r1, &mut r2] {
            assert_eq!(r.next().await, Some(Ok(Bytes::from_static(b"x"))));
            assert_eq!(r.next().await, Some(Err("origin reset".into())));
        }
    }
}

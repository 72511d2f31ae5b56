//! `admin.write_stall_timeout_ms`: an answer's bytes must keep moving. hyper writes a response
//! only as fast as the client reads it and polls the body only when there is room, so a client
//! that stops reading would hold its connection, and whatever the body holds (a log export's
//! scan slot, a live tail's stream place), for ever; nothing inside the body can end it, since
//! it is not polled. A write (or flush) that makes no progress for the limit fails the
//! connection instead: hyper drops it, and the body with it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `io`, whose writes fail once none has made progress for `limit`. Also the status-only
/// node's HTTP listener's (`gateway.status_http.write_stall_timeout_ms`).
pub struct WriteStall<I> {
    inner: I,
    limit: Duration,
    /// The config key named in the error, and the counter of stalls (`None`: not counted).
    key: &'static str,
    metric: Option<&'static str>,
    /// Armed by the first write that could not go on; disarmed by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> WriteStall<I> {
    /// The admin listener's: `admin.write_stall_timeout_ms`, counted in
    /// `ringchat_admin_write_stalls_total`.
    pub(super) fn new(inner: I, limit: Duration) -> Self {
        Self::named(
            inner,
            limit,
            "admin.write_stall_timeout_ms",
            Some("ringchat_admin_write_stalls_total"),
        )
    }

    /// Another listener's, its limit set by `key`, its stalls counted in `metric`.
    pub fn named(
        inner: I,
        limit: Duration,
        key: &'static str,
        metric: Option<&'static str>,
    ) -> Self {
        Self {
            inner,
            limit,
            key,
            metric,
            stalled: None,
        }
    }

    /// What a write that could not go on answers: wait (the timer wakes the task too), or
    /// fail once the limit has passed since the last progress.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if sleep.as_mut().poll(cx).is_ready() {
            if let Some(metric) = self.metric {
                metrics::counter!(metric).increment(1);
            }
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing of the answer for {} ms ({})",
                    limit.as_millis(),
                    self.key
                ),
            )));
        }
        Poll::Pending
    }

    fn progress<T>(&mut self, done: io::Result<T>) -> Poll<io::Result<T>> {
        self.stalled = None;
        Poll::Ready(done)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteStall<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteStall<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(done) => this.progress(done),
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(done) => this.progress(done),
            Poll::Pending => this.pending(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(done) => this.progress(done),
            Poll::Pending => this.pending(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Ready(done) => this.progress(done),
            Poll::Pending => this.pending(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_limit_and_progress_resets_it() {
        // A pipe of 64 bytes whose far end reads only when told.
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = WriteStall::new(near, Duration::from_millis(200));
        io.write_all(&[1; 64]).await.unwrap();
        // Read some: the next write goes on.
        let mut got = [0; 32];
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut got)
            .await
            .unwrap();
        io.write_all(&[2; 32]).await.unwrap();
        // Full again, and nothing read: the write fails once the limit has passed.
        let started = tokio::time::Instant::now();
        let err = io.write_all(&[3; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("admin.write_stall_timeout_ms"));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}

//! `admin.body_read_timeout_ms`: a request's body must arrive whole within it. hyper bounds
//! only the head (`header_read_timeout`); a client that sends a head and then a byte a minute
//! would otherwise hold its connection, and the handler reading its body, for ever.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body did not arrive within {0} ms (admin.body_read_timeout_ms)")]
    TimedOut(u128),
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

/// `body`, failing with [`BodyError::TimedOut`] once `limit` has passed before its end. A body
/// already complete (no body at all: most reads) gets no timer.
pub(super) fn limit(body: Incoming, limit: Duration) -> axum::body::Body {
    if body.is_end_stream() {
        return axum::body::Body::new(body);
    }
    axum::body::Body::new(Deadline {
        inner: body,
        sleep: Box::pin(tokio::time::sleep(limit)),
        limit,
    })
}

/// Whether `err` (a body read's error, however wrapped) is this deadline's.
pub(super) fn timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if matches!(e.downcast_ref::<BodyError>(), Some(BodyError::TimedOut(_))) {
            return true;
        }
        cause = e.source();
    }
    false
}

struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(BodyError::from))),
            Poll::Pending if this.sleep.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err(BodyError::TimedOut(this.limit.as_millis()))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

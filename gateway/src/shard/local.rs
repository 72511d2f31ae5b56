//! Shard-local building blocks: a wake-up flag and a buffer pool, both single-threaded (no locks,
//! no atomics), as everything inside a shard is.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;

/// A single-waiter wake-up: `notify` before `notified` is not lost.
#[derive(Debug, Default)]
pub struct LocalNotify {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    pub fn notify(&self) {
        self.pending.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub fn notified(&self) -> Notified<'_> {
        Notified(self)
    }
}

pub struct Notified<'a>(&'a LocalNotify);

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.pending.replace(false) {
            return Poll::Ready(());
        }
        let mut slot = self.0.waker.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Read and write buffers of one standard size, lent to a connection only while it has bytes in
/// flight, so an idle connection holds none.
#[derive(Debug)]
pub struct BufferPool {
    buffer_bytes: usize,
    buffers_max: usize,
    free: RefCell<Vec<BytesMut>>,
}

impl BufferPool {
    pub fn new(buffer_bytes: usize, buffers_max: usize) -> Self {
        Self {
            buffer_bytes,
            buffers_max,
            free: RefCell::new(Vec::with_capacity(buffers_max)),
        }
    }

    pub fn buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// An empty buffer with at least `buffer_bytes` of room.
    pub fn take(&self) -> BytesMut {
        match self.free.borrow_mut().pop() {
            Some(mut buf) => {
                // An emptied BytesMut may have advanced past its start; reserve reclaims that
                // space in place when the buffer is unshared, which pooled buffers are.
                buf.reserve(self.buffer_bytes);
                buf
            }
            None => BytesMut::with_capacity(self.buffer_bytes),
        }
    }

    /// Returns a buffer; one grown for a big frame, or one past the pool's size, is freed.
    pub fn give(&self, mut buf: BytesMut) {
        buf.clear();
        let mut free = self.free.borrow_mut();
        if free.len() < self.buffers_max && buf.capacity() <= 2 * self.buffer_bytes {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Buf, BufMut};

    #[test]
    fn pool_reuses_buffers_and_reclaims_advanced_space() {
        let pool = BufferPool::new(64, 2);
        let mut b = pool.take();
        let ptr = b.as_ptr();
        b.put_slice(&[1; 40]);
        b.advance(40);
        pool.give(b);
        let b = pool.take();
        assert_eq!(b.as_ptr(), ptr, "same allocation comes back");
        assert!(b.capacity() >= 64);
        pool.give(BytesMut::with_capacity(1024));
        assert!(
            pool.free.borrow().len() <= 1,
            "oversize buffers are not kept"
        );
    }

    #[test]
    fn notify_before_wait_is_kept() {
        let n = LocalNotify::default();
        n.notify();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut fut = std::pin::pin!(n.notified());
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(()));
        let mut fut = std::pin::pin!(n.notified());
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Pending);
    }
}

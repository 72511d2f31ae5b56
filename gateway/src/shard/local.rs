//! Shard-local building blocks: a wake-up flag, a buffer pool and the connection table, all
//! single-threaded (no locks, no atomics), as everything inside a shard is.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use std::rc::Rc;

use bytes::BytesMut;
use ringchat_backend::api::{CONN_ID_BITS, CONN_SLOT_BITS, CONN_SLOTS_MAX, ConnId};

/// Ready on its second poll, after the shard's other runnable tasks (and, past a round of
/// them, the driver's new events) had their turn. monoio puts a task that wakes itself while it
/// runs at the *front* of the run queue (its `yield_now`), so a plain `wake_by_ref` would run it
/// again before anything else; the wake comes from a task spawned at the back instead.
pub struct YieldOnce(pub bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        let waker = cx.waker().clone();
        // Detached: it only wakes the yielding task, once the tasks ahead of it have run.
        drop(monoio::spawn(async move { waker.wake() }));
        Poll::Pending
    }
}

/// A single-waiter wake-up: `notify` before `notified` is not lost.
/// A `Cell` rather than a `RefCell` for the waker: one is kept in every connection.
#[derive(Default)]
pub struct LocalNotify {
    pending: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl LocalNotify {
    pub fn notify(&self) {
        self.pending.set(true);
        if let Some(w) = self.waker.take() {
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
        let waker = match self.0.waker.take() {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        };
        self.0.waker.set(Some(waker));
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

    /// Returns a buffer; one grown for a big frame, or one past the pool's size, is freed, and
    /// an empty handle (one whose storage was given back already) is dropped.
    pub fn give(&self, mut buf: BytesMut) {
        if buf.capacity() == 0 {
            return;
        }
        buf.clear();
        let mut free = self.free.borrow_mut();
        if free.len() < self.buffers_max && buf.capacity() <= 2 * self.buffer_bytes {
            free.push(buf);
        }
    }
}

/// What a connection table holds: anything that knows its own id.
pub trait HasConnId {
    fn conn_id(&self) -> ConnId;
}

/// A shard's connections, indexed by slot: 8 bytes per slot (a `HashMap` entry took 16 plus
/// its control byte and load factor). A `ConnId` is the slot in its low `CONN_SLOT_BITS` and a
/// serial number above it, up to `CONN_ID_BITS` in all (a cluster link carries ids of that
/// size), so an id the backend still holds for a closed connection does not reach the
/// connection that took its slot next until 2^24 connections later.
pub struct ConnTable<T> {
    slots: Vec<Option<Rc<T>>>,
    /// Free slots, reused last-freed first.
    free: Vec<u32>,
    len: usize,
    /// The serial of the next id; starts at 1, so no registered id is 0.
    next_serial: u64,
}

const SERIAL_MASK: u64 = (1 << (CONN_ID_BITS - CONN_SLOT_BITS)) - 1;

fn slot_of(id: ConnId) -> usize {
    (id & ((1 << CONN_SLOT_BITS) - 1)) as usize
}

impl<T: HasConnId> ConnTable<T> {
    pub fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            next_serial: 1,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The id the next `insert` will use.
    pub fn next_id(&self) -> ConnId {
        let slot = self.free.last().copied().unwrap_or_else(|| {
            // `gateway.conns_per_shard_max` is below CONN_SLOTS_MAX (checked with the config).
            assert!(self.slots.len() < CONN_SLOTS_MAX, "a shard over its slots");
            self.slots.len() as u32
        });
        (self.next_serial << CONN_SLOT_BITS) | ConnId::from(slot)
    }

    /// Stores a connection made with the id `next_id` returned.
    pub fn insert(&mut self, conn: Rc<T>) {
        let id = conn.conn_id();
        debug_assert_eq!(id, self.next_id());
        let slot = slot_of(id);
        // The serial wraps after 2^24 connections; a slot's previous id is long gone by then.
        self.next_serial = (self.next_serial + 1) & SERIAL_MASK;
        self.next_serial = self.next_serial.max(1);
        if self.free.last() == Some(&(slot as u32)) {
            self.free.pop();
            self.slots[slot] = Some(conn);
        } else {
            self.slots.push(Some(conn));
        }
        self.len += 1;
    }

    pub fn get(&self, id: ConnId) -> Option<&Rc<T>> {
        self.slots
            .get(slot_of(id))?
            .as_ref()
            .filter(|c| c.conn_id() == id)
    }

    pub fn remove(&mut self, id: ConnId) -> Option<Rc<T>> {
        let slot = slot_of(id);
        let entry = self.slots.get_mut(slot)?;
        if entry.as_ref().is_none_or(|c| c.conn_id() != id) {
            return None;
        }
        let conn = entry.take();
        self.len -= 1;
        self.free.push(slot as u32);
        if self.len == 0 {
            // Everyone left: give the storage back.
            self.slots = Vec::new();
            self.free = Vec::new();
        }
        conn
    }

    pub fn values(&self) -> impl Iterator<Item = &Rc<T>> {
        self.slots.iter().flatten()
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

    struct Item(ConnId);

    impl HasConnId for Item {
        fn conn_id(&self) -> ConnId {
            self.0
        }
    }

    #[test]
    fn conn_table_reuses_slots_and_never_confuses_ids() {
        let mut t = ConnTable::new();
        let a = t.next_id();
        t.insert(Rc::new(Item(a)));
        let b = t.next_id();
        t.insert(Rc::new(Item(b)));
        assert_ne!(a, b);
        assert_ne!(a, 0);
        assert_eq!(t.len(), 2);
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none(), "removed once");
        let c = t.next_id();
        assert_eq!(slot_of(c), slot_of(a), "the freed slot is reused");
        assert_ne!(c, a);
        t.insert(Rc::new(Item(c)));
        assert!(
            t.get(a).is_none(),
            "a stale id does not reach the slot's new connection"
        );
        assert_eq!(t.get(c).map(|i| i.0), Some(c));
        assert_eq!(t.get(b).map(|i| i.0), Some(b));
        assert!(t.get(12345 << CONN_SLOT_BITS | 7).is_none());
        assert_eq!(t.values().count(), 2);
        t.remove(b);
        t.remove(c);
        assert!(t.is_empty());
        assert_eq!(t.slots.capacity(), 0, "an empty table keeps no storage");
    }

    #[test]
    fn ids_fit_a_link_s_bits_when_the_serial_wraps() {
        let mut t = ConnTable::new();
        t.next_serial = SERIAL_MASK - 1;
        let mut seen = Vec::new();
        for _ in 0..4 {
            let id = t.next_id();
            assert!(id >> CONN_ID_BITS == 0, "{id:#x} over {CONN_ID_BITS} bits");
            assert_ne!(id >> CONN_SLOT_BITS, 0, "serial 0 is never used");
            t.insert(Rc::new(Item(id)));
            assert!(t.get(id).is_some());
            t.remove(id);
            seen.push(id);
        }
        seen.dedup();
        assert_eq!(seen.len(), 4, "a new id each time: {seen:x?}");
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

//! A connection's queue of encoded frames, bounded per connection and charged to its shard's
//! budget of queued bytes (`gateway.outbound_bytes_per_shard_max`).

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

/// Frames smaller than this are copied out of their buffer when they wait behind a backlog.
/// Delivery encodes a commit group's frames into shared 64 KiB chunks (`ENCODE_CHUNK_BYTES`
/// in the backend's `messaging/delivery.rs`), and one 100-byte frame left in a slow queue
/// keeps its whole chunk alive: 640 times what it is charged. Copied, it keeps its own bytes; a
/// frame this size or larger keeps at most 4 times its charge. Only a backlog that outlived a
/// shard tick copies (`Outbound::behind`): a connection that keeps up pays nothing.
pub(super) const COPY_BELOW_BYTES: usize = 16 * 1024;

/// A connection's queue of encoded frames, and their bytes. `Cell`s (the queue taken out and put
/// back around each use, which never spans an `.await`) rather than a `RefCell`: no borrow flag
/// in every connection. Each frame is also charged to the shard's total (`Books::total`,
/// `Shard::outbound_bytes`): its bytes, or its queue entry when it is a [`Fanout`]'s, whose
/// buffer is charged once while any queue holds it.
#[derive(Default)]
pub(crate) struct Outbound {
    frames: Cell<VecDeque<Queued>>,
    /// Bytes of the queued frames, each counted whole; bounded by `OutboundLimits::bytes_max`
    /// (at most 1 GiB).
    bytes: Cell<u32>,
    /// What dropping the queue surely gives back to the shard's total: its own frames' bytes
    /// and its shared frames' entries (a shared buffer leaves with its last holder only). What
    /// a kick frees (`Shard::shed_backlog`).
    charged: Cell<u32>,
}

/// What a queue is charged to and timed by, kept outside it: the shard's total of queued bytes
/// and its tick, and the tick (wrapping) the connection's queue last went from empty to not
/// (in `ConnShared`, with the connection's other ticks: a field more in `Outbound` would grow
/// every connection's shared state past its allocator class).
pub(crate) struct Books<'a> {
    pub total: &'a Cell<u64>,
    pub now: u64,
    pub backlog_since: &'a Cell<u32>,
}

/// A queued frame.
enum Queued {
    /// The connection's own: charged its bytes.
    Own(Bytes),
    /// A fan-out's: charged its entry, the buffer once for all its holders.
    Shared(Rc<SharedFrame>),
}

/// What a queued [`Fanout`] frame costs the shard's budget for each holder besides its buffer:
/// its queue entry.
const SHARED_ENTRY_CHARGE_BYTES: u32 = std::mem::size_of::<Queued>() as u32;

/// One frame for many connections of the shard (a group's message, a room's, a fan-out): one
/// buffer, charged to the shard's total from its first holder's push until its last holder
/// lets go, whichever holder that is.
pub(crate) struct Fanout(Rc<SharedFrame>);

struct SharedFrame {
    /// Replaced once by a copy of itself when it waits behind a backlog (`COPY_BELOW_BYTES`).
    frame: RefCell<Bytes>,
    len: u32,
    /// Its WebSocket text message (JSON), rendered by the first holder that speaks JSON for
    /// all the others: a frame renders the same for every connection. Charged to the shard's
    /// total from then until its last holder lets go, as the frame is.
    text: OnceCell<Bytes>,
    /// Queues holding it.
    holders: Cell<u32>,
    copied: Cell<bool>,
}

impl Fanout {
    pub fn new(frame: Bytes) -> Self {
        Self(Rc::new(SharedFrame {
            len: frame_bytes(&frame),
            frame: RefCell::new(frame),
            text: OnceCell::new(),
            holders: Cell::new(0),
            copied: Cell::new(false),
        }))
    }
}

impl SharedFrame {
    /// Its bytes and its text message's, once rendered: what its last holder gives back.
    fn held_bytes(&self) -> u64 {
        u64::from(self.len) + self.text.get().map_or(0, |t| t.len() as u64)
    }

    /// Copies a small frame out of the buffer it shares with others, for all its holders at once.
    fn copy_out(&self) {
        if !self.copied.replace(true) && (self.len as usize) < COPY_BELOW_BYTES {
            let copy = Bytes::copy_from_slice(&self.frame.borrow());
            *self.frame.borrow_mut() = copy;
        }
    }
}

/// A queued frame as it is written: its bytes and, for a shared one, the slot its WebSocket
/// text message is rendered into once (`ws::State::put_frame`).
pub(crate) struct Popped<'a> {
    pub frame: &'a Bytes,
    pub text: Option<&'a OnceCell<Bytes>>,
}

/// A frame to queue.
pub(crate) enum Frame<'a> {
    /// The connection's own.
    Own(Bytes),
    /// One the shard queues on other connections too.
    Shared(&'a Fanout),
}

impl Queued {
    /// Its bytes (the connection's own limits count it whole) and its charge to the shard's
    /// total besides a shared buffer's.
    fn sizes(&self) -> (u32, u32) {
        match self {
            Self::Own(frame) => {
                let len = frame_bytes(frame);
                (len, len)
            }
            Self::Shared(s) => (s.len, s.len.min(SHARED_ENTRY_CHARGE_BYTES)),
        }
    }

    /// Hands the frame to `take`; what a text message rendered meanwhile adds to the shard's
    /// total.
    fn offer(&self, take: impl FnOnce(Popped<'_>) -> bool) -> (bool, u64) {
        match self {
            Self::Own(frame) => (take(Popped { frame, text: None }), 0),
            Self::Shared(s) => {
                let rendered = s.text.get().is_some();
                let took = take(Popped {
                    frame: &s.frame.borrow(),
                    text: Some(&s.text),
                });
                let added = match s.text.get() {
                    Some(text) if !rendered => text.len() as u64,
                    _ => 0,
                };
                (took, added)
            }
        }
    }

    /// What it adds to the shard's total as it is queued: its charge, and a shared buffer's
    /// bytes with its first holder.
    fn hold(&self) -> u64 {
        let (_, charge) = self.sizes();
        let mut held = u64::from(charge);
        if let Self::Shared(s) = self {
            let holders = s.holders.get();
            s.holders.set(holders + 1);
            if holders == 0 {
                held += u64::from(s.len);
            }
        }
        held
    }

    /// What leaves the shard's total as it leaves its queue: its charge, and a shared buffer's
    /// bytes (and its text message's) with its last holder.
    fn release(&self) -> u64 {
        let (_, charge) = self.sizes();
        let mut freed = u64::from(charge);
        if let Self::Shared(s) = self {
            let holders = s.holders.get().saturating_sub(1);
            s.holders.set(holders);
            if holders == 0 {
                freed += s.held_bytes();
            }
        }
        freed
    }

    /// Copies a small frame out of a buffer it may share (`COPY_BELOW_BYTES`).
    fn copy_out(&mut self) {
        match self {
            Self::Own(frame) => {
                if frame.len() < COPY_BELOW_BYTES {
                    *frame = Bytes::copy_from_slice(frame);
                }
            }
            Self::Shared(s) => s.copy_out(),
        }
    }
}

/// How far a connection may fall behind before it is kicked as a slow consumer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboundLimits {
    pub frames_max: usize,
    pub bytes_max: u32,
}

impl Outbound {
    fn with<R>(&self, f: impl FnOnce(&mut VecDeque<Queued>) -> R) -> R {
        let mut queue = self.frames.take();
        let r = f(&mut queue);
        self.frames.set(queue);
        r
    }

    /// Gives back an empty queue's storage (the next frame allocates it again).
    pub(super) fn release_storage_if_empty(&self) {
        self.with(|queue| {
            if queue.is_empty() && queue.capacity() > 0 {
                *queue = VecDeque::new();
            }
        });
    }

    pub fn len(&self) -> usize {
        self.with(|q| q.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the frames waiting.
    pub fn bytes(&self) -> u32 {
        self.bytes.get()
    }

    /// What dropping the queue surely gives back to the shard's total.
    pub fn charged(&self) -> u32 {
        self.charged.get()
    }

    /// Whether the queue is behind: not empty since an earlier shard tick. A connection that
    /// keeps up empties it every time its task runs.
    fn behind(queue: &VecDeque<Queued>, books: &Books<'_>) -> bool {
        !queue.is_empty() && books.backlog_since.get() != books.now as u32
    }

    /// Queues `frame` unless the queue is past a limit. A frame is always taken into an empty
    /// queue, whatever its size: one reply never makes a slow consumer. Behind a backlog, a
    /// small frame is copied out of its buffer (`COPY_BELOW_BYTES`).
    pub(super) fn push(&self, frame: Frame<'_>, limits: OutboundLimits, books: &Books<'_>) -> bool {
        let len = match &frame {
            Frame::Own(frame) => frame_bytes(frame),
            Frame::Shared(fanout) => fanout.0.len,
        };
        let held = self.with(|queue| {
            let full = queue.len() >= limits.frames_max
                || (!queue.is_empty() && self.bytes.get().saturating_add(len) > limits.bytes_max);
            if full {
                return None;
            }
            let mut entry = match frame {
                Frame::Own(frame) => Queued::Own(frame),
                Frame::Shared(fanout) => Queued::Shared(Rc::clone(&fanout.0)),
            };
            if Self::behind(queue, books) {
                entry.copy_out();
            }
            if queue.is_empty() {
                books.backlog_since.set(books.now as u32);
            }
            let held = self.count_in(&entry);
            queue.push_back(entry);
            Some(held)
        });
        let Some(held) = held else {
            return false;
        };
        books.total.set(books.total.get() + held);
        true
    }

    /// Queues `frame` past every limit: the connection's last frame (`Kicked`).
    pub fn push_last(&self, frame: Bytes, books: &Books<'_>) {
        let entry = Queued::Own(frame);
        let held = self.count_in(&entry);
        books.total.set(books.total.get() + held);
        self.with(|queue| {
            if queue.is_empty() {
                books.backlog_since.set(books.now as u32);
            }
            queue.push_back(entry);
        });
    }

    /// Counts a new entry in the queue's bytes and charge; what it adds to the shard's total.
    fn count_in(&self, entry: &Queued) -> u64 {
        let (len, charge) = entry.sizes();
        self.bytes.set(self.bytes.get().saturating_add(len));
        self.charged.set(self.charged.get().saturating_add(charge));
        entry.hold()
    }

    /// Copies the small frames of the backlog out of their buffers (`COPY_BELOW_BYTES`): once,
    /// when the backlog has outlived a shard tick; what is queued behind it from then on is
    /// copied as it comes (`push`).
    pub(super) fn copy_out_small(&self) {
        self.with(|queue| queue.iter_mut().for_each(Queued::copy_out));
    }

    /// Takes frames from the front while `take` accepts them.
    pub fn pop_while(&self, mut take: impl FnMut(Popped<'_>) -> bool, total: &Cell<u64>) {
        let (mut popped, mut charged, mut freed, mut rendered) = (0u32, 0u32, 0u64, 0u64);
        self.with(|queue| {
            while let Some(queued) = queue.front() {
                let (took, added) = queued.offer(&mut take);
                rendered += added;
                if !took {
                    break;
                }
                let (len, charge) = queued.sizes();
                popped = popped.saturating_add(len);
                charged = charged.saturating_add(charge);
                freed += queued.release();
                queue.pop_front();
            }
            if queue.is_empty() && queue.capacity() > 1024 {
                queue.shrink_to(64);
            }
        });
        self.bytes.set(self.bytes.get().saturating_sub(popped));
        self.charged.set(self.charged.get().saturating_sub(charged));
        total.set((total.get() + rendered).saturating_sub(freed));
    }

    /// Drops every waiting frame.
    pub fn clear(&self, total: &Cell<u64>) {
        let freed: u64 = self.with(|queue| queue.drain(..).map(|q| q.release()).sum());
        self.bytes.set(0);
        self.charged.set(0);
        total.set(total.get().saturating_sub(freed));
    }
}

/// A frame's size as the queue counts it (frames are far below 4 GiB; one that was not would
/// count as 4 GiB, never wrap).
fn frame_bytes(frame: &Bytes) -> u32 {
    u32::try_from(frame.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;

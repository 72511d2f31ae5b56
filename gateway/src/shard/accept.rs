//! Accepting connections without an io_uring request on the listening socket.
//!
//! A request in flight holds a reference to its file: with io_uring `Accept`s pending, a
//! listener outlives its process (kill -9 included) until the kernel has torn the ring down in
//! the background, tens of milliseconds later. Meanwhile it stays in the `SO_REUSEPORT` group,
//! completes handshakes into its backlog and resets them when it finally closes: the clients
//! that reconnect first after a restart are accepted and then reset.
//!
//! So the listener is watched by an epoll instance of its own, and the shard's runtime waits on
//! that epoll descriptor (an io_uring `PollAdd` on it, or a registration in the epoll driver),
//! then calls `accept4` until `EAGAIN`. An epoll registration holds no reference on the file it
//! watches: the file's last `fput` unhooks it (include/linux/eventpoll.h, `eventpoll_release`:
//! "called from inside fs/file_table.c:__fput() to unlink files from the eventpoll interface
//! ... nobody (but eventpoll) has still a reference to this file"). The listener therefore
//! closes with the process's file table, synchronously at exit, or at once when the shard
//! stops: the next SYN is refused, or lands on the new process's listener.
//!
//! Closing a listener resets every handshake that completes into its queue after the last
//! `accept4`, however soon the close follows: under a reconnect storm some client is accepted
//! and then reset. So a graceful stop first has the listener drop SYNs ([`Acceptor::refuse_handshakes`]:
//! a classic BPF socket filter, which needs no privilege; a dropped SYN is sent again a second
//! later, to a closed port or the new process), lets the handshakes already answered complete
//! ([`HANDSHAKES_SETTLE`]), takes what they queued and only then closes.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::epoll;
use rustix::net::SocketFlags;

use super::conn::Listen;
use super::local::{LocalNotify, YieldOnce};
use crate::server::LISTEN_BACKLOG;

/// Connections taken in a row before the accept loop lets the shard's other tasks (the
/// handshakes it just started) run: under a connect storm the loop would otherwise keep the
/// thread while the listener has a backlog.
const ACCEPTS_PER_TURN: u32 = 64;

/// How long a stopping listener that drops SYNs stays open for the handshakes it answered
/// before to complete (their last ACK is one round trip behind the SYN-ACK: microseconds on
/// loopback, a distant client's round trip otherwise). A handshake completing later is reset.
pub(super) const HANDSHAKES_SETTLE: Duration = Duration::from_millis(50);

/// A classic BPF socket filter that drops TCP segments with SYN set (the TCP header is at
/// offset 0 when a TCP socket's filter runs) and keeps everything else: the ACKs that complete
/// the handshakes already answered go through.
const DROP_SYNS: [socket2::SockFilter; 4] = [
    // ldb [13]: the TCP flags byte.
    socket2::SockFilter::new(0x30, 0, 0, 13),
    // jset #SYN: drop, else keep.
    socket2::SockFilter::new(0x45, 0, 1, 0x02),
    socket2::SockFilter::new(0x06, 0, 0, 0),
    socket2::SockFilter::new(0x06, 0, 0, u32::MAX),
];

/// One listener and the epoll instance that watches it.
pub(super) struct Acceptor {
    /// What the listener serves.
    pub kind: Listen,
    /// `None` once closed ([`Acceptor::close`]).
    listener: RefCell<Option<TcpListener>>,
    /// The epoll descriptor in monoio's clothing: monoio has no public "wait until this fd is
    /// readable", but `UnixListener::from_std` only registers the descriptor with the driver and
    /// `readable` only polls it (no socket call is made on it).
    ready: monoio::net::UnixListener,
    /// Accepted sockets non-blocking (monoio's epoll driver) or blocking (io_uring, as its own
    /// `Accept` made them).
    flags: SocketFlags,
    /// Wakes the accept loop when the listener is closed.
    stop: LocalNotify,
    /// Connections taken since the loop last let other tasks run (below `ACCEPTS_PER_TURN`).
    in_a_row: Cell<u32>,
}

impl Acceptor {
    /// Must be called on the shard's runtime (the epoll descriptor is registered with it).
    pub(super) fn new(listener: TcpListener, kind: Listen) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // Level-triggered: a backlog left after a turn wakes the loop again.
        epoll::add(
            &epoll,
            &listener,
            epoll::EventData::new_u64(0),
            epoll::EventFlags::IN,
        )?;
        let ready = monoio::net::UnixListener::from_std(epoll.into())?;
        let flags = if monoio::utils::is_legacy() {
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK
        } else {
            SocketFlags::CLOEXEC
        };
        Ok(Self {
            kind,
            listener: RefCell::new(Some(listener)),
            ready,
            flags,
            stop: LocalNotify::default(),
            in_a_row: Cell::new(0),
        })
    }

    /// The next connection; `None` once closed.
    pub(super) async fn accept(&self) -> Option<io::Result<(monoio::net::TcpStream, SocketAddr)>> {
        loop {
            let accepted = {
                let listener = self.listener.borrow();
                rustix::net::acceptfrom_with(listener.as_ref()?, self.flags)
            };
            match accepted {
                Ok((fd, peer)) => {
                    let in_a_row = self.in_a_row.get() + 1;
                    self.in_a_row.set(in_a_row % ACCEPTS_PER_TURN);
                    if in_a_row == ACCEPTS_PER_TURN {
                        YieldOnce(false).await;
                    }
                    return Some(converted(fd, peer));
                }
                // A peer that gave up before it was accepted (RST in the backlog): next one.
                Err(rustix::io::Errno::CONNABORTED | rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => {
                    self.in_a_row.set(0);
                    // Not `relaxed`: on the epoll driver the descriptor's readiness is checked
                    // with poll(2), so a stale "ready" cannot spin the loop.
                    let woken = monoio::select! {
                        r = self.ready.readable(false) => r,
                        () = self.stop.notified() => return None,
                    };
                    if let Err(err) = woken {
                        return Some(Err(err));
                    }
                }
                Err(errno) => return Some(Err(errno.into())),
            }
        }
    }

    /// From now on the listener drops SYNs (see the module's comment); connections already
    /// queued, or completing the handshakes already answered, are still accepted until
    /// [`Acceptor::close`]. A filter the kernel refuses leaves the listener as it was.
    pub(super) fn refuse_handshakes(&self) {
        if let Some(listener) = self.listener.borrow().as_ref()
            && let Err(err) = socket2::SockRef::from(listener).attach_filter(&DROP_SYNS)
        {
            tracing::warn!(%err, "could not make a stopping listener drop SYNs");
        }
    }

    /// Takes the connections already queued (each to `queued`; at most the listen backlog,
    /// the queue's size), then closes the listener (close(2), not through the ring): from here
    /// the kernel refuses new connections on this socket. The accept loop then ends.
    pub(super) fn close(&self, mut queued: impl FnMut(monoio::net::TcpStream, SocketAddr)) {
        let Some(listener) = self.listener.borrow_mut().take() else {
            return;
        };
        for _ in 0..LISTEN_BACKLOG {
            match rustix::net::acceptfrom_with(&listener, self.flags) {
                Ok((fd, peer)) => match converted(fd, peer) {
                    Ok((stream, peer)) => queued(stream, peer),
                    Err(err) => tracing::debug!(%err, "a queued connection is lost at shutdown"),
                },
                Err(rustix::io::Errno::CONNABORTED | rustix::io::Errno::INTR) => {}
                // EAGAIN (the queue is empty), or out of descriptors: those left are reset.
                Err(_) => break,
            }
        }
        drop(listener);
        self.stop.notify();
    }
}

fn converted(
    fd: OwnedFd,
    peer: Option<rustix::net::SocketAddrAny>,
) -> io::Result<(monoio::net::TcpStream, SocketAddr)> {
    let peer = peer
        .and_then(|p| SocketAddr::try_from(p).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "accepted a non-IP peer"))?;
    Ok((monoio::net::TcpStream::from_std(fd.into())?, peer))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io::{Read, Write};
    use std::rc::Rc;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use monoio::io::AsyncWriteRentExt;
    use monoio::{LegacyDriver, RuntimeBuilder};

    use super::*;

    /// Listeners stopped in a row; without `refuse_handshakes` 4 to 7 clients were reset over
    /// these on the machine this was written on.
    const STOPS: usize = 30;
    const CLIENTS: usize = 3;
    /// How long each listener serves the clients before it stops.
    const SERVED_FOR: Duration = Duration::from_millis(20);
    /// A client's connect: a dropped SYN makes it give up and try again.
    const CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

    /// Clients connecting back to back: connect, send a byte, read the server's byte. Counts
    /// the attempts that were accepted and then reset (or closed unanswered).
    fn hammer(addr: SocketAddr, stop: Arc<AtomicBool>, reset: Arc<AtomicU64>) {
        while !stop.load(Ordering::Acquire) {
            let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            else {
                continue; // refused, or the SYN was dropped
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut byte = [0];
            let answered = stream
                .write_all(b"x")
                .and_then(|()| stream.read_exact(&mut byte));
            if answered.is_err() {
                reset.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    type Kept = Rc<RefCell<Vec<monoio::net::TcpStream>>>;

    /// Every connection accepted gets its byte and stays open until the round ends (closing it
    /// with the client's byte unread would reset it).
    async fn answer(mut stream: monoio::net::TcpStream, kept: &Kept) {
        let (written, _) = stream.write_all(b"y").await;
        written.unwrap();
        kept.borrow_mut().push(stream);
    }

    /// The shard's accept loop, in short.
    async fn accept_loop(acceptor: Rc<Acceptor>, kept: Kept) {
        while let Some(accepted) = acceptor.accept().await {
            answer(accepted.unwrap().0, &kept).await;
        }
    }

    #[test]
    fn a_stopping_listener_resets_no_handshake() {
        let mut rt = RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        let reset = Arc::new(AtomicU64::new(0));
        rt.block_on(async {
            for _ in 0..STOPS {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let acceptor = Rc::new(Acceptor::new(listener, Listen::Tcp).unwrap());
                let kept = Kept::default();
                let serving = monoio::spawn(accept_loop(Rc::clone(&acceptor), Rc::clone(&kept)));
                let stop = Arc::new(AtomicBool::new(false));
                let clients: Vec<_> = (0..CLIENTS)
                    .map(|_| {
                        let (stop, reset) = (Arc::clone(&stop), Arc::clone(&reset));
                        std::thread::spawn(move || hammer(addr, stop, reset))
                    })
                    .collect();
                monoio::time::sleep(SERVED_FOR).await;
                // A graceful stop, as `Shard::begin_shutdown` and `serve` do it.
                acceptor.refuse_handshakes();
                monoio::time::sleep(HANDSHAKES_SETTLE).await;
                let mut queued = Vec::new();
                acceptor.close(|stream, _| queued.push(stream));
                serving.await;
                for stream in queued {
                    answer(stream, &kept).await;
                }
                stop.store(true, Ordering::Release);
                for client in clients {
                    client.join().unwrap();
                }
            }
        });
        assert_eq!(
            reset.load(Ordering::Relaxed),
            0,
            "clients accepted and then reset"
        );
    }
}

//! The byte stream under the WebSocket and TLS transports: plain TCP, or TLS driven by hand over
//! it. rustls does the protocol; this file moves its bytes, so the shard's rules hold for TLS
//! too: wait for readiness, read ciphertext into a pooled buffer, never leave a read in flight.
//!
//! Bytes move with plain non-blocking `recv`/`send` calls on the socket, and the runtime (io_uring
//! or epoll) is asked only for readiness. A socket that is ready takes a small write or gives
//! a read at once, so a ring operation would add a completion and a second poll of the task
//! for nothing; and since reads and writes need only a shared handle, the connection loop's
//! readiness wait stays armed while the connection writes (`readable`).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use monoio::net::TcpStream;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use rustls::{ServerConfig, ServerConnection};

use super::local::BufferPool;

/// Room a read needs at least; a smaller remainder is grown first.
const READ_ROOM_BYTES_MIN: usize = 1024;

/// How long TLS records written in answer to a read may wait for room in the socket (the
/// default handshake timeout: a handshake flight that is not taken by then never will be).
const TLS_ANSWER_WAIT_MS: u64 = 10_000;

pub(super) struct Stream {
    /// Shared with the readiness wait the connection loop keeps armed (`readable`).
    tcp: Rc<TcpStream>,
    tls: Option<Box<ServerConnection>>,
    /// The client's address from a PROXY header (`conn/proxy.rs`), when the TCP peer is a
    /// trusted load balancer. Boxed: the other connections pay 8 bytes for it, not 17.
    client: Option<Box<IpAddr>>,
}

impl Stream {
    pub fn plain(tcp: TcpStream) -> Self {
        Self {
            tcp: Rc::new(tcp),
            tls: None,
            client: None,
        }
    }

    /// Starts a TLS session; the handshake runs as `read` is called (see `handshaking`).
    pub fn tls(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Self {
            tcp: Rc::new(tcp),
            tls: Some(Box::new(conn)),
            client: None,
        })
    }

    /// The client's address, the one every per-address rule and record uses: the PROXY
    /// header's source once [`Stream::set_client_ip`] took it, else the TCP peer's (looked up
    /// once, then cached by the socket). Canonical (an IPv4 client of a dual-stack listener as
    /// its IPv4 address, as logs and the IP rules show it); unspecified if the socket no longer
    /// knows it (the client is gone).
    pub fn peer_ip(&self) -> IpAddr {
        match &self.client {
            Some(client) => **client,
            None => self.tcp_peer_ip(),
        }
    }

    /// The TCP peer's address (a load balancer's, for a proxied connection), canonical.
    pub fn tcp_peer_ip(&self) -> IpAddr {
        self.tcp
            .peer_addr()
            .map_or(Ipv4Addr::UNSPECIFIED.into(), |a| a.ip().to_canonical())
    }

    /// From now on the client's address is `ip` (a trusted PROXY header's source).
    pub fn set_client_ip(&mut self, ip: IpAddr) {
        self.client = Some(Box::new(ip.to_canonical()));
    }

    /// Copies the bytes waiting on the socket into `into`, leaving them there; the TLS layer is
    /// passed by (a PROXY header comes before it). `Ok(0)`: end of stream; `WouldBlock`: none yet.
    pub fn peek_raw(&self, into: &mut [u8]) -> io::Result<usize> {
        loop {
            match rustix::net::recv(
                fd(&self.tcp),
                &mut *into,
                RecvFlags::PEEK | RecvFlags::DONTWAIT,
            ) {
                Ok((_, n)) => return Ok(n.min(into.len())),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Takes exactly `n` bytes off the socket that [`Stream::peek_raw`] saw there, dropping them.
    pub fn consume_raw(&self, mut n: usize) -> io::Result<()> {
        let mut sink = [0u8; 256];
        while n > 0 {
            let take = n.min(sink.len());
            match rustix::net::recv(fd(&self.tcp), &mut sink[..take], RecvFlags::DONTWAIT) {
                Ok((_, 0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok((_, got)) => n -= got.min(take),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Resolves when the socket has bytes. The future holds its own handle, not a borrow, so the
    /// connection loop keeps one armed across the wake-ups that only write: dropping it would
    /// cost io_uring a cancel (a search among every armed poll) and a new poll each time. Not
    /// `relaxed`: on epoll a stale "ready" is checked with a `poll` first.
    pub fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + use<> {
        let tcp = Rc::clone(&self.tcp);
        async move { tcp.readable(false).await }
    }

    /// Resolves once the client has closed or reset the connection, seen without taking any of
    /// its bytes; never while bytes wait unread (a client that sent more is not gone: they are
    /// read later). Watched while a pre-login request waits (`Conn::handle_input`).
    pub fn hung_up(&self) -> impl std::future::Future<Output = ()> + use<> {
        let tcp = Rc::clone(&self.tcp);
        async move {
            let mut probe = [0u8; 1];
            loop {
                if tcp.readable(false).await.is_err() {
                    return;
                }
                match rustix::net::recv(
                    fd(&tcp),
                    &mut probe[..],
                    RecvFlags::PEEK | RecvFlags::DONTWAIT,
                ) {
                    // End of stream.
                    Ok((0, _)) => return,
                    Ok(_) => break,
                    // A stale readiness: wait again.
                    Err(Errno::INTR | Errno::AGAIN) => {}
                    // Reset, or another failure: nothing will be read from it either.
                    Err(_) => return,
                }
            }
            std::future::pending().await
        }
    }

    /// One non-blocking `recv` into `into`'s spare room; `WouldBlock` when nothing is there.
    #[allow(unsafe_code)] // one `set_len` over what the kernel wrote
    fn recv_into(&self, into: &mut BytesMut) -> io::Result<usize> {
        let spare = into.spare_capacity_mut();
        let room = spare.len();
        // Zero bytes from a zero-length read would look like the end of the stream.
        debug_assert!(room > 0, "a read needs room");
        let n = loop {
            match rustix::net::recv(fd(&self.tcp), &mut *spare, RecvFlags::DONTWAIT) {
                Ok((_, n)) => break n.min(room),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        };
        // SAFETY: the kernel initialised the first `n` bytes of the spare room.
        unsafe { into.set_len(into.len() + n) };
        Ok(n)
    }

    /// Reads once and appends the plaintext to `buf` (for TLS: ciphertext goes through a pooled
    /// buffer; handshake records are answered here). `Ok(None)` at end of stream. `Ok(Some(0))`
    /// can happen with TLS: records that carried no data.
    pub async fn read(
        &mut self,
        buf: &mut BytesMut,
        pool: &BufferPool,
    ) -> io::Result<Option<usize>> {
        if self.tls.is_none() {
            if buf.capacity() - buf.len() < READ_ROOM_BYTES_MIN {
                buf.reserve(pool.buffer_bytes().max(READ_ROOM_BYTES_MIN));
            }
            return match self.recv_into(buf) {
                Ok(n) => Ok((n > 0).then_some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some(0)),
                Err(e) => Err(e),
            };
        }
        let mut into = pool.take();
        let n = match self.recv_into(&mut into) {
            Ok(n) => n,
            Err(e) => {
                pool.give(into);
                return if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(Some(0))
                } else {
                    Err(e)
                };
            }
        };
        if n == 0 {
            pool.give(into);
            return Ok(None);
        }
        let fed = self.feed_tls(&into, buf);
        pool.give(into);
        self.answer_fed(fed, pool).await
    }

    /// One non-blocking `recv` of TLS bytes into `into`'s spare room (grown if it has none),
    /// kept from rustls: the shard's gate reads the ClientHello's framing before rustls may
    /// take it (`tls_gate.rs`), then hands it on with [`Stream::take_ciphertext`]. `Ok(0)` at
    /// end of stream; `WouldBlock` when nothing is there.
    pub fn read_raw(&self, into: &mut BytesMut, pool: &BufferPool) -> io::Result<usize> {
        if into.capacity() == into.len() {
            into.reserve(pool.buffer_bytes().max(READ_ROOM_BYTES_MIN));
        }
        self.recv_into(into)
    }

    /// Hands ciphertext read from the socket to rustls, appends the plaintext to `buf` and
    /// writes what rustls answers; as `read` says after its `recv`.
    pub async fn take_ciphertext(
        &mut self,
        cipher: &[u8],
        buf: &mut BytesMut,
        pool: &BufferPool,
    ) -> io::Result<Option<usize>> {
        let fed = self.feed_tls(cipher, buf);
        self.answer_fed(fed, pool).await
    }

    /// Writes what rustls answers to ciphertext fed to it (`fed`: `feed_tls`'s result).
    async fn answer_fed(
        &mut self,
        fed: io::Result<(usize, bool)>,
        pool: &BufferPool,
    ) -> io::Result<Option<usize>> {
        let (plain_bytes, peer_closed) = match fed {
            Ok(r) => r,
            Err(e) => {
                // Tell the peer why (a TLS alert), as far as it will take it.
                let _ = self.flush_tls_answer(pool).await;
                return Err(e);
            }
        };
        self.flush_tls_answer(pool).await?;
        if peer_closed && plain_bytes == 0 {
            return Ok(None);
        }
        Ok(Some(plain_bytes))
    }

    /// Hands ciphertext to rustls and moves any plaintext into `buf`.
    fn feed_tls(&mut self, mut cipher: &[u8], buf: &mut BytesMut) -> io::Result<(usize, bool)> {
        let conn = self.tls.as_mut().expect("a TLS stream");
        let mut plain_bytes = 0;
        let mut peer_closed = false;
        // Plaintext is never longer than the ciphertext it came in.
        buf.reserve(cipher.len());
        while !cipher.is_empty() {
            let taken = conn.read_tls(&mut cipher)?;
            let state = conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            peer_closed |= state.peer_has_closed();
            // After close_notify rustls takes nothing more: whatever follows is dropped, or
            // this loop would spin forever and freeze the shard.
            let stalled = taken == 0;
            let mut available = state.plaintext_bytes_to_read();
            while available > 0 {
                let start = buf.len();
                buf.resize(start + available, 0);
                let n = match conn.reader().read(&mut buf[start..]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => {
                        buf.truncate(start);
                        return Err(e);
                    }
                };
                buf.truncate(start + n);
                plain_bytes += n;
                if n == 0 {
                    break;
                }
                available -= n;
            }
            if stalled || peer_closed {
                break;
            }
        }
        Ok((plain_bytes, peer_closed))
    }

    /// Writes what rustls queued in answer to a read (handshake flights, alerts), within
    /// `TLS_ANSWER_WAIT_MS`: the read path watches no close request, so a peer that stops
    /// reading there must not hold the connection past its timers.
    async fn flush_tls_answer(&mut self, pool: &BufferPool) -> io::Result<()> {
        if !self.tls.as_ref().is_some_and(|t| t.wants_write()) {
            return Ok(());
        }
        let wait = Duration::from_millis(TLS_ANSWER_WAIT_MS);
        match monoio::time::timeout(wait, self.flush_tls(pool, &|| {})).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer took no TLS records",
            )),
        }
    }

    /// Writes what rustls has queued (handshake, alerts, encrypted data); `on_room` as for
    /// `write_all`.
    async fn flush_tls(&mut self, pool: &BufferPool, on_room: &dyn Fn()) -> io::Result<()> {
        let Some(conn) = self.tls.as_mut() else {
            return Ok(());
        };
        while conn.wants_write() {
            let mut out = pool.take().writer();
            while conn.wants_write() && out.get_ref().len() < pool.buffer_bytes() {
                conn.write_tls(&mut out)?;
            }
            let out = out.into_inner();
            let result = send_all(&self.tcp, &out, on_room, false).await;
            pool.give(out);
            result?;
        }
        Ok(())
    }

    /// Writes all of `data` (encrypted first for TLS). Gives the buffer back either way.
    pub async fn write_all(
        &mut self,
        data: BytesMut,
        pool: &BufferPool,
    ) -> (io::Result<()>, BytesMut) {
        self.write_all_watched(data, None, pool, &|| {}).await
    }

    /// One non-blocking send on a plain stream (TLS bytes go through rustls: `write_all`): the
    /// bytes of `data` the socket took, 0 when it is full. Never waits, allocates nothing.
    pub fn send_now(&self, data: &[u8]) -> io::Result<usize> {
        if self.tls.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a TLS stream sends through rustls",
            ));
        }
        send_now(&self.tcp, data)
    }

    /// `write_all`, calling `on_room` whenever the socket takes bytes after it was full: the
    /// peer acknowledged what it had, so it is there and reading (a slow link's liveness
    /// while a long backlog goes out). A write that never waited proves nothing: the kernel
    /// buffers it whether the peer is alive or not.
    ///
    /// `sent`: `Some(n)` when [`Stream::send_now`] already sent the first `n` bytes of `data`
    /// and found the socket full; the write goes on behind them, waiting for room first.
    pub async fn write_all_watched(
        &mut self,
        data: BytesMut,
        sent: Option<usize>,
        pool: &BufferPool,
        on_room: &dyn Fn(),
    ) -> (io::Result<()>, BytesMut) {
        if self.tls.is_none() {
            let (from, full) = sent.map_or((0, false), |n| (n.min(data.len()), true));
            let result = send_all(&self.tcp, &data[from..], on_room, full).await;
            return (result, data);
        }
        if sent.is_some() {
            // Plaintext sent past rustls would corrupt the stream; never happens (`send_now`
            // refuses a TLS stream).
            return (
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a TLS stream's write cannot go on from a plain send",
                )),
                data,
            );
        }
        let mut at = 0;
        while at < data.len() {
            let conn = self.tls.as_mut().expect("a TLS stream");
            match conn.writer().write(&data[at..]) {
                Ok(n) => at += n,
                Err(e) => return (Err(e), data),
            }
            if let Err(e) = self.flush_tls(pool, on_room).await {
                return (Err(e), data);
            }
        }
        (Ok(()), data)
    }

    /// Ends the stream politely: TLS close_notify, then a TCP half-close.
    pub async fn shutdown(&mut self, pool: &BufferPool) {
        if let Some(conn) = self.tls.as_mut() {
            conn.send_close_notify();
            let _ = self.flush_tls(pool, &|| {}).await;
        }
        let _ = rustix::net::shutdown(fd(&self.tcp), rustix::net::Shutdown::Write);
    }
}

/// The socket's descriptor, for one call on it.
#[allow(unsafe_code)] // monoio's stream offers `AsRawFd` only, not `AsFd`
pub(super) fn fd(tcp: &TcpStream) -> BorrowedFd<'_> {
    // SAFETY: `tcp` owns the descriptor and is borrowed for as long as the result lives.
    unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) }
}

/// Sends all of `data`, waiting for room in the socket's buffer whenever it is full (`full`:
/// it is known to be already, the wait comes first); `on_room` is called when bytes go after
/// such a wait.
async fn send_all(
    tcp: &TcpStream,
    mut data: &[u8],
    on_room: &dyn Fn(),
    mut full: bool,
) -> io::Result<()> {
    while !data.is_empty() {
        if full {
            tcp.writable(false).await?;
        }
        let n = send_now(tcp, data)?;
        if n > 0 && full {
            on_room();
        }
        full = n == 0;
        data = &data[n..];
    }
    Ok(())
}

/// One non-blocking send of `data`: the bytes the socket took, 0 when it is full.
fn send_now(tcp: &TcpStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match rustix::net::send(fd(tcp), data, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            // Nothing taken with room to take it: the socket will take nothing more.
            Ok(0) if !data.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}

//! The byte stream under the WebSocket and TLS transports: plain TCP, or TLS driven by hand over
//! it. rustls does the protocol; this file moves its bytes, so the shard's rules hold for TLS
//! too: wait for readiness, read ciphertext into a pooled buffer, never leave a read in flight.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use monoio::buf::SliceMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use super::local::BufferPool;

/// Room a read needs at least; a smaller remainder is grown first.
const READ_ROOM_BYTES_MIN: usize = 1024;

pub(super) struct Stream {
    tcp: TcpStream,
    tls: Option<Box<ServerConnection>>,
}

impl Stream {
    pub fn plain(tcp: TcpStream) -> Self {
        Self { tcp, tls: None }
    }

    /// Starts a TLS session; the handshake runs as `read` is called (see `handshaking`).
    pub fn tls(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Self {
            tcp,
            tls: Some(Box::new(conn)),
        })
    }

    /// The client's address (looked up once, then cached by the socket); unspecified if the
    /// socket no longer knows it (the client is gone).
    pub fn peer_ip(&self) -> std::net::IpAddr {
        self.tcp
            .peer_addr()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip())
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Resolves when the socket has bytes (not `relaxed`: on epoll a stale "ready" would send the task into a read that blocks
    /// outside the loop's select, deaf to pushes and kicks; an in-flight read is never
    /// cancelled, as io_uring could lose the bytes it already took).
    pub fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + '_ {
        self.tcp.readable(false)
    }

    /// Reads once and appends the plaintext to `buf` (for TLS: ciphertext goes through a pooled
    /// buffer; handshake records are answered here). `Ok(None)` at end of stream. `Ok(Some(0))`
    /// can happen with TLS: records that carried no data.
    pub async fn read(
        &mut self,
        buf: &mut BytesMut,
        pool: &BufferPool,
    ) -> io::Result<Option<usize>> {
        let plain = self.tls.is_none();
        let mut into = if plain {
            if buf.capacity() - buf.len() < READ_ROOM_BYTES_MIN {
                buf.reserve(pool.buffer_bytes().max(READ_ROOM_BYTES_MIN));
            }
            std::mem::take(buf)
        } else {
            pool.take()
        };
        let (begin, end) = (into.len(), into.capacity());
        let (result, slice) = self.tcp.read(SliceMut::new(into, begin, end)).await;
        into = slice.into_inner();
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if plain {
                    *buf = into;
                } else {
                    pool.give(into);
                }
                return Ok(Some(0));
            }
            Err(e) => {
                if plain {
                    *buf = into;
                } else {
                    pool.give(into);
                }
                return Err(e);
            }
        };
        if plain {
            *buf = into;
            return Ok((n > 0).then_some(n));
        }
        if n == 0 {
            pool.give(into);
            return Ok(None);
        }
        let result = self.feed_tls(&into, buf);
        pool.give(into);
        let (plain_bytes, peer_closed) = match result {
            Ok(r) => r,
            Err(e) => {
                // Tell the peer why (a TLS alert), as far as it will take it.
                let _ = self.flush_tls(pool).await;
                return Err(e);
            }
        };
        self.flush_tls(pool).await?;
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

    /// Writes what rustls has queued (handshake, alerts, encrypted data).
    async fn flush_tls(&mut self, pool: &BufferPool) -> io::Result<()> {
        let Some(conn) = self.tls.as_mut() else {
            return Ok(());
        };
        while conn.wants_write() {
            let mut out = pool.take().writer();
            while conn.wants_write() && out.get_ref().len() < pool.buffer_bytes() {
                conn.write_tls(&mut out)?;
            }
            let (result, out) = self.tcp.write_all(out.into_inner()).await;
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
        if self.tls.is_none() {
            let (result, data) = self.tcp.write_all(data).await;
            return (result.map(|_| ()), data);
        }
        let mut at = 0;
        while at < data.len() {
            let conn = self.tls.as_mut().expect("a TLS stream");
            match conn.writer().write(&data[at..]) {
                Ok(n) => at += n,
                Err(e) => return (Err(e), data),
            }
            if let Err(e) = self.flush_tls(pool).await {
                return (Err(e), data);
            }
        }
        (Ok(()), data)
    }

    /// Ends the stream politely: TLS close_notify, then a TCP half-close.
    pub async fn shutdown(&mut self, pool: &BufferPool) {
        if let Some(conn) = self.tls.as_mut() {
            conn.send_close_notify();
            let _ = self.flush_tls(pool).await;
        }
        let _ = self.tcp.shutdown().await;
    }
}

//! A trusted load balancer's PROXY header (`gateway.proxy_protocol_from`), read once as its
//! connection opens, before the TLS ClientHello, the HTTP upgrade or the first frame; the
//! message path never looks at it again. Only the header is taken off the socket: its bytes are
//! peeked at, and what follows them stays in the socket for the transport's opening, so bytes
//! the client sent in the same segment are not lost (nor copied).

use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use super::{Conn, write_or_cut};
use crate::proxy_protocol::{self, HEADER_BYTES_MAX, Refused, Scan};

impl Conn {
    /// Reads the header within `limit`, makes its source the connection's client address and
    /// applies the IP rules to that address (skipped at accept for a balancer's connection).
    /// `false`: the connection is to be closed (counted).
    pub(super) async fn open_proxied(&mut self, limit: Duration) -> bool {
        let shard = Rc::clone(&self.session.shard);
        let shared = Rc::clone(&self.session.shared);
        let read = monoio::time::timeout(limit, self.read_proxy_header());
        let refused = match write_or_cut(&shared, read).await {
            Some(Ok(Ok(source))) => {
                if let Some(ip) = source {
                    self.stream.set_client_ip(ip);
                }
                None
            }
            Some(Ok(Err(why))) => Some(why),
            Some(Err(_elapsed)) => Some(Refused::Timeout),
            // Told to close meanwhile (the server stopping): nothing the peer did wrong.
            None => return false,
        };
        if let Some(why) = refused {
            shard.stats.refused_proxy(why);
            tracing::debug!(
                shard = shard.id,
                balancer = %self.stream.tcp_peer_ip(),
                reason = why.label(),
                "connection from a gateway.proxy_protocol_from peer closed: no usable PROXY header"
            );
            return false;
        }
        if let Err(why) = shard.ip_rules.borrow().check(self.stream.peer_ip()) {
            shard.stats.refused_ip(why);
            return false;
        }
        true
    }

    /// The header's source address (`None`: the header names none, and the TCP peer's stands),
    /// or why there is no usable header.
    async fn read_proxy_header(&self) -> Result<Option<IpAddr>, Refused> {
        let mut header = [0u8; HEADER_BYTES_MAX];
        // Bytes at the start of `header` already taken off the socket: all of them header.
        let mut taken = 0;
        loop {
            if taken >= HEADER_BYTES_MAX {
                return Err(Refused::TooLarge);
            }
            if self.stream.readable().await.is_err() {
                return Err(Refused::Closed);
            }
            let seen = match self.stream.peek_raw(&mut header[taken..]) {
                Ok(0) => return Err(Refused::Closed),
                Ok(n) => taken + n,
                // A stale readiness: wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return Err(Refused::Closed),
            };
            let (take, done) = match proxy_protocol::scan(&header[..seen])? {
                // The header's own bytes only: what follows is the transport's.
                Scan::Complete { len, source } => (len, Some(source)),
                // Every byte seen is header: taken, so that the readiness wait that follows
                // waits for more rather than answering at once for bytes already seen.
                Scan::Incomplete => (seen, None),
            };
            self.stream
                .consume_raw(take.saturating_sub(taken))
                .map_err(|_| Refused::Closed)?;
            taken = take;
            if let Some(source) = done {
                return Ok(source);
            }
        }
    }
}

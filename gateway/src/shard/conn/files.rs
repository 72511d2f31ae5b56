//! A connection whose first request is under `/files`: its plaintext goes to the backend's
//! files service over a bounded pipe (`crate::files`), both ways, until either side closes. The
//! shard parses nothing past the first head: keep-alive, bodies and responses are the
//! backend's. Back-pressure holds end to end: the shard reads from the client only once what it
//! read before is in the pipe, and reads from the pipe only once what it read before is written
//! to the client; the pipe holds `[gateway.files] pipe_bytes` each way at most.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{Conn, FINAL_FLUSH_MS, ReadTurn, write_or_cut};
use crate::files::Admitted;
use crate::shard::Shard;
use crate::shard::ws::http;

/// A file connection's places in the shard's and in the gateway's counts, given back on drop.
struct Open {
    shard: Rc<Shard>,
    _admitted: Admitted,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.shard.files_open.set(self.shard.files_open.get() - 1);
        self.shard.stats.files_conns.sub(1);
    }
}

/// How the copying ended.
enum Pumped {
    /// The backend closed, the shard asked to close (shutdown, idle), or the client went away.
    Done,
    /// A write to the client was cut short: the stream must not be written again.
    WriteCut,
}

impl Conn {
    /// Serves the connection as a files connection; `head` holds what was read so far (the
    /// first request's head, maybe more). One turned away at accept was answered in `open`.
    pub(super) async fn serve_files(&mut self, head: BytesMut) {
        let shard = Rc::clone(&self.session.shard);
        let Some(gate) = shard.files.clone() else {
            shard.pool.give(head);
            self.refuse_files(false).await;
            return;
        };
        let per_shard = shard.files_open.get();
        let admitted = if per_shard >= gate.config().conns_per_shard_max {
            None
        } else {
            gate.admit(self.stream.peer_ip()).ok()
        };
        let Some(admitted) = admitted else {
            shard.stats.files_refused_busy.add(1);
            shard.pool.give(head);
            self.refuse_files(true).await;
            return;
        };
        shard.files_open.set(per_shard + 1);
        shard.stats.files_conns.add(1);
        let _open = Open {
            shard: Rc::clone(&shard),
            _admitted: admitted,
        };
        // No login comes on this connection: from here only the idle timeout applies, kept
        // fresh as bytes move either way, and it is counted among file connections, no longer
        // among its client's connections not logged in.
        self.shared().set_authed();
        self.session.release_prelogin();
        let pipe = gate.connect(self.stream.peer_ip());
        match self.pump_files(head, pipe).await {
            Ok(Pumped::Done) => {}
            Ok(Pumped::WriteCut) => return,
            Err(err) => {
                tracing::debug!(shard = shard.id, conn = self.shared().id, %err, "files connection I/O error");
                return;
            }
        }
        self.close_politely().await;
    }

    /// Answers a files request the shard cannot hand over (404: no files service; 503: busy),
    /// then closes.
    pub(super) async fn refuse_files(&mut self, busy: bool) {
        let shard = Rc::clone(&self.session.shard);
        let mut out = shard.pool.take();
        out.extend_from_slice(http::files_refusal(busy).as_bytes());
        let grace = Duration::from_millis(FINAL_FLUSH_MS);
        let written = monoio::time::timeout(grace, self.stream.write_all(out, &shard.pool)).await;
        if let Ok((_, out)) = written {
            shard.pool.give(out);
            self.close_politely().await;
        }
    }

    /// TLS close_notify and a TCP half-close, then what the client still sends is read and
    /// dropped for a moment (closing with unread bytes would reset the connection and could
    /// lose the response's end).
    async fn close_politely(&mut self) {
        let shard = Rc::clone(&self.session.shard);
        let grace = Duration::from_millis(FINAL_FLUSH_MS);
        let _ = monoio::time::timeout(grace, self.stream.shutdown(&shard.pool)).await;
        self.drain_until_eof().await;
    }

    /// Copies bytes both ways between the client and the pipe until one of them closes.
    async fn pump_files(&mut self, mut up: BytesMut, pipe: DuplexStream) -> io::Result<Pumped> {
        enum Step {
            Readable(io::Result<()>),
            Wrote(io::Result<usize>),
            Read(io::Result<usize>),
            Closed,
        }
        let shard = Rc::clone(&self.session.shard);
        let shared = Rc::clone(&self.session.shared);
        let (mut from_backend, mut to_backend) = tokio::io::split(pipe);
        let mut down = shard.pool.take();
        let mut client_done = false;
        let mut reads = ReadTurn::default();
        let result = loop {
            self.seen();
            if !down.is_empty() {
                let out = std::mem::take(&mut down);
                let len = out.len() as u64;
                match write_or_cut(&shared, self.stream.write_all(out, &shard.pool)).await {
                    Some((result, mut back)) => {
                        back.clear();
                        down = back;
                        if let Err(err) = result {
                            break Err(err);
                        }
                        shard.stats.bytes_out.add(len);
                    }
                    None => break Ok(Pumped::WriteCut),
                }
                continue;
            }
            if shared.close.get().is_some() {
                break Ok(Pumped::Done);
            }
            let step = monoio::select! {
                r = self.stream.readable(), if up.is_empty() && !client_done => Step::Readable(r),
                r = to_backend.write(&up), if !up.is_empty() => Step::Wrote(r),
                r = from_backend.read_buf(&mut down) => Step::Read(r),
                () = shared.closed() => Step::Closed,
            };
            match step {
                Step::Readable(Ok(())) => match self.stream.read(&mut up, &shard.pool).await {
                    Ok(Some(n)) => {
                        shard.stats.bytes_in.add(n as u64);
                        // An upload that never stops must not hold the shard.
                        reads.after_read(&shard).await;
                    }
                    Ok(None) => {
                        // The client has sent all it will: the backend reads the end too.
                        client_done = true;
                        if let Err(err) = to_backend.shutdown().await {
                            break Err(err);
                        }
                    }
                    Err(err) => break Err(err),
                },
                Step::Wrote(Ok(0)) => break Err(io::ErrorKind::WriteZero.into()),
                Step::Wrote(Ok(n)) => {
                    up.advance(n);
                    if up.is_empty() {
                        up.clear();
                    }
                }
                // The backend ended the connection (it said `Connection: close`, timed out or
                // failed): what it wrote before is read first.
                Step::Wrote(Err(_)) => {
                    up.clear();
                    client_done = true;
                }
                Step::Read(Ok(0)) => break Ok(Pumped::Done),
                Step::Read(Ok(_)) => {}
                Step::Readable(Err(err)) | Step::Read(Err(err)) => break Err(err),
                Step::Closed => break Ok(Pumped::Done),
            }
        };
        shard.pool.give(up);
        shard.pool.give(down);
        result
    }
}

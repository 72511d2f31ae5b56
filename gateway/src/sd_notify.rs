//! systemd's readiness protocol (sd_notify(3)): under a `Type=notify` unit, systemd counts the
//! server as started only once it says `READY=1` (its listeners are bound and its shards run),
//! so units ordered after it and `systemctl start` wait for a server that takes clients, and it
//! shows "deactivating" while the server drains after `STOPPING=1`. One datagram to the socket
//! systemd names in `NOTIFY_SOCKET`; without that variable (not under systemd) nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=VALUE` assignments, such as `READY=1`) to systemd.
/// `Ok(false)`: not under systemd, nothing sent.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let addr = socket_addr(&socket)?;
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// [`notify`], logging a failure: a missed notification must not stop the server (systemd then
/// reports the start as timed out, which names the cause).
pub fn notify_or_log(state: &str) {
    if let Err(err) = notify(state) {
        tracing::warn!(%err, state, "could not notify systemd ({NOTIFY_SOCKET})");
    }
}

/// A path (`/run/systemd/notify`) or an abstract socket name (`@…`).
fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket),
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{NOTIFY_SOCKET}={socket:?} is neither a socket path nor an @abstract name"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_abstract_names_are_addresses_and_anything_else_is_refused() {
        let path = socket_addr(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_name = socket_addr(OsStr::new("@ringchat/notify")).unwrap();
        use std::os::linux::net::SocketAddrExt;
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"ringchat/notify"[..])
        );
        let err = socket_addr(OsStr::new("vsock:2:1234")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("vsock:2:1234"), "{err}");
    }
}

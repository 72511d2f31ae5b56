//! Which process is listening on a TCP port, from /proc (Linux): the listening socket's inode in
//! /proc/net/tcp and /proc/net/tcp6, then the process with a descriptor linked to that socket.
//! Used only to say who holds a port the server cannot have; `None` whenever /proc does not tell
//! (another user's process, another network namespace, not Linux).

use std::path::Path;

/// TCP state `LISTEN` in /proc/net/tcp.
const STATE_LISTEN: &str = "0A";

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortOwner {
    pub pid: u32,
    /// /proc/PID/comm: the executable's name, at most 15 bytes.
    pub comm: String,
}

impl std::fmt::Display for PortOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.comm)
    }
}

/// The process listening on `port` (any address, IPv4 or IPv6), if /proc can tell.
pub fn find(port: u16) -> Option<PortOwner> {
    find_in(Path::new("/proc"), port)
}

fn find_in(proc: &Path, port: u16) -> Option<PortOwner> {
    let inodes: Vec<u64> = ["net/tcp", "net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(proc.join(table)).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let links: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Another user's descriptors are not readable: skip the process.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| links.iter().any(|l| target.as_os_str() == l.as_str()))
        });
        if holds {
            let comm = std::fs::read_to_string(entry.path().join("comm"))
                .map(|c| c.trim_end().to_owned())
                .unwrap_or_default();
            return Some(PortOwner { pid, comm });
        }
    }
    None
}

/// Inodes of the sockets listening on `port` in one /proc/net/tcp{,6} table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            let inode: u64 = inode.parse().ok()?;
            (local_port == port && *state == STATE_LISTEN && inode != 0).then_some(inode)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F40 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4444 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_on_the_port_count() {
        assert_eq!(listening_inodes(TABLE, 8000), vec![4242]);
        assert_eq!(listening_inodes(TABLE, 8001), vec![4444]);
        assert!(listening_inodes(TABLE, 8002).is_empty());
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000000000000:1F40 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_inodes(v6, 8000), vec![777]);
    }

    #[test]
    fn finds_this_process_holding_a_listener() {
        if !Path::new("/proc/net/tcp").exists() {
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let owner = find(port).expect("this process's listener is found");
        assert_eq!(owner.pid, std::process::id());
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(owner.comm, comm.trim_end());
        drop(listener);
        assert_eq!(find(port), None, "a closed listener has no owner");
    }
}

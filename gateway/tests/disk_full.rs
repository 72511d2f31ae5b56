//! A full disk: the data dir on a small tmpfs, filled by a pipelined sender. Refused sends are not
//! stored, acked ones survive, and the server does not stay up refusing every write: it stops
//! with a clear line (for its supervisor to restart it), and once there is room again a restart
//! serves every acked message exactly once. Needs root (it mounts a tmpfs), as CI runs.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestServer;
use ringchat_bench::client::conversation_id;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ContentType, ErrorCode};

/// Messages in flight from the sender.
const WINDOW: usize = 8;
/// Content bytes per message: incompressible, so the store cannot squeeze them.
const CONTENT_BYTES: usize = 24 * 1024;
/// Sends at most: 48 MiB, far past the 6 MiB file system.
const SENDS_MAX: usize = 2_000;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (CI runs as root)"
        );
        Self(at.to_owned())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "remounting the tmpfs failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes no compressor shrinks (xorshift).
fn noise(seed: u64, len: usize) -> Bytes {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

#[tokio::test]
async fn a_full_disk_refuses_sends_keeps_acked_ones_and_stops_the_server() {
    if common::store::embedded_only(
        "a_full_disk_refuses_sends_keeps_acked_ones_and_stops_the_server",
        "a full file system under the embedded data dir; PostgreSQL keeps its data elsewhere",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&tmp.path().join("disk"), "6m");
    let data_dir = disk.0.join("data");
    let mut server = TestServer::start_in(&data_dir, &[]);
    let (mut alice, a) = server.user("alice").await;
    let (_bob, b) = server.user("bob").await;
    let conv = conversation_id(a.user_id, b.user_id);

    // Pipeline sends until the store refuses one (or the server closes the connection).
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut refused: HashSet<String> = HashSet::new();
    let mut in_flight: HashMap<u64, String> = HashMap::new();
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the disk never filled");
        while in_flight.len() < WINDOW && sent < SENDS_MAX && refused.is_empty() {
            let id = format!("m{sent}");
            let body = Body::Send(v1::Send {
                client_msg_id: id.clone(),
                to_user_id: b.user_id,
                content_type: ContentType::Custom as i32,
                content: noise(sent as u64 + 1, CONTENT_BYTES),
                ..Default::default()
            });
            match alice.send(body).await {
                Ok(request_id) => {
                    in_flight.insert(request_id, id);
                    sent += 1;
                }
                Err(_) => break,
            }
        }
        if in_flight.is_empty() {
            break;
        }
        let frame = match alice.recv_timeout().await {
            Ok(Some(frame)) => frame,
            // The server is stopping.
            Ok(None) | Err(_) => break,
        };
        let Some(id) = in_flight.remove(&frame.request_id) else {
            continue; // a push or a kick
        };
        match frame.body {
            Some(Body::SendAck(ack)) => {
                assert!(!ack.duplicate);
                acked.insert(id, ack.seq);
            }
            Some(Body::Error(e)) => {
                assert_eq!(e.code, ErrorCode::Unavailable as i32, "{e:?}");
                assert!(e.retry_after_ms > 0, "a refusal says when to retry: {e:?}");
                refused.insert(id);
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
    // What was still in flight when the server closed is neither acked nor refused: it may or
    // may not be stored, and either is right (the client resends it by client_msg_id).
    assert!(
        !acked.is_empty(),
        "nothing was acked before the disk filled"
    );
    assert!(
        !refused.is_empty(),
        "nothing was refused ({} acked, {} in flight when the connection ended); log:\n{}",
        acked.len(),
        in_flight.len(),
        server.log_tail()
    );

    // The server does not stay up refusing every write: it stops by itself, non-zero, saying why.
    let status = server.wait_exit();
    assert!(
        !status.success(),
        "a server whose store refuses writes exits non-zero"
    );
    let log = server.log_tail();
    assert!(
        log.contains("the store refuses writes"),
        "the log says why it stopped:\n{log}"
    );

    // With room again, a restart serves every acked message exactly once, seqs gap-free, and
    // nothing that was refused.
    disk.resize("256m");
    server.restart();
    let (mut bob, _) = server.device("bob", "bob-dev2").await;
    let messages = bob.sync_all(conv, 0).await.unwrap();
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=messages.len() as u64).collect::<Vec<_>>(),
        "seqs are gap-free"
    );
    let mut seen = HashSet::new();
    for m in &messages {
        assert!(
            seen.insert(m.client_msg_id.clone()),
            "stored once: {}",
            m.client_msg_id
        );
        assert!(
            !refused.contains(&m.client_msg_id),
            "a refused send was stored: {}",
            m.client_msg_id
        );
    }
    for (id, seq) in &acked {
        let m = messages
            .iter()
            .find(|m| &m.client_msg_id == id)
            .unwrap_or_else(|| panic!("acked message {id} (seq {seq}) was lost"));
        assert_eq!(m.seq, *seq);
        let n: u64 = id[1..].parse().unwrap();
        assert_eq!(m.content, noise(n + 1, CONTENT_BYTES), "content of {id}");
    }
    // And the server takes writes again.
    let ack = alice_again(&server, b.user_id).await;
    assert_eq!(ack.seq, messages.len() as u64 + 1);
}

async fn alice_again(server: &TestServer, to: u64) -> v1::SendAck {
    let (mut alice, _) = server.device("alice", "alice-dev2").await;
    alice
        .send_text(to, "after-restart", "room again")
        .await
        .unwrap()
        .expect("a send after the restart is acked")
}

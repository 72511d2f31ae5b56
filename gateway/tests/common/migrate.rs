//! What the migration tests share: a large store filled through the embedded store's ports,
//! and the `ringchat` CLI run to its end.

use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use ringchat_backend::fill::{
    self, CommitGroup, ConvId, CursorRow, Durability, MessageRecord, RecencyMove, Rng,
    recency_bucket,
};

/// Messages in the migrated stores. 1,000,000 is the figure; a debug build copies and
/// verifies about 100,000 in the time a test may take here, so the suite uses that and
/// `bench/migrate-1m.sh` runs the million (figures in docs/BENCHMARKS.md).
pub fn migrate_messages() -> u64 {
    std::env::var("RINGCHAT_TEST_MIGRATE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

pub fn ringchat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .args(args)
        .env_clear()
        .output()
        .expect("run ringchat")
}

/// [`ringchat`] in `dir` (where a copy into PostgreSQL keeps its checkpoint).
pub fn ringchat_in(dir: &Path, args: &[&str]) -> Output {
    ringchat_in_with(dir, args, &[])
}

/// `ringchat_in` with `env` as its only environment.
pub fn ringchat_in_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run ringchat")
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fills `dir` with `messages` messages in 1,000 direct conversations of 200 users, shaped
/// like the sequencer's commit groups (runs, rows, recency), through the embedded store's ports.
pub fn fill_store(dir: &Path, messages: u64) {
    let ports = fill::open(dir, Durability::None).unwrap();
    let now = 1_700_000_000_000u64;
    let users: Vec<u64> = (0..200)
        .map(|i| {
            ports
                .accounts
                .create_user(&format!("user{i}"), "x", "", now)
                .unwrap()
                .user_id
        })
        .collect();
    let mut rng = Rng(7);
    let mut convs: Vec<(ConvId, [u64; 2], u64, [CursorRow; 2])> = Vec::new();
    while convs.len() < 1000 {
        let (a, b) = (
            users[rng.below(200) as usize],
            users[rng.below(200) as usize],
        );
        if let Some(id) = ConvId::direct(a, b)
            && !convs.iter().any(|c| c.0 == id)
        {
            convs.push((id, [a, b], 0, Default::default()));
        }
    }
    let content = Bytes::from(vec![b'x'; 64]);
    let (mut written, mut next_msg_id) = (0u64, 1u64);
    while written < messages {
        let mut group = CommitGroup::default();
        let first = rng.below(convs.len() as u64) as usize;
        for k in 0..128 {
            let conv = &mut convs[(first + k * 7) % 1000];
            if conv.2 == 0 {
                for user in conv.1 {
                    group.recency.push(RecencyMove {
                        user,
                        conv: conv.0,
                        from: None,
                        to: recency_bucket(now),
                    });
                }
            }
            for _ in 0..8 {
                if written == messages {
                    break;
                }
                let side = rng.below(2) as usize;
                conv.2 += 1;
                let cmid = format!("f{next_msg_id}");
                conv.3[side].remember_send(&cmid, conv.2, 64);
                conv.3[1 - side].cursor.delivered_seq = conv.2;
                group.messages.push(MessageRecord {
                    conv_id: conv.0,
                    seq: conv.2,
                    msg_id: next_msg_id,
                    from: conv.1[side],
                    to: conv.1[1 - side],
                    client_msg_id: cmid,
                    content_type: 1,
                    content: content.clone(),
                    server_time_ms: now,
                    recalled: false,
                    recall_of_seq: 0,
                    recall_event_seq: 0,
                    mentions: None,
                });
                next_msg_id += 1;
                written += 1;
            }
            for side in 0..2 {
                group
                    .cursor_rows
                    .push((conv.0, conv.1[side], conv.3[side].clone()));
            }
        }
        group.next_msg_id = Some(next_msg_id);
        ports.log.append(&group).unwrap();
    }
    ports.engine.flush().unwrap();
}

//! Backup, restore and migration with the real binary: an online backup under a send load
//! restores every message acked before it and nothing half; restore refuses a non-empty data
//! dir and a corrupted backup; `migrate` copies a large store, survives a kill -9 mid-way and
//! verifies, and the copy round-trips.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use common::TestServer;
use common::admin::AdminClient;
use common::files::{download, upload};
use common::migrate::{fill_store, ringchat, text};
use ringchat_bench::client::{conversation_id, text_message};
use ringchat_proto::Body;
use serde_json::json;

/// `POST /api/backups` off the test's runtime; the answer, and the client back.
async fn take(
    admin: common::admin::AdminClient,
) -> (common::admin::Reply, common::admin::AdminClient) {
    tokio::task::spawn_blocking(move || (admin.post("/api/backups", json!({})), admin))
        .await
        .unwrap()
}

fn body(i: usize) -> String {
    format!("backed-up message {i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_under_load_restores_every_message_acked_before_it() {
    if common::store::embedded_only(
        "an_online_backup_under_load_restores_every_message_acked_before_it",
        "the embedded store's online backup of its data dir (PostgreSQL is backed up with its own tools)",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    let backups_s = backups.display().to_string();
    let mut server = TestServer::start_in(
        &tmp.path().join("data"),
        &[
            ("BACKUP__DIR", &backups_s),
            ("STORAGE__DEDUP_WINDOW_MESSAGES", "1024"),
        ],
    );
    let admin = server.api_key("backups", "admin");
    let (mut s, sender) = server.user("sender").await;
    let recipient = server.user("recipient").await.1;
    let conv = conversation_id(sender.user_id, recipient.user_id);

    // A pipelined send load that runs until told to stop, recording every ack.
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(std::sync::Mutex::new(HashMap::<usize, u64>::new()));
    let load = {
        let (stop, acks) = (Arc::clone(&stop), Arc::clone(&acks));
        tokio::spawn(async move {
            let (mut in_flight, mut next) = (HashMap::new(), 0usize);
            while !stop.load(Ordering::Relaxed) || !in_flight.is_empty() {
                while in_flight.len() < 16 && !stop.load(Ordering::Relaxed) {
                    let cmid = format!("m{next}");
                    let rid = s
                        .send(text_message(recipient.user_id, &cmid, &body(next)))
                        .await
                        .unwrap();
                    in_flight.insert(rid, next);
                    next += 1;
                }
                let frame = s.recv_timeout().await.unwrap().expect("server alive");
                if let (Some(i), Some(Body::SendAck(ack))) =
                    (in_flight.remove(&frame.request_id), frame.body)
                {
                    acks.lock().unwrap().insert(i, ack.seq);
                }
            }
            s
        })
    };
    common::wait_until("300 acks", || acks.lock().unwrap().len() >= 300);
    let acked_before = acks.lock().unwrap().clone();
    let (status, created) =
        tokio::task::spawn_blocking(move || admin.post("/api/backups", json!({})))
            .await
            .unwrap();
    assert_eq!(status, 201, "{created}");
    let acked_during = acks.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    let s = load.await.unwrap();
    drop(s);
    assert!(
        acked_during > acked_before.len(),
        "the load went on while the backup was written"
    );
    server.stop();

    // Restore into a new data dir, with the CLI, and start a server on it.
    let name = created["name"].as_str().unwrap();
    let restored = tmp.path().join("restored");
    let out = ringchat(&[
        "restore",
        "--from",
        &format!("{backups_s}/{name}"),
        "--data-dir",
        &restored.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("verification passed"), "{}", text(&out));
    let server = TestServer::start_in(&restored, &[("STORAGE__DEDUP_WINDOW_MESSAGES", "1024")]);
    let (mut r, _) = server.device("recipient", "phone").await;
    let stored = r.sync_all(conv, 0).await.unwrap();
    let by_cmid: HashMap<&str, _> = stored
        .iter()
        .map(|m| (m.client_msg_id.as_str(), m))
        .collect();
    for (i, seq) in &acked_before {
        let m = by_cmid
            .get(format!("m{i}").as_str())
            .unwrap_or_else(|| panic!("message m{i}, acked before the backup, is not restored"));
        assert_eq!(m.seq, *seq);
        assert_eq!(std::str::from_utf8(&m.content).unwrap(), body(*i));
    }
    // Nothing half there: seqs run 1..=n without a gap, every message whole, and the
    // conversation's head and the sender's dedup window agree with the log.
    for (k, m) in stored.iter().enumerate() {
        assert_eq!(m.seq, k as u64 + 1, "gap-free seqs");
        let i: usize = m.client_msg_id[1..].parse().unwrap();
        assert_eq!(std::str::from_utf8(&m.content).unwrap(), body(i));
    }
    let head = r
        .conversations()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.conversation_id == conv)
        .expect("the conversation is in the recipient's list");
    assert_eq!(head.max_seq, stored.len() as u64);
    let (mut s, _) = server.user("sender").await;
    let (last_i, last_seq) = acked_before.iter().max_by_key(|(_, seq)| **seq).unwrap();
    let ack = s
        .send_text(recipient.user_id, &format!("m{last_i}"), &body(*last_i))
        .await
        .unwrap()
        .expect("resend acked");
    assert_eq!(ack.seq, *last_seq, "a resend after restore is deduplicated");

    // The listing shows it.
    let admin = server.api_key("lister", "viewer");
    let (status, page) = admin.get("/api/backups");
    assert_eq!(status, 200, "{page}");
    assert!(
        page["items"].as_array().unwrap().is_empty(),
        "this server has no backup.dir"
    );
}

#[tokio::test]
async fn files_are_backed_up_and_restored_and_blobs_are_linked_from_the_last_backup() {
    if common::store::embedded_only(
        "files_are_backed_up_and_restored_and_blobs_are_linked_from_the_last_backup",
        "the embedded store's online backup, with local file storage beside it",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    let backups_s = backups.display().to_string();
    let mut server = TestServer::start_in(&tmp.path().join("data"), &[("BACKUP__DIR", &backups_s)]);
    let admin = server.api_key("backups", "admin");
    let (_c, alice) = server.user("alice").await;
    let bytes: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file_id = upload(&server, &alice.token, "scan.pdf", "application/pdf", &bytes);

    let ((status, first), admin) = take(admin).await;
    assert_eq!(status, 201, "{first}");
    let files = &first["files"];
    assert!(
        files["objects"].as_u64().unwrap() >= 3,
        "blob, meta, index entry: {first}"
    );
    assert!(
        files["bytes"].as_u64().unwrap() >= bytes.len() as u64,
        "{first}"
    );
    // The blob is already in the first backup: the second links it.
    let ((status, second), _) = take(admin).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["files"]["linked"], 1, "{second}");
    server.stop();

    let restored = tmp.path().join("restored");
    let name = second["name"].as_str().unwrap();
    let out = ringchat(&[
        "restore",
        "--from",
        &format!("{backups_s}/{name}"),
        "--data-dir",
        &restored.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("files: "), "{}", text(&out));
    let server = TestServer::start_in(&restored, &[]);
    let (_c, alice) = server.device("alice", "phone").await;
    let (status, body) = download(&server, &alice.token, &file_id, None);
    assert_eq!(status, 200);
    assert!(body == bytes, "the restored file has the uploaded bytes");

    // verify-backup checks the files too: the file's record gone from the backup is found.
    let backup = backups.join(name);
    let out = ringchat(&["verify-backup", &backup.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("files"), "{}", text(&out));
    let meta = std::fs::read_dir(backup.join("files/files"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_dir_all(&meta).unwrap();
    let out = ringchat(&["verify-backup", &backup.display().to_string()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("are damaged"), "{}", text(&out));
}

#[tokio::test]
async fn the_backup_just_written_is_kept_whatever_the_names_of_older_ones() {
    if common::store::embedded_only(
        "the_backup_just_written_is_kept_whatever_the_names_of_older_ones",
        "the embedded store's online backup",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    let backups_s = backups.display().to_string();
    let server = TestServer::start_in(
        &tmp.path().join("data"),
        &[("BACKUP__DIR", &backups_s), ("BACKUP__KEEP", "1")],
    );
    let admin = server.api_key("backups", "admin");
    let ((status, first), admin) = take(admin).await;
    assert_eq!(status, 201, "{first}");
    // A backup made while the clock was ahead: its name sorts above every later one.
    let ahead = backups.join("ringchat-29990101T000000Z");
    let out = Command::new("cp")
        .arg("-a")
        .arg(backups.join(first["name"].as_str().unwrap()))
        .arg(&ahead)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let ((status, second), admin) = take(admin).await;
    assert_eq!(status, 201, "{second}");
    let (status, page) = tokio::task::spawn_blocking(move || admin.get("/api/backups"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [second["name"].as_str().unwrap()], "{page}");
}

/// Keeps `backup` from being deleted until dropped, by real means: as root (whom permissions
/// do not stop) its manifest is made immutable (`chattr +i`, CAP_LINUX_IMMUTABLE on ext4,
/// xfs, btrfs …), else the directory is made read-only so its entries cannot be removed.
struct Undeletable {
    path: std::path::PathBuf,
    as_root: bool,
}

impl Undeletable {
    fn new(backup: &Path) -> Self {
        let uid = Command::new("id").arg("-u").output().unwrap();
        let as_root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let (path, out) = if as_root {
            let manifest = backup.join("manifest.json");
            let out = Command::new("chattr").arg("+i").arg(&manifest).output();
            (manifest, out)
        } else {
            let out = Command::new("chmod").arg("0555").arg(backup).output();
            (backup.to_owned(), out)
        };
        let out = out.expect("run chattr / chmod");
        assert!(
            out.status.success(),
            "making {} undeletable (as root this needs chattr and CAP_LINUX_IMMUTABLE): {}",
            path.display(),
            text(&out)
        );
        Self { path, as_root }
    }
}

impl Drop for Undeletable {
    fn drop(&mut self) {
        let _ = match self.as_root {
            true => Command::new("chattr").arg("-i").arg(&self.path).output(),
            false => Command::new("chmod").arg("0700").arg(&self.path).output(),
        };
    }
}

/// An old backup that cannot be deleted (`backup.keep`) does not make the new one a failure:
/// it is written, answered 201 with a warning, and audited. It was a 500 with no audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_pruning_fails_is_answered_with_a_warning_and_audited() {
    if common::store::embedded_only(
        "a_backup_whose_pruning_fails_is_answered_with_a_warning_and_audited",
        "the embedded store's online backup",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    let backups_s = backups.display().to_string();
    let server = TestServer::start_in(
        &tmp.path().join("data"),
        &[("BACKUP__DIR", &backups_s), ("BACKUP__KEEP", "1")],
    );
    let admin = server.api_key("backups", "admin");
    let ((status, first), admin) = take(admin).await;
    assert_eq!(status, 201, "{first}");
    let first = first["name"].as_str().unwrap().to_owned();
    let _kept = Undeletable::new(&backups.join(&first));

    let ((status, second), admin) = take(admin).await;
    assert_eq!(status, 201, "{second}");
    assert!(
        second["warning"]
            .as_str()
            .is_some_and(|w| w.contains("not all deleted")),
        "{second}"
    );
    assert_eq!(second["deleted"], json!([]), "{second}");
    let name = second["name"].as_str().unwrap().to_owned();
    assert!(backups.join(&name).join("manifest.json").is_file());
    let (status, audit) = tokio::task::spawn_blocking(move || admin.get("/api/audit?limit=50"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{audit}");
    let target = format!("backup:{name}");
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "backup.create" && e["target"] == target.as_str())
        .unwrap_or_else(|| panic!("no backup.create for {name}: {audit}"));
    assert!(
        entry["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not all deleted")),
        "{entry}"
    );
}

#[tokio::test]
async fn restore_refuses_a_files_directory_that_is_not_empty() {
    if common::store::embedded_only(
        "restore_refuses_a_files_directory_that_is_not_empty",
        "the embedded store's online backup, with local file storage beside it",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    let backups_s = backups.display().to_string();
    let server = TestServer::start_in(&tmp.path().join("data"), &[("BACKUP__DIR", &backups_s)]);
    let admin = server.api_key("backups", "admin");
    let ((status, taken), _) = take(admin).await;
    assert_eq!(status, 201, "{taken}");
    drop(server);
    let from = format!("{backups_s}/{}", taken["name"].as_str().unwrap());
    // A configuration whose `[files] dir` is outside the data dir and holds a live server's
    // files (here: one file).
    let live_files = tmp.path().join("live-files");
    std::fs::create_dir_all(live_files.join("files")).unwrap();
    std::fs::write(live_files.join("files/keep-me"), b"live").unwrap();
    let config = tmp.path().join("restore.toml");
    std::fs::write(
        &config,
        format!("[files]\ndir = {:?}\n", live_files.display().to_string()),
    )
    .unwrap();
    let config_s = config.display().to_string();
    let into = tmp.path().join("rehearsal").display().to_string();
    let args = [
        "restore",
        "--from",
        &from,
        "-c",
        &config_s,
        "--data-dir",
        &into,
    ];
    let out = ringchat(&args);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    assert_eq!(
        std::fs::read(live_files.join("files/keep-me")).unwrap(),
        b"live"
    );
    assert!(!tmp.path().join("rehearsal").exists(), "nothing written");
    // Into an empty one it goes.
    std::fs::remove_dir_all(&live_files).unwrap();
    let out = ringchat(&args);
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test]
async fn restore_refuses_a_non_empty_dir_and_a_corrupted_backup() {
    if common::store::embedded_only(
        "restore_refuses_a_non_empty_dir_and_a_corrupted_backup",
        "restore of an embedded store's backup into a data dir",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[]);
    let (mut a, alice) = server.user("alice").await;
    let bob = server.user("bob").await.1;
    for i in 0..50 {
        a.send_text(bob.user_id, &format!("c{i}"), &body(i))
            .await
            .unwrap()
            .unwrap();
    }
    let data_s = data.display().to_string();
    let backup = tmp.path().join("b1");
    let backup_s = backup.display().to_string();

    // The CLI will not open a running server's data dir; it says how to get a backup.
    let running = Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .args(["backup", "--to", &backup_s])
        .env("RINGCHAT_STORAGE__DATA_DIR", &data_s)
        .output()
        .unwrap();
    assert!(!running.status.success());
    assert!(
        text(&running).contains("POST /api/backups"),
        "{}",
        text(&running)
    );
    server.stop();

    let out = Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .args(["backup", "--to", &backup_s])
        .env("RINGCHAT_STORAGE__DATA_DIR", &data_s)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = ringchat(&["verify-backup", &backup_s]);
    assert!(out.status.success(), "{}", text(&out));

    // A data dir with anything in it is refused.
    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let out = ringchat(&[
        "restore",
        "--from",
        &backup_s,
        "--data-dir",
        &busy.display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is not empty"), "{}", text(&out));

    // One flipped byte in the messages: refused before anything is written, clearly.
    let file = backup.join("messages.dump");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let fresh = tmp.path().join("fresh");
    let out = ringchat(&[
        "restore",
        "--from",
        &backup_s,
        "--data-dir",
        &fresh.display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("backup part messages") && text(&out).contains("is corrupt"),
        "{}",
        text(&out)
    );
    assert!(!fresh.exists(), "nothing restored from a corrupt backup");
    let out = ringchat(&["verify-backup", &backup_s]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is corrupt"), "{}", text(&out));

    // Alice's messages are still in the original.
    let server = TestServer::start_in(&data, &[]);
    let (mut r, _) = server.user("bob").await;
    let conv = conversation_id(alice.user_id, bob.user_id);
    assert_eq!(r.sync_all(conv, 0).await.unwrap().len(), 50);
}

/// Every file and directory under `dir` with group or other permission bits.
fn not_private(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.permissions().mode() & 0o077 != 0 {
            out.push(format!(
                "{} {:o}",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                todo.push(entry.unwrap().path());
            }
        }
    }
    out
}

/// `ringchat ARGS` under umask 022 (files the group and others can read, unless made
/// otherwise), with `data_dir` as the data dir.
fn ringchat_umask_022(data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_ringchat"))
        .args(args)
        .env_clear()
        .env("RINGCHAT_STORAGE__DATA_DIR", data_dir)
        .output()
        .unwrap()
}

#[tokio::test]
async fn ip_rules_operators_and_activity_come_back_with_a_restore() {
    if common::store::embedded_only(
        "ip_rules_operators_and_activity_come_back_with_a_restore",
        "the embedded store's online backup of its data dir",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    let backups_s = backups.display().to_string();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[("BACKUP__DIR", &backups_s)]);
    let mut ops = server.operator("ops", "admin");
    let (status, reply) = ops.call(
        "PUT",
        "/api/security/ip-rules",
        Some(json!({"allow": [], "deny": ["203.0.113.7"]}).to_string()),
    );
    assert_eq!(status, 200, "{reply}");
    server.user("alice").await;
    // The activity history is written at shutdown (and now and then): a restart puts today's
    // registration on disk before the backup.
    server.stop();
    let mut server = TestServer::start_in(&data, &[("BACKUP__DIR", &backups_s)]);
    ops = AdminClient::new(&server);
    let (status, reply) = ops.login("ops", common::admin::OPERATOR_PASSWORD);
    assert_eq!(status, 200, "{reply}");
    let ((status, taken), _) = take(ops).await;
    assert_eq!(status, 201, "{taken}");
    assert!(
        taken["state"]["files"].as_u64().unwrap() >= 3,
        "overrides, credentials, activity: {taken}"
    );
    server.stop();
    let activity: Vec<_> = std::fs::read_dir(data.join("activity"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!activity.is_empty());

    let restored = tmp.path().join("restored");
    let out = ringchat(&[
        "restore",
        "--from",
        &format!("{backups_s}/{}", taken["name"].as_str().unwrap()),
        "--data-dir",
        &restored.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("state: "), "{}", text(&out));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let creds = std::fs::metadata(restored.join("admin/credentials.json")).unwrap();
        assert_eq!(creds.permissions().mode() & 0o777, 0o600);
    }
    for day in &activity {
        assert!(restored.join("activity").join(day).is_file(), "{day:?}");
    }
    let server = TestServer::start_in(&restored, &[]);
    let mut ops = AdminClient::new(&server);
    let (status, reply) = ops.login("ops", common::admin::OPERATOR_PASSWORD);
    assert_eq!(status, 200, "the operator is restored: {reply}");
    let (status, rules) = ops.get("/api/security/ip-rules");
    assert_eq!(status, 200, "{rules}");
    assert_eq!(rules["deny"], json!(["203.0.113.7"]), "{rules}");
}

#[tokio::test]
async fn a_backup_is_private_to_its_owner_whatever_the_umask() {
    if common::store::embedded_only(
        "a_backup_is_private_to_its_owner_whatever_the_umask",
        "the embedded store's backup of its data dir",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start_in(&data, &[]);
    server.operator("ops", "admin");
    let (_c, alice) = server.user("alice").await;
    upload(
        &server,
        &alice.token,
        "a.txt",
        "text/plain",
        b"private bytes",
    );
    server.stop();

    let backup = tmp.path().join("backups/b1");
    let backup_s = backup.display().to_string();
    let out = ringchat_umask_022(&data, &["backup", "--to", &backup_s]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        not_private(&tmp.path().join("backups")),
        Vec::<String>::new()
    );
    for part in [
        "manifest.json",
        "messages.dump",
        "state/admin/credentials.json",
    ] {
        assert!(backup.join(part).is_file(), "{part}");
    }
    assert!(backup.join("files/blobs").is_dir());
}

#[test]
fn migrate_copies_a_large_store_resumes_after_a_kill_and_round_trips() {
    if common::store::embedded_only(
        "migrate_copies_a_large_store_resumes_after_a_kill_and_round_trips",
        "migrate between two embedded stores; it starts no server",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let messages = common::migrate::migrate_messages();
    let started = Instant::now();
    fill_store(&a, messages);
    eprintln!("filled {messages} messages in {:?}", started.elapsed());
    let spec = |d: &Path| format!("embedded:{}", d.display());
    let (from, to) = (spec(&a), spec(&b));
    let args = [
        "migrate",
        "--from",
        &from,
        "--to",
        &to,
        "--batch-records",
        "2048",
    ];

    // Kill -9 the first run once it has copied some messages.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringchat"))
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Its progress lines come through a channel: the deadline holds however long migrate
    // stays silent.
    let lines = common::pipe::lines(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                match e {
                    RecvTimeoutError::Timeout => panic!("no progress in messages: {seen:?}"),
                    RecvTimeoutError::Disconnected => {
                        panic!("migrate ended before it could be killed: {seen:?}")
                    }
                }
            }
        };
        seen.push(line.clone());
        if line.contains(" messages ") && !line.contains(" 0 records copied") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(b.join("ringchat-copy-checkpoint.json").is_file());
    // A server does not start on part of a store (it would hand out the ids the rest holds).
    let refused = TestServer::start_expecting_failure(&b, &[]);
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("unfinished restore or copy"),
        "{}",
        refused.stderr
    );

    let started = Instant::now();
    let out = ringchat(&args);
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    assert!(
        report.contains("(resumed)") && report.contains("verification passed"),
        "{report}"
    );
    assert!(
        report.contains(&format!("{:<18} {:>12} records", "messages", messages)),
        "{report}"
    );
    eprintln!(
        "resumed migration of {messages} messages: {:?}",
        started.elapsed()
    );
    assert!(!b.join("ringchat-copy-checkpoint.json").exists());

    // Into a non-empty store: refused. And the copy copies back, verified.
    let out = ringchat(&args);
    assert!(!out.status.success());
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    let out = ringchat(&["migrate", "--from", &to, "--to", &spec(&c)]);
    assert!(out.status.success(), "{}", text(&out));
    // A ScyllaDB destination without its data centre: refused before connecting, saying why.
    let out = ringchat(&["migrate", "--from", &spec(&c), "--to", "scylla:h:9042/ks"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("storage.scylla.local_datacenter"),
        "{}",
        text(&out)
    );
}

/// A `backup.dir` the server cannot write stops the start (before, every scheduled backup
/// failed with a log line only), and a backup that fails later counts in
/// `ringchat_backups_failed_total`, which an alert watches; a written one sets
/// `ringchat_backup_last_success_timestamp_seconds`.
#[tokio::test]
async fn a_backup_dir_that_cannot_be_written_stops_the_start_and_failures_are_counted() {
    if common::store::embedded_only(
        "a_backup_dir_that_cannot_be_written_stops_the_start_and_failures_are_counted",
        "the embedded store's online backup",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Under a file: not writable whoever runs the test (root included).
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_file = file.join("backups").display().to_string();
    let refused = TestServer::start_expecting_failure(
        &tmp.path().join("data-refused"),
        &[("BACKUP__DIR", &under_file), ("BACKUP__INTERVAL_S", "60")],
    );
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("backup.dir") && refused.stderr.contains("ReadWritePaths="),
        "{}",
        refused.stderr
    );

    let backups = tmp.path().join("backups");
    let backups_s = backups.display().to_string();
    let server = TestServer::start_in(
        &tmp.path().join("data"),
        &[("BACKUP__DIR", &backups_s), ("BACKUP__INTERVAL_S", "60")],
    );
    assert_eq!(server.metric("ringchat_backups_failed_total"), 0.0);
    assert_eq!(
        server.metric("ringchat_backup_last_success_timestamp_seconds"),
        0.0
    );
    // What the stale-backup alert compares the newest backup's age with.
    assert_eq!(server.metric("ringchat_backup_interval_seconds"), 60.0);
    let admin = server.api_key("backups", "admin");
    let ((status, taken), admin) = take(admin).await;
    assert_eq!(status, 201, "{taken}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = server.metric("ringchat_backup_last_success_timestamp_seconds");
    assert!((now - 60.0..=now + 1.0).contains(&last), "{last} vs {now}");
    // The dir replaced by a file (as a disk gone read-only or full would fail it).
    std::fs::remove_dir_all(&backups).unwrap();
    std::fs::write(&backups, "").unwrap();
    let ((status, failed), _admin) = take(admin).await;
    assert!(status >= 400, "{status} {failed}");
    assert_eq!(server.metric("ringchat_backups_failed_total"), 1.0);
    assert_eq!(
        server.metric("ringchat_backup_last_success_timestamp_seconds"),
        last
    );
}

/// The `*.partial` entries of `dir`: what failed or interrupted backups left.
fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".partial"))
        .collect()
}

/// A backup that fails part-way removes its `NAME.partial` (one that failed for want of space
/// kept it, and the disk full, for good: the next attempt has a new name), and is counted;
/// what a server killed mid-backup left is removed at start, and what is left at all before
/// the next backup (even one that fails).
#[tokio::test]
async fn a_failed_backup_leaves_no_partial_directory_and_old_ones_are_removed() {
    if common::store::embedded_only(
        "a_failed_backup_leaves_no_partial_directory_and_old_ones_are_removed",
        "the embedded store's online backup",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    let backups_s = backups.display().to_string();
    // What a server killed while writing a backup left.
    let killed = backups.join("ringchat-20260101T000000Z.partial");
    std::fs::create_dir_all(killed.join("state")).unwrap();
    std::fs::write(killed.join("messages.dump"), vec![0u8; 64 << 10]).unwrap();
    let data = tmp.path().join("data");
    let server = TestServer::start_in(&data, &[("BACKUP__DIR", &backups_s)]);
    assert_eq!(partials(&backups), Vec::<String>::new(), "removed at start");
    // An operator's key: the state a backup copies first (`state/admin/credentials.json`).
    let admin = server.api_key("backups", "admin");

    // The activity directory replaced by a file: the backup fails with the state partly copied
    // into its `NAME.partial`, as a disk that fills up mid-backup fails it.
    let activity = data.join("activity");
    std::fs::remove_dir_all(&activity).unwrap();
    std::fs::write(&activity, "").unwrap();
    // Left by an earlier failure whose partial directory could not be removed then.
    let stray = backups.join("ringchat-20260101T000001Z.partial");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("users.dump"), b"x").unwrap();
    let ((status, failed), admin) = take(admin).await;
    assert!(status >= 400, "{status} {failed}");
    // It failed where it was made to, with the state partly copied (the answer says "see the
    // server log").
    let why = format!("{}: Not a directory", activity.display());
    common::wait_until_async("the backup's failure in the log", || {
        server.log_lines_with(&why) > 0
    })
    .await;
    assert_eq!(partials(&backups), Vec::<String>::new());
    assert_eq!(server.metric("ringchat_backups_failed_total"), 1.0);

    // With the directory back, the next one is written.
    std::fs::remove_file(&activity).unwrap();
    std::fs::create_dir(&activity).unwrap();
    let ((status, taken), _admin) = take(admin).await;
    assert_eq!(status, 201, "{taken}");
    assert!(
        backups
            .join(taken["name"].as_str().unwrap())
            .join("manifest.json")
            .is_file()
    );
    assert_eq!(partials(&backups), Vec::<String>::new());
}

/// `ringchat backup` refuses a data dir a restore or migrate into which did not finish: it
/// holds part of a store (the counters are copied last), which was backed up as a whole one
/// that verified, and restored into a store without its counters.
#[test]
fn backup_refuses_a_data_dir_whose_restore_or_migrate_did_not_finish() {
    if common::store::embedded_only(
        "backup_refuses_a_data_dir_whose_restore_or_migrate_did_not_finish",
        "`ringchat backup` of an embedded store; it starts no server",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fill_store(&data, 1_000);
    // What an interrupted copy leaves (`backup/copy.rs`): its checkpoint, parts still to do.
    let checkpoint = data.join("ringchat-copy-checkpoint.json");
    let state = json!({
        "format": 1,
        "source": "backup:/var/backups/ringchat-20260101T000000Z",
        "parts": {"users": {"done": true, "resume": null, "records": 200}},
    });
    std::fs::write(&checkpoint, state.to_string()).unwrap();
    let (data_s, to) = (data.display().to_string(), tmp.path().join("b1"));
    let backup = || {
        Command::new(env!("CARGO_BIN_EXE_ringchat"))
            .args(["backup", "--to", &to.display().to_string()])
            .env("RINGCHAT_STORAGE__DATA_DIR", &data_s)
            .output()
            .unwrap()
    };
    let out = backup();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("unfinished restore or copy")
            && text(&out).contains(&checkpoint.display().to_string()),
        "{}",
        text(&out)
    );
    assert!(!to.exists() && !tmp.path().join("b1.partial").exists());
    // The copy finished (its checkpoint removed): backed up.
    std::fs::remove_file(&checkpoint).unwrap();
    let out = backup();
    assert!(out.status.success(), "{}", text(&out));
    assert!(to.join("manifest.json").is_file());
}

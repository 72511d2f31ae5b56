//! Power loss, for real: the data dir on a loop-mounted ext4 image, a pipelined send load from
//! TCP and WebSocket clients over several conversations, and mid-load the file system is shut
//! down with `EXT4_IOC_SHUTDOWN` / `EXT4_GOING_FLAGS_NOLOGFLUSH`: everything not yet durable is
//! dropped, as in a power cut. Then kill -9, unmount, mount again, restart: with
//! `durability = "fsync"` every acked message is there exactly once, seqs gap-free; with
//! `durability = "none"` acked messages are lost (proof that the test can fail).
//!
//! Also: a torn last journal batch (bytes zeroed inside it, its end marker intact) is dropped at
//! restart by itself, keeping every acked message; corruption before it stops the server with a
//! clear message.
//!
//! Needs root and loop devices (CI runs as root): without them the tests fail, saying so.

// One ioctl (EXT4_IOC_SHUTDOWN) on the test's own mount.
#![allow(unsafe_code)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::TestServer;
use common::transport::{AnyClient, Kind, deadline, describe};
use ringchat_bench::client::{conversation_id, text_message};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};

/// Size of the ext4 image (sparse).
const IMAGE_BYTES: u64 = 256 * 1024 * 1024;
/// `_IOR('X', 125, __u32)`.
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
/// Shut down without flushing the file system's journal: like pulling the plug.
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;
/// Senders (each to its own receiver: one conversation each), alternately TCP and WebSocket.
const SENDERS: usize = 4;
/// Sends in flight per sender.
const WINDOW: usize = 32;
/// The cut comes once this many sends of the round were acked (over all senders).
const CUT_AFTER_ACKS: usize = 3_000;
/// Bounds a sender's load in one round should the cut never come.
const SENDS_PER_ROUND_MAX: usize = 100_000;
const ROUNDS: usize = 3;
/// Deadline for any one phase (reaching the cut, the load draining, a verification).
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({cmd:?}: {}): this test needs root and loop devices (CI runs as root)\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An ext4 file system in a sparse image file, loop-mounted for one test.
struct Ext4Disk {
    image: PathBuf,
    mnt: PathBuf,
    mounted: bool,
    _tmp: tempfile::TempDir,
}

impl Ext4Disk {
    fn create() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("disk.ext4");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(IMAGE_BYTES)
            .unwrap();
        run(
            Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image),
            "mkfs.ext4",
        );
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut disk = Self {
            image,
            mnt,
            mounted: false,
            _tmp: tmp,
        };
        disk.mount();
        disk
    }

    fn mount(&mut self) {
        assert!(!self.mounted);
        run(
            Command::new("mount")
                .args(["-t", "ext4", "-o", "loop"])
                .arg(&self.image)
                .arg(&self.mnt),
            "loop-mounting the ext4 image",
        );
        self.mounted = true;
    }

    fn unmount(&mut self) {
        assert!(self.mounted);
        run(Command::new("umount").arg(&self.mnt), "unmounting");
        self.mounted = false;
    }

    /// Makes everything written so far durable (syncfs).
    fn sync(&self) {
        run(Command::new("sync").arg("-f").arg(&self.mnt), "sync -f");
    }

    /// The power cut: from now on nothing reaches the disk, and what had not is lost.
    fn cut_power(&self) {
        let dir = std::fs::File::open(&self.mnt).unwrap();
        let flags: u32 = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: EXT4_IOC_SHUTDOWN reads one u32 through the pointer, which is valid for the
        // call; the descriptor is an open directory on the ext4 mount.
        let rc = unsafe {
            libc::ioctl(
                dir.as_raw_fd(),
                EXT4_IOC_SHUTDOWN,
                std::ptr::from_ref(&flags),
            )
        };
        assert_eq!(
            rc,
            0,
            "EXT4_IOC_SHUTDOWN failed: {} (needs root, CAP_SYS_ADMIN)",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Ext4Disk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// SIGSTOP, then waits until every thread of the process is stopped (a thread inside a
/// syscall, say an fdatasync, stops when the call returns). io_uring's kernel workers
/// (`iou-*`) do not take part in job control and are left out: they only finish submissions
/// made before the stop.
fn freeze(pid: u32) {
    run(
        Command::new("kill").arg("-STOP").arg(pid.to_string()),
        "SIGSTOP",
    );
    let until = Instant::now() + PHASE_TIMEOUT;
    loop {
        let mut running = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let path = task.unwrap().path().join("stat");
            let Ok(stat) = std::fs::read_to_string(&path) else {
                continue; // the thread ended
            };
            let (open, close) = (stat.find('(').unwrap(), stat.rfind(')').unwrap());
            let comm = &stat[open + 1..close];
            let state = stat[close + 2..].chars().next().unwrap();
            if !comm.starts_with("iou-") && !matches!(state, 'T' | 't') {
                running.push(format!("{comm}:{state}"));
            }
        }
        if running.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "server threads not stopped after SIGSTOP: {running:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One sender and the conversation it sends into, and what it was told.
struct Sender {
    name: String,
    kind: Kind,
    to: u64,
    conv: u64,
    /// client_msg_id -> seq, for every ack this sender holds (all rounds).
    acked: HashMap<String, u64>,
    /// Acked in the current round.
    acked_round: HashSet<String>,
    /// Seen stored after a restart (acked or not): durable from then on.
    stored: HashMap<String, u64>,
    /// Every client_msg_id ever sent.
    sent: HashSet<String>,
}

fn content(cmid: &str) -> String {
    format!("body of {cmid}")
}

/// What one sender's load came back with.
#[derive(Default)]
struct RoundLog {
    acked: Vec<(String, u64)>,
    sent: Vec<String>,
    refused: usize,
}

/// Pipelined sends until the connection dies (or the bound); counts acks into `acks`.
async fn load(
    mut c: AnyClient,
    tag: String,
    to: u64,
    conv: u64,
    acks: Arc<AtomicUsize>,
    reached: Arc<tokio::sync::Notify>,
) -> RoundLog {
    let mut log = RoundLog::default();
    let mut in_flight: HashMap<u64, String> = HashMap::new();
    let mut sends = 0;
    'load: loop {
        while in_flight.len() < WINDOW && sends < SENDS_PER_ROUND_MAX {
            let cmid = format!("{tag}-{sends}");
            sends += 1;
            log.sent.push(cmid.clone());
            match c
                .try_send_body(text_message(to, &cmid, &content(&cmid)))
                .await
            {
                Some(rid) => {
                    in_flight.insert(rid, cmid);
                }
                None => break 'load,
            }
        }
        let Some(frame) = c.recv(deadline(PHASE_TIMEOUT)).await else {
            break;
        };
        let Some(cmid) = in_flight.remove(&frame.request_id) else {
            continue; // a push or a kick
        };
        match frame.body {
            Some(Body::SendAck(ack)) => {
                assert_eq!(ack.conversation_id, conv, "{tag}: ack for {cmid}");
                assert!(!ack.duplicate, "{tag}: {cmid} was sent once: {ack:?}");
                log.acked.push((cmid, ack.seq));
                acks.fetch_add(1, Ordering::Relaxed);
                reached.notify_one();
            }
            // After the cut the store refuses writes: not acked, may or may not be stored.
            Some(Body::Error(e)) if e.code == ErrorCode::Unavailable as i32 => log.refused += 1,
            other => panic!(
                "{tag}: Send {cmid} answered with {}",
                describe(other.as_ref())
            ),
        }
    }
    log
}

/// After a restart: one conversation against what its sender was told. Returns the acked
/// messages of this round that are missing.
async fn verify(s: &mut Sender, r: &mut AnyClient, round: usize, durable_acks: bool) -> usize {
    let who = format!("{} round {round}", s.name);
    let stored = r.sync_all(s.conv).await;
    for (k, m) in stored.iter().enumerate() {
        assert_eq!(
            m.seq,
            k as u64 + 1,
            "{who}: seq gap or disorder at index {k}"
        );
    }
    let mut by_id: HashMap<&str, &v1::Message> = HashMap::new();
    for m in &stored {
        assert!(
            by_id.insert(m.client_msg_id.as_str(), m).is_none(),
            "{who}: {} stored twice",
            m.client_msg_id
        );
        assert!(
            s.sent.contains(&m.client_msg_id),
            "{who}: stored {} was never sent",
            m.client_msg_id
        );
        assert_eq!(
            m.content,
            content(&m.client_msg_id).as_bytes(),
            "{who}: content of {}",
            m.client_msg_id
        );
    }
    // Seen stored after an earlier restart: it was on disk then, and stays.
    for (cmid, seq) in &s.stored {
        let m = by_id
            .get(cmid.as_str())
            .unwrap_or_else(|| panic!("{who}: {cmid} (seq {seq}) was stored before and is gone"));
        assert_eq!(m.seq, *seq, "{who}: {cmid} moved");
    }
    let mut missing = 0;
    for cmid in &s.acked_round {
        let seq = s.acked[cmid];
        match by_id.get(cmid.as_str()) {
            Some(m) => assert_eq!(m.seq, seq, "{who}: acked {cmid} moved"),
            None if durable_acks => panic!(
                "{who}: acked {cmid} (seq {seq}) lost over the power cut; {} stored",
                stored.len()
            ),
            None => missing += 1,
        }
    }
    for m in &stored {
        s.stored.insert(m.client_msg_id.clone(), m.seq);
    }
    if !durable_acks {
        // A later round may hand the lost seqs out again: forget what this round was told.
        for cmid in s.acked_round.drain() {
            s.acked.remove(&cmid);
        }
    }
    s.acked_round.clear();
    missing
}

/// `ROUNDS` power cuts under load; returns the acked messages lost per round.
async fn power_cuts(durability: &str) -> Vec<usize> {
    let started = Instant::now();
    let mut disk = Ext4Disk::create();
    let data_dir = disk.mnt.join("data");
    // With "none", no background journal sync either: everything acked since the last memtable
    // flush is then not durable, and every round must lose some (the proof that a cut drops
    // what was not synced). With the default sync, a cut right after one may lose nothing.
    let env = [
        ("STORAGE__DURABILITY", durability),
        ("STORAGE__JOURNAL_SYNC_MS", "0"),
    ];
    let mut server = TestServer::start_in(&data_dir, &env);

    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let kind = if i % 2 == 0 { Kind::Tcp } else { Kind::Ws };
        let (name, receiver) = (format!("pl-s{i}"), format!("pl-r{i}"));
        let (_s, s_ok) = AnyClient::user(&server, kind, &name).await;
        let (_r, r_ok) = AnyClient::user(&server, Kind::Tcp, &receiver).await;
        senders.push(Sender {
            name,
            kind,
            to: r_ok.user_id,
            conv: conversation_id(s_ok.user_id, r_ok.user_id),
            acked: HashMap::new(),
            acked_round: HashSet::new(),
            stored: HashMap::new(),
            sent: HashSet::new(),
        });
    }
    // The accounts are made durable whatever the durability (a clean stop, then syncfs): the
    // cuts are about messages.
    assert!(server.stop().success(), "clean stop");
    disk.sync();
    server.restart();

    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let acks = Arc::new(AtomicUsize::new(0));
        let reached = Arc::new(tokio::sync::Notify::new());
        let mut load_tasks = tokio::task::JoinSet::new();
        for (i, s) in senders.iter().enumerate() {
            let c = AnyClient::login(&server, s.kind, &s.name).await;
            let tag = format!("{}-r{round}", s.name);
            let (to, conv) = (s.to, s.conv);
            let (acks, reached) = (Arc::clone(&acks), Arc::clone(&reached));
            load_tasks.spawn(async move { (i, load(c, tag, to, conv, acks, reached).await) });
        }
        // Wait for the acks, then cut.
        let got_there = tokio::time::timeout(PHASE_TIMEOUT, async {
            loop {
                let notified = reached.notified();
                if acks.load(Ordering::Relaxed) >= CUT_AFTER_ACKS {
                    return;
                }
                notified.await;
            }
        })
        .await;
        assert!(
            got_there.is_ok(),
            "{durability} round {round}: only {} acks in {PHASE_TIMEOUT:?}",
            acks.load(Ordering::Relaxed)
        );
        // The machine stops at the cut: freeze the server first (SIGSTOP, until every thread
        // is stopped), then cut, then kill it. Cutting a running server is no power cut: an
        // fdatasync racing EXT4_IOC_SHUTDOWN can return success for data the shutdown throws
        // away (seen on 6.18: the aborted journal's transaction counts as committed), and
        // the server would ack it, which no server can do after a real power cut.
        freeze(server.pid());
        let acked_at_cut = acks.load(Ordering::Relaxed);
        disk.cut_power();
        server.kill9();

        let mut refused = 0;
        let drained = tokio::time::timeout(PHASE_TIMEOUT, async {
            while let Some(joined) = load_tasks.join_next().await {
                let (i, log) = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                let s = &mut senders[i];
                s.sent.extend(log.sent);
                for (cmid, seq) in log.acked {
                    s.acked_round.insert(cmid.clone());
                    s.acked.insert(cmid, seq);
                }
                refused += log.refused;
            }
        })
        .await;
        assert!(
            drained.is_ok(),
            "{durability} round {round}: the load did not end after the kill"
        );
        let acked_round: usize = senders.iter().map(|s| s.acked_round.len()).sum();

        disk.unmount();
        disk.mount();
        server.restart();

        let mut missing = 0;
        for s in &mut senders {
            let receiver = s.name.replace("pl-s", "pl-r");
            let checked = tokio::time::timeout(PHASE_TIMEOUT, async {
                let mut r = AnyClient::login(&server, Kind::Tcp, &receiver).await;
                verify(s, &mut r, round, durability == "fsync").await
            })
            .await;
            missing += checked.unwrap_or_else(|_| {
                panic!("{durability} round {round}: verification took over {PHASE_TIMEOUT:?}")
            });
        }
        eprintln!(
            "{durability} round {round}: cut after {acked_at_cut} acks; {acked_round} acked in all, \
             {refused} refused, {missing} acked messages lost; torn journal tails dropped at \
             restarts so far: {}; {:?} elapsed",
            server.log_lines_with(TORN_TAIL_DROPPED),
            started.elapsed()
        );
        lost.push(missing);
    }
    lost
}

#[tokio::test]
async fn power_cut_under_load_keeps_every_fsynced_ack() {
    if common::store::embedded_only(
        "power_cut_under_load_keeps_every_fsynced_ack",
        "a power cut of the file system under the embedded data dir",
    ) {
        return;
    }
    let lost = power_cuts("fsync").await;
    assert!(lost.iter().all(|&n| n == 0), "{lost:?}");
}

#[tokio::test]
async fn power_cut_under_load_loses_acks_without_fsync() {
    if common::store::embedded_only(
        "power_cut_under_load_loses_acks_without_fsync",
        "a power cut of the file system under the embedded data dir",
    ) {
        return;
    }
    let lost = power_cuts("none").await;
    assert!(
        lost.iter().all(|&n| n > 0),
        "durability = none lost no acked message in some round ({lost:?} lost per round): \
         the power cut does not drop what is not durable, so the fsync test proves nothing"
    );
}

// --- A torn last journal batch, with the real binary ----------------------------------------

/// What the server logs when it drops a torn last journal batch.
const TORN_TAIL_DROPPED: &str = "dropped the torn last batch";
/// fjall's End entry: tag 3, an xxh3 checksum, this trailer.
const JOURNAL_TRAILER: &[u8] = b"FJL\x03";
const JOURNAL_END_TAG: u8 = 3;

/// The fjall journals in a data dir, newest first.
fn journals(data_dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<(u64, PathBuf)> = std::fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let id: u64 = p
                .file_name()?
                .to_str()?
                .strip_suffix(".jnl")?
                .parse()
                .ok()?;
            Some((id, p))
        })
        .collect();
    all.sort();
    all.into_iter().rev().map(|(_, p)| p).collect()
}

fn newest_journal(data_dir: &Path) -> PathBuf {
    journals(data_dir)
        .into_iter()
        .next()
        .expect("a journal in the data dir")
}

/// Offsets just past every End entry of a journal, in order.
fn batch_ends(journal: &[u8]) -> Vec<usize> {
    journal
        .windows(JOURNAL_TRAILER.len())
        .enumerate()
        .filter(|&(i, w)| w == JOURNAL_TRAILER && i >= 9 && journal[i - 9] == JOURNAL_END_TAG)
        .map(|(i, _)| i + JOURNAL_TRAILER.len())
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn probe(i: usize) -> String {
    format!("torn-probe-{i:04}-").repeat(8)
}

#[tokio::test]
async fn a_torn_last_journal_batch_is_dropped_at_restart_and_corruption_before_it_stops() {
    if common::store::embedded_only(
        "a_torn_last_journal_batch_is_dropped_at_restart_and_corruption_before_it_stops",
        "the embedded store's journal files",
    ) {
        return;
    }
    const MESSAGES: usize = 40;
    let mut server = TestServer::start(&[]);
    let (mut alice, a) = server.user("alice").await;
    let (_bob, b) = server.user("bob").await;
    let conv = conversation_id(a.user_id, b.user_id);
    for i in 0..MESSAGES {
        let ack = alice
            .send_text(b.user_id, &format!("m{i}"), &probe(i))
            .await
            .unwrap()
            .expect("acked");
        assert_eq!(ack.seq, i as u64 + 1);
    }
    drop(alice);
    server.kill9();

    // The next batch fjall would have written, torn by the cut: a copy of the batch that holds
    // the last message (that message's content zeroed, its end marker intact), after the last
    // batch of the journal.
    let journal = newest_journal(&server.data_dir);
    let data = std::fs::read(&journal).unwrap();
    let ends = batch_ends(&data);
    let last = probe(MESSAGES - 1);
    let at = find(&data, last.as_bytes()).expect("the last message in the newest journal");
    let k = ends
        .iter()
        .position(|&e| e > at)
        .expect("the batch of the last message");
    let start = if k == 0 { 0 } else { ends[k - 1] };
    let mut torn = data[start..ends[k]].to_vec();
    torn[at - start..at - start + last.len()].fill(0);
    let tail = *ends.last().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    file.seek(SeekFrom::Start(tail as u64)).unwrap();
    file.write_all(&torn).unwrap();
    file.sync_all().unwrap();
    drop(file);

    server.restart();
    assert_eq!(
        server.log_lines_with(TORN_TAIL_DROPPED),
        1,
        "the restart says what it dropped:\n{}",
        server.log_tail()
    );
    let (mut bob, _) = server.device("bob", "bob-dev2").await;
    let messages = bob.sync_all(conv, 0).await.unwrap();
    let ids: Vec<String> = messages.iter().map(|m| m.client_msg_id.clone()).collect();
    assert_eq!(
        ids,
        (0..MESSAGES).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m.seq, i as u64 + 1);
        assert_eq!(m.content, probe(i).as_bytes());
    }
    let (mut alice, _) = server.device("alice", "alice-dev2").await;
    let ack = alice
        .send_text(b.user_id, "after", "after the repair")
        .await
        .unwrap()
        .expect("acked");
    assert_eq!(ack.seq, MESSAGES as u64 + 1);
    drop((alice, bob));
    server.kill9();

    // Corruption before the tail: an early message's content zeroed where it was stored, with
    // acked batches after it. The server does not start, and says why.
    let early = probe(3);
    let (journal, mut data, at) = journals(&server.data_dir)
        .into_iter()
        .find_map(|j| {
            let data = std::fs::read(&j).unwrap();
            let at = find(&data, early.as_bytes())?;
            Some((j, data, at))
        })
        .expect("an early message in a journal");
    data[at..at + early.len()].fill(0);
    std::fs::write(&journal, &data).unwrap();
    let failed = TestServer::start_expecting_failure(&server.data_dir, &[]);
    assert!(!failed.status.success());
    assert!(
        failed.stderr.contains("will not open")
            && failed.stderr.contains(&journal.display().to_string()),
        "a clear message naming the journal:\n{}",
        failed.stderr
    );
}

//! One client of the cluster scenario: sends to its pair's peer (and to the group, if it is a
//! member) with up to `window` sends unacknowledged, checks every push, and when its connection
//! drops reconnects through the status service, Syncs each conversation from the newest seq it
//! has seen, resends what was not acked (same `client_msg_id`, so the server stores it once) and
//! keeps going.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::{Buf, BufMut, BytesMut};
use ringchat_proto::v1::{self, ErrorCode};
use ringchat_proto::{Body, Frame};

use super::status::{self, Identity, Session};
use super::{Acked, ClusterConfig, Shared};
use crate::check::filler;
use crate::stats::Measurements;
use crate::transport::{FrameReader, FrameWriter};

/// How often a client looks at its timers (resends due, reply timeout, drain) while idle.
const TICK: Duration = Duration::from_millis(20);
/// Pause before resending after UNAVAILABLE or RATE_LIMITED without a `retry_after_ms`.
const RETRY_AFTER_DEFAULT: Duration = Duration::from_millis(50);
/// Attempts at the final Sync of a conversation (each may reconnect first).
const FINAL_SYNC_ATTEMPTS: u32 = 3;
/// How far (in sends) a client may run ahead of its oldest unacked send: under the server's
/// default `storage.dedup_window_messages` (64 per conversation), so a resend is recognised.
const SENDS_AHEAD_MAX: u64 = 32;
/// Out-of-order pushes spelled out per client, at most.
const DISORDER_NOTES_MAX: usize = 3;
/// During the drain, how often a client still missing acked messages Syncs for them.
const GAP_SYNC_EVERY: Duration = Duration::from_millis(300);

/// A logged-in connection, split for reading and writing.
pub(super) struct Live {
    pub node_id: String,
    reader: FrameReader,
    writer: FrameWriter,
    scratch: BytesMut,
    next_rid: u64,
}

impl Live {
    pub fn new(s: Session) -> Self {
        let (reader, writer) = s.link.split();
        Self {
            node_id: s.node_id,
            reader,
            writer,
            scratch: BytesMut::new(),
            next_rid: 1,
        }
    }

    fn rid(&mut self) -> u64 {
        let rid = self.next_rid;
        self.next_rid += 1;
        rid
    }

    async fn write(&mut self, frames: &[Frame]) -> anyhow::Result<()> {
        self.writer.write(frames, &mut self.scratch).await
    }

    /// One request and its reply; anything else arriving meanwhile is handed to `other`.
    pub async fn request(
        &mut self,
        body: Body,
        timeout: Duration,
        mut other: impl FnMut(Frame),
    ) -> anyhow::Result<Body> {
        let request_id = self.rid();
        self.write(&[Frame {
            request_id,
            body: Some(body),
        }])
        .await?;
        let deadline = Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline.into(), self.reader.next())
                .await
                .map_err(|_| anyhow!("no reply within {timeout:?}"))??
                .ok_or_else(|| anyhow!("connection closed while waiting for a reply"))?;
            if frame.request_id == request_id {
                return frame.body.ok_or_else(|| anyhow!("reply without a body"));
            }
            other(frame);
        }
    }
}

/// One send not yet acknowledged.
struct Pending {
    rid: u64,
    conv: u64,
    index: u64,
    body: Body,
    client_msg_id: String,
    /// When it was last written (for the reply timeout).
    written_at: Instant,
    /// Set after UNAVAILABLE / RATE_LIMITED: resend then.
    retry_at: Option<Instant>,
}

/// What a client has seen of one conversation.
#[derive(Default)]
struct Seen {
    seqs: HashSet<u64>,
    /// The newest seq seen, own acked sends included: where a catch-up Sync starts.
    newest: u64,
    /// The newest seq pushed live on the current connection (pushes come in seq order).
    newest_pushed: u64,
}

/// When a client lost its connection and when it was logged in again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outage {
    pub dropped_at: Instant,
    pub served_at: Option<Instant>,
}

/// What one client measured and fetched.
#[derive(Default)]
pub(super) struct Outcome {
    pub m: Measurements,
    pub caught_up: u64,
    pub redelivered: u64,
    pub retried: u64,
    pub abandoned: u64,
    pub missing: u64,
    /// The others' acked messages were never known (they had not all finished sending by the
    /// deadline): this client's deliveries went unchecked.
    pub unchecked: bool,
    pub outages: Vec<Outage>,
    pub gap_syncs: u64,
    /// Pushes that came out of seq order, spelled out (the first few).
    pub disorder: Vec<String>,
    pub last_node: Option<String>,
    /// The final Sync of the conversations this client checks: (conversation, messages), or
    /// the conversation and why it could not be fetched.
    pub synced: Vec<(u64, Result<Vec<v1::Message>, String>)>,
}

pub(super) struct Member {
    pub index: usize,
    pub username: String,
    pub user_id: u64,
    pub peer_id: u64,
    pub direct_conv: u64,
    pub group: Option<u64>,
    /// Seqs 1..=this of the group are its creation events: taken as seen (the creator is
    /// not pushed its own).
    pub group_events: u64,
    /// Send only to the group.
    pub group_only: bool,
    /// Conversations whose final Sync this client fetches for the check.
    pub checks: Vec<u64>,
    pub cfg: Arc<ClusterConfig>,
    pub shared: Arc<Shared>,
    pub run_id: u64,
}

struct State {
    seen: HashMap<u64, Seen>,
    pending: Vec<Pending>,
    syncs: HashMap<u64, u64>,
    outbox: Vec<Frame>,
    next_index: u64,
    acked: Vec<Acked>,
    published: bool,
    /// Others' acked messages (conversation, seq) not seen yet; known once all have sent.
    expected: Option<Vec<(u64, u64)>>,
    out: Outcome,
}

impl State {
    /// Nothing seen, sent or acked yet.
    fn new() -> Self {
        State {
            seen: HashMap::new(),
            pending: Vec::new(),
            syncs: HashMap::new(),
            outbox: Vec::new(),
            next_index: 0,
            acked: Vec::new(),
            published: false,
            expected: None,
            out: Outcome::default(),
        }
    }
}

impl Member {
    pub async fn run(self, first: Live) -> Outcome {
        let under_load = super::UnderLoad(Arc::clone(&self.shared));
        let mut st = State::new();
        st.seen.insert(self.direct_conv, Seen::default());
        if let Some(g) = self.group {
            let events = Seen {
                seqs: (1..=self.group_events).collect(),
                newest: self.group_events,
                newest_pushed: 0,
            };
            st.seen.insert(g, events);
        }
        let mut live = Some(first);
        let mut caught_up = true;
        let served = loop {
            let mut l = match live.take() {
                Some(l) => l,
                None => match self.reconnect(&mut st).await {
                    Ok(l) => l,
                    Err(e) => {
                        st.out.m.error("unreachable");
                        note_unreachable(&self.username, &e);
                        break None;
                    }
                },
            };
            match self.serve(&mut st, &mut l, caught_up).await {
                Ok(()) => break Some(l),
                Err(e) => {
                    // A dropped connection is what this scenario is about: counted by kind
                    // (and as an outage), not as an error.
                    *st.out.m.error_kinds.entry(kind_of(&e)).or_default() += 1;
                    st.out.outages.push(Outage {
                        dropped_at: Instant::now(),
                        served_at: None,
                    });
                    caught_up = false;
                }
            }
        };
        self.publish(&mut st);
        // Wait (bounded) for the others' acks, so that `missing` covers every acked message.
        let mut others = self.shared.all_sent.subscribe();
        let all = tokio::time::timeout(self.cfg.retry.deadline, others.wait_for(|sent| *sent));
        if all.await.is_ok_and(|r| r.is_ok()) {
            self.update_expected(&mut st);
        }
        // Not knowing what to expect is no proof that nothing was lost.
        st.out.unchecked = st.expected.is_none();
        st.out.missing = st.expected.as_ref().map_or(0, |e| e.len() as u64);
        st.out.last_node = served.as_ref().map(|l| l.node_id.clone());
        // Done with the load: the nodes' CPU is sampled before anyone's final check.
        drop(under_load);
        self.shared.cpu_sampled().await;
        self.final_sync(&mut st, served).await;
        st.out
    }

    async fn reconnect(&self, st: &mut State) -> anyhow::Result<Live> {
        let who = Identity::bench(&self.username, &self.cfg.password);
        let outages = st.out.outages.len();
        let seed = self.run_id ^ ((self.index as u64) << 20) ^ outages as u64;
        let (session, _) = status::connect(
            &self.cfg.status_urls,
            self.index + outages,
            &who,
            &self.cfg.retry,
            None,
            seed,
            &self.shared.reconnect_refusals,
        )
        .await?;
        if let Some(o) = st.out.outages.last_mut() {
            o.served_at = Some(Instant::now());
        }
        Ok(Live::new(session))
    }

    /// Runs the load on one connection until the run and the drain are over (`Ok`), or the
    /// connection fails (`Err`: the caller reconnects).
    async fn serve(&self, st: &mut State, live: &mut Live, caught_up: bool) -> anyhow::Result<()> {
        let cfg = &self.cfg;
        let end = self.shared.end;
        let drain_end = end + cfg.drain_timeout;
        let mut all_sent = self.shared.all_sent.subscribe();
        let mut next_gap_sync = Instant::now() + GAP_SYNC_EVERY;
        for s in st.seen.values_mut() {
            s.newest_pushed = 0;
        }
        st.syncs.clear();
        if !caught_up {
            // What was committed while this client was away.
            let convs: Vec<(u64, u64)> = st.seen.iter().map(|(c, s)| (*c, s.newest)).collect();
            for (conv, after) in convs {
                let rid = live.rid();
                st.syncs.insert(rid, conv);
                st.outbox.push(sync_frame(rid, conv, after));
            }
            // Unacked sends again, same client_msg_id: stored once whether or not they were.
            let now = Instant::now();
            for p in &mut st.pending {
                p.rid = live.rid();
                p.written_at = now;
                p.retry_at = None;
                st.outbox.push(Frame {
                    request_id: p.rid,
                    body: Some(p.body.clone()),
                });
            }
        }
        loop {
            let now = Instant::now();
            // New sends wait while one is to be resent (UNAVAILABLE: a client backs off),
            // and never run more than SENDS_AHEAD_MAX past the oldest unacked one: its resend
            // must stay inside the server's dedup window to be recognised.
            let held = st.pending.iter().any(|p| p.retry_at.is_some());
            if now < end && !held {
                while st.pending.len() < cfg.window && !too_far_ahead(st) {
                    let p = self.next_send(st, live.rid(), now);
                    st.outbox.push(Frame {
                        request_id: p.rid,
                        body: Some(p.body.clone()),
                    });
                    st.pending.push(p);
                    st.out.m.sent += 1;
                }
            } else if now >= drain_end && !st.pending.is_empty() {
                st.out.abandoned += st.pending.len() as u64;
                st.pending.clear();
            }
            for p in &mut st.pending {
                if p.retry_at.is_some_and(|t| t <= now) {
                    p.retry_at = None;
                    p.rid = live.rid();
                    p.written_at = now;
                    st.outbox.push(Frame {
                        request_id: p.rid,
                        body: Some(p.body.clone()),
                    });
                }
            }
            if now >= end && st.pending.is_empty() {
                self.publish(st);
            }
            if st.published && *all_sent.borrow_and_update() {
                self.update_expected(st);
                let done = st.expected.as_ref().is_some_and(|e| e.is_empty());
                if done && st.syncs.is_empty() {
                    return Ok(());
                }
                if st.syncs.is_empty() && now >= next_gap_sync {
                    // Still missing acked messages: their pushes went with a lost node (the
                    // owner died between commit and push). Fetch them, as a client that
                    // learns it is behind does.
                    next_gap_sync = now + GAP_SYNC_EVERY;
                    self.sync_missing(st, live);
                }
            }
            if now >= drain_end {
                return Ok(());
            }
            if !st.outbox.is_empty() {
                live.write(&std::mem::take(&mut st.outbox)).await?;
            }
            let oldest = st
                .pending
                .iter()
                .filter(|p| p.retry_at.is_none())
                .map(|p| p.written_at)
                .min();
            if oldest.is_some_and(|t| now.duration_since(t) > cfg.retry.step_timeout) {
                bail!("no reply within {:?}", cfg.retry.step_timeout);
            }
            tokio::select! {
                frame = live.reader.next() => {
                    let frame = frame?.ok_or_else(|| anyhow!("connection closed by the server"))?;
                    self.on_frame(st, live, frame)?;
                    while let Some(frame) = live.reader.next_buffered()? {
                        self.on_frame(st, live, frame)?;
                    }
                }
                _ = tokio::time::sleep(TICK) => {}
                _ = all_sent.changed(), if st.published => {}
            }
        }
    }

    fn next_send(&self, st: &mut State, rid: u64, now: Instant) -> Pending {
        let index = st.next_index;
        st.next_index += 1;
        let client_msg_id = format!("{:x}-{}-{index}", self.run_id, self.index);
        let mut content = Vec::with_capacity(self.cfg.size);
        content.put_u64_le(index);
        content.put_u64_le((now - self.shared.start).as_nanos() as u64);
        content.resize(self.cfg.size, filler(index));
        let mut send = v1::Send {
            client_msg_id: client_msg_id.clone(),
            content_type: v1::ContentType::Custom as i32,
            content: content.into(),
            ..Default::default()
        };
        let conv = match self.group {
            Some(g) if self.group_only || !index.is_multiple_of(2) => {
                send.conversation_id = g;
                g
            }
            _ => {
                send.to_user_id = self.peer_id;
                self.direct_conv
            }
        };
        Pending {
            rid,
            conv,
            index,
            body: Body::Send(send),
            client_msg_id,
            written_at: now,
            retry_at: None,
        }
    }

    fn on_frame(&self, st: &mut State, live: &mut Live, frame: Frame) -> anyhow::Result<()> {
        let rid = frame.request_id;
        match frame.body {
            Some(Body::SendAck(ack)) => {
                if let Some(i) = st.pending.iter().position(|p| p.rid == rid) {
                    let p = st.pending.swap_remove(i);
                    if let Some(s) = st.seen.get_mut(&ack.conversation_id) {
                        s.newest = s.newest.max(ack.seq);
                        s.seqs.insert(ack.seq);
                    }
                    st.acked.push(Acked {
                        conversation_id: ack.conversation_id,
                        client_msg_id: p.client_msg_id,
                        seq: ack.seq,
                        sender: self.index,
                    });
                    st.out.m.acked += 1;
                    self.shared.progress.done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Body::Error(e)) => {
                let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified);
                if let Some(i) = st.pending.iter().position(|p| p.rid == rid) {
                    if matches!(code, ErrorCode::Unavailable | ErrorCode::RateLimited) {
                        let wait = match e.retry_after_ms {
                            0 => RETRY_AFTER_DEFAULT,
                            ms => Duration::from_millis(ms),
                        };
                        st.pending[i].retry_at = Some(Instant::now() + wait);
                        st.out.retried += 1;
                    } else {
                        st.pending.swap_remove(i);
                        st.out.m.error(code.as_str_name());
                        self.shared.progress.errors.fetch_add(1, Ordering::Relaxed);
                    }
                } else if let Some(conv) = st.syncs.remove(&rid) {
                    // A catch-up Sync refused: this connection cannot serve; start over.
                    bail!("Sync of {conv} refused: {}", code.as_str_name());
                }
            }
            Some(Body::SyncBatch(batch)) => {
                if let Some(conv) = st.syncs.remove(&rid) {
                    for m in &batch.messages {
                        self.deliver(st, None, m);
                    }
                    if batch.has_more
                        && let Some(last) = batch.messages.last()
                    {
                        let rid = live.rid();
                        st.syncs.insert(rid, conv);
                        st.outbox.push(sync_frame(rid, conv, last.seq));
                    }
                }
            }
            Some(Body::Push(push)) => {
                if let Some(m) = push.message {
                    self.deliver(st, Some(live), &m);
                }
            }
            Some(Body::Kicked(k)) => {
                let reason = v1::KickReason::try_from(k.reason).unwrap_or_default();
                bail!("kicked: {}", reason.as_str_name());
            }
            _ => {}
        }
        Ok(())
    }

    fn deliver(&self, st: &mut State, live_conn: Option<&mut Live>, msg: &v1::Message) {
        let live = live_conn.is_some();
        let Some(seen) = st.seen.get_mut(&msg.conversation_id) else {
            return;
        };
        if msg.from_user_id == self.user_id {
            // Our own send, synced back: known from its ack.
            seen.seqs.insert(msg.seq);
            seen.newest = seen.newest.max(msg.seq);
            return;
        }
        let before = seen.newest;
        if let Some(l) = live_conn
            && msg.seq > before + 1
            && ((before + 1)..msg.seq).any(|s| !seen.seqs.contains(&s))
            // An own send not acked yet may fill the gap.
            && !st.pending.iter().any(|p| p.conv == msg.conversation_id)
            && !st.syncs.values().any(|c| *c == msg.conversation_id)
        {
            // A seq skipped: its push was lost with a node. Sync from the last seen.
            let rid = l.rid();
            st.syncs.insert(rid, msg.conversation_id);
            st.outbox.push(sync_frame(rid, msg.conversation_id, before));
            st.out.gap_syncs += 1;
        }
        let seen = st
            .seen
            .get_mut(&msg.conversation_id)
            .expect("looked up above");
        if !seen.seqs.insert(msg.seq) {
            if live && msg.seq <= seen.newest_pushed {
                // Pushed live twice on one connection: the server repeated itself.
                st.out.m.faults.duplicates += 1;
                if st.out.disorder.len() < DISORDER_NOTES_MAX {
                    st.out.disorder.push(format!(
                        "{}: conversation {} pushed seq {} again (newest pushed {})",
                        self.username, msg.conversation_id, msg.seq, seen.newest_pushed
                    ));
                }
                return;
            }
            // Pushed before the drop and synced after it, say: a client keeps one by seq.
            st.out.redelivered += 1;
            return;
        }
        if live {
            if msg.seq < seen.newest_pushed {
                st.out.m.faults.out_of_order += 1;
                if st.out.disorder.len() < DISORDER_NOTES_MAX {
                    st.out.disorder.push(format!(
                        "{}: conversation {} pushed seq {} after {}",
                        self.username, msg.conversation_id, msg.seq, seen.newest_pushed
                    ));
                }
            }
            seen.newest_pushed = msg.seq;
        }
        seen.newest = seen.newest.max(msg.seq);
        if msg.content_type != v1::ContentType::Custom as i32 {
            return;
        }
        let mut content = &msg.content[..];
        if content.len() != self.cfg.size {
            st.out.m.faults.corrupt += 1;
            return;
        }
        let index = content.get_u64_le();
        let sent_at = Duration::from_nanos(content.get_u64_le());
        if content.iter().any(|&b| b != filler(index)) {
            st.out.m.faults.corrupt += 1;
        }
        if live {
            let since = self.shared.start.elapsed();
            st.out
                .m
                .record_delivery(since, since.saturating_sub(sent_at));
        } else {
            st.out.m.delivered += 1;
            st.out.caught_up += 1;
        }
    }

    /// Syncs each conversation from just before its oldest missing acked message.
    fn sync_missing(&self, st: &mut State, live: &mut Live) {
        let mut from: HashMap<u64, u64> = HashMap::new();
        for (conv, seq) in st.expected.iter().flatten() {
            let after = from.entry(*conv).or_insert(u64::MAX);
            *after = (*after).min(seq - 1);
        }
        for (conv, after) in from {
            let rid = live.rid();
            st.syncs.insert(rid, conv);
            st.outbox.push(sync_frame(rid, conv, after));
            st.out.gap_syncs += 1;
        }
    }

    /// Hands this client's acked sends to the others' check, once.
    fn publish(&self, st: &mut State) {
        if st.published {
            return;
        }
        st.published = true;
        st.out.abandoned += st.pending.len() as u64;
        st.pending.clear();
        self.shared
            .acked
            .lock()
            .expect("not poisoned")
            .extend(st.acked.iter().cloned());
        if self.shared.senders_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.shared.all_sent.send(true);
        }
    }

    fn update_expected(&self, st: &mut State) {
        let expected = st.expected.get_or_insert_with(|| {
            self.shared
                .acked
                .lock()
                .expect("not poisoned")
                .iter()
                .filter(|a| a.sender != self.index && st.seen.contains_key(&a.conversation_id))
                .map(|a| (a.conversation_id, a.seq))
                .collect()
        });
        expected.retain(|(conv, seq)| !st.seen[conv].seqs.contains(seq));
    }

    /// Fetches the conversations this client checks, from seq 0, on a live node.
    async fn final_sync(&self, st: &mut State, mut live: Option<Live>) {
        for &conv in &self.checks {
            let mut result = Err("not fetched".to_owned());
            for _ in 0..FINAL_SYNC_ATTEMPTS {
                let mut l = match live.take() {
                    Some(l) => l,
                    None => match self.reconnect(st).await {
                        Ok(l) => l,
                        Err(e) => {
                            result = Err(format!("{e:#}"));
                            continue;
                        }
                    },
                };
                match sync_all(&mut l, conv, self.cfg.retry.step_timeout).await {
                    Ok(messages) => {
                        result = Ok(messages);
                        live = Some(l);
                        break;
                    }
                    Err(e) => result = Err(format!("{e:#}")),
                }
            }
            st.out.synced.push((conv, result));
        }
    }
}

fn too_far_ahead(st: &State) -> bool {
    st.pending
        .iter()
        .map(|p| p.index)
        .min()
        .is_some_and(|oldest| st.next_index - oldest >= SENDS_AHEAD_MAX)
}

/// Every message of a conversation, page by page.
async fn sync_all(
    live: &mut Live,
    conv: u64,
    timeout: Duration,
) -> anyhow::Result<Vec<v1::Message>> {
    let mut all: Vec<v1::Message> = Vec::new();
    loop {
        let after = all.last().map_or(0, |m| m.seq);
        let body = Body::Sync(v1::Sync {
            conversation_id: conv,
            after_seq: after,
            limit: 0,
        });
        match live.request(body, timeout, |_| {}).await? {
            Body::SyncBatch(b) => {
                let more = b.has_more && !b.messages.is_empty();
                all.extend(b.messages);
                if !more {
                    return Ok(all);
                }
            }
            Body::Error(e) => bail!(
                "Sync of {conv}: {}",
                ErrorCode::try_from(e.code)
                    .unwrap_or_default()
                    .as_str_name()
            ),
            other => bail!("Sync of {conv}: {}", ringchat_proto::body_name(&other)),
        }
    }
}

fn sync_frame(request_id: u64, conversation_id: u64, after_seq: u64) -> Frame {
    Frame {
        request_id,
        body: Some(Body::Sync(v1::Sync {
            conversation_id,
            after_seq,
            limit: 0,
        })),
    }
}

/// A short name for why a connection ended, for the report's error kinds.
fn kind_of(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    if text.contains("closed") || text.contains("reset") || text.contains("Connection") {
        "connection lost".to_owned()
    } else if text.contains("no reply") {
        "reply timeout".to_owned()
    } else if text.starts_with("kicked") {
        "kicked".to_owned()
    } else {
        text.chars().take(60).collect()
    }
}

fn note_unreachable(user: &str, e: &anyhow::Error) {
    eprintln!("ringchat-bench: {user} could not reach any node: {e:#}");
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::scenario::Progress;
    use crate::signup::Refusals;
    use crate::transport::Link;

    const CONV: u64 = 7;

    fn member() -> Member {
        let start = Instant::now();
        let cfg = super::super::tests::config();
        let shared = Shared {
            start,
            end: start,
            progress: Arc::new(Progress::default()),
            acked: Mutex::new(Vec::new()),
            senders_left: AtomicUsize::new(1),
            all_sent: tokio::sync::watch::channel(false).0,
            reconnect_refusals: Refusals::default(),
            at_check: AtomicUsize::new(0),
            at_check_changed: tokio::sync::Notify::new(),
            sampled: tokio::sync::watch::channel(false).0,
        };
        Member {
            index: 0,
            username: "t_a0".into(),
            user_id: 1,
            peer_id: 2,
            direct_conv: CONV,
            group: None,
            group_events: 0,
            group_only: false,
            checks: Vec::new(),
            cfg: Arc::new(cfg),
            shared: Arc::new(shared),
            run_id: 1,
        }
    }

    fn state() -> State {
        State {
            seen: HashMap::from([(CONV, Seen::default())]),
            ..State::new()
        }
    }

    /// A connection of its own (to a listener nobody serves): `deliver` only needs one to
    /// tell a live push from a synced message.
    async fn live() -> (Live, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (reader, writer) = Link::Tcp(crate::client::Client::from_stream(stream)).split();
        let live = Live {
            node_id: "n1".into(),
            reader,
            writer,
            scratch: BytesMut::new(),
            next_rid: 1,
        };
        (live, listener)
    }

    fn message(seq: u64) -> v1::Message {
        v1::Message {
            conversation_id: CONV,
            seq,
            from_user_id: 2,
            content_type: v1::ContentType::Text as i32,
            content: "hi".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_live_push_repeated_on_one_connection_is_a_duplicate_and_a_resync_is_not() {
        let (m, mut st) = (member(), state());
        let (mut l, _listener) = live().await;
        m.deliver(&mut st, Some(&mut l), &message(1));
        m.deliver(&mut st, Some(&mut l), &message(2));
        // Synced again (a gap Sync, say): kept once, no fault.
        m.deliver(&mut st, None, &message(2));
        assert_eq!(st.out.redelivered, 1);
        assert_eq!(st.out.m.faults.duplicates, 0);
        // Pushed again on the same connection: the server repeated itself.
        m.deliver(&mut st, Some(&mut l), &message(2));
        m.deliver(&mut st, Some(&mut l), &message(1));
        assert_eq!(st.out.m.faults.duplicates, 2);
        assert_eq!(st.out.disorder.len(), 2, "{:?}", st.out.disorder);
        // On a new connection (after a reconnect and its Sync) a push of what was seen is a
        // redelivery, not a fault.
        st.seen.get_mut(&CONV).unwrap().newest_pushed = 0;
        m.deliver(&mut st, Some(&mut l), &message(2));
        assert_eq!(st.out.redelivered, 2);
        assert_eq!(st.out.m.faults.duplicates, 2);
    }
}

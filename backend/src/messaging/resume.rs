//! Resume instead of resync: a client reconnecting after a short break names the server time of
//! the last frame it processed and the seqs it holds (`Login.resume`). Right after its `LoginOk`
//! it gets what it missed — one `SyncBatch` per conversation with activity since then, behind
//! the seq the device names for it, or not named but active in the resume window before it —
//! then `Resumed`, instead of asking for the conversation list and syncing each conversation:
//! one round trip instead of 2 + N, and the reads bounded per login.
//!
//! Nothing of its own: the conversations come from the conversation list's reads
//! (`conversations.rs`: the recency index down to the window's start, the user's groups) and
//! each one's messages from Sync's (`reads.rs`): the same membership rules (a former group
//! member sees up to leaving, a stranger's conversation is never listed) and the same page
//! limit.
//!
//! Ordering: the session is registered before the shard asks for the resume (after the
//! `LoginOk`), so a message committed meanwhile is pushed, read here, or both; clients
//! de-duplicate by (conversation, seq).

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prost::Message as _;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode, ResumeIncomplete};

use super::conversations::{self, Head};
use super::reads;
use crate::Backend;
use crate::accounts::Refusal;
use crate::api::{ConnRef, Outgoing, ShardEvent};
use crate::config::LoginConfig;
use crate::groups::conversations as groups;
use crate::store::{ConvId, Ports, UserId};

/// Activity this much older than `since` still counts: a message's `server_time_ms` is taken
/// when it is sequenced, before its commit group is durable and pushed (so a message pushed
/// later may carry an earlier time), and in cluster mode on another node's clock (the
/// cluster's one bound on that).
const SINCE_MARGIN_MS: u64 = crate::cluster::NODE_CLOCKS_APART_MAX_MS;

/// The login's part: a `Resume` the server will not serve at all is refused with the login.
pub(crate) fn check(resume: &v1::Resume, login: &LoginConfig) -> Result<(), Refusal> {
    if resume.known.len() > login.resume_known_max {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!(
                "resume.known: {} entries, at most {}",
                resume.known.len(),
                login.resume_known_max
            ),
        ));
    }
    Ok(())
}

/// The bounds of one resume (from `[login]` and `[limits]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub window_ms: u64,
    pub conversations_max: u32,
    pub page_max: u32,
    /// Encoded bytes of batches, at most (`login.resume_bytes_max`).
    pub bytes_max: u64,
}

/// What a resume sends: the batches, then the closing `Resumed`.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub batches: Vec<v1::SyncBatch>,
    pub done: v1::Resumed,
}

fn incomplete(reason: ResumeIncomplete) -> Outcome {
    Outcome {
        batches: Vec::new(),
        done: v1::Resumed {
            complete: false,
            reason: reason as i32,
            conversations: Vec::new(),
        },
    }
}

/// The reads of a resume (blocking: run on a blocking thread). An `Err` is a store failure.
pub(crate) fn read(
    ports: &Ports,
    user: UserId,
    resume: &v1::Resume,
    now_ms: u64,
    bounds: Bounds,
) -> Result<Outcome, Refusal> {
    let since = resume.since_server_time_ms;
    if bounds.window_ms == 0 {
        return Ok(incomplete(ResumeIncomplete::Disabled));
    }
    if since == 0
        || since > now_ms.saturating_add(SINCE_MARGIN_MS)
        || now_ms.saturating_sub(since) > bounds.window_ms
    {
        return Ok(incomplete(ResumeIncomplete::TooOld));
    }
    let from = since.saturating_sub(SINCE_MARGIN_MS);
    // A conversation the device does not name but that was active in the window before
    // `since` is one it never heard of although it was online then: in cluster mode another
    // node's push of its first message (a stranger's, a new group's ADDED event) can be lost,
    // and the `SyncNeeded` that tells of the loss, seconds later, may not have reached the
    // device before it left. Read as known at seq 0.
    let horizon = from.saturating_sub(bounds.window_ms);
    let max = bounds.conversations_max as usize;
    // Only the user's own conversations are looked up here: naming a stranger's is no way in.
    let mut known: HashMap<u64, u64> = HashMap::with_capacity(resume.known.len());
    for k in &resume.known {
        let seq = known.entry(k.conversation_id).or_default();
        *seq = (*seq).max(k.seq);
    }
    // Direct conversations active since `horizon`, most recent first: enough of them to tell
    // whether too many are carried (each one not named is, and at most `known.len()` are).
    let recent = conversations::recent_since(ports, user, horizon, max + 1 + known.len())?;
    // A conversation quiet since `from` may still hold messages the device never got (a lost
    // push, as above): every named one's head is read, whatever its time (one batch, at most
    // `resume_known_max`). Groups: all the user's (`groups::heads`).
    let seen: HashSet<u64> = recent.iter().map(|m| m.conv_id.to_wire()).collect();
    let quiet: Vec<ConvId> = known
        .keys()
        .filter(|id| !seen.contains(id))
        .filter_map(|id| ConvId::from_wire(*id))
        .collect();
    let older = conversations::direct_heads_of(ports, user, &quiet)?;
    let (groups, every_group) = groups::heads(ports, user, None, usize::MAX)?;
    if !every_group {
        return Ok(incomplete(ResumeIncomplete::TooManyConversations));
    }
    let mut heads: Vec<Head> = recent
        .into_iter()
        .chain(older)
        .map(Head::Direct)
        .chain(groups.into_iter().map(Head::Group))
        .filter(|h| {
            let (time, id) = h.key();
            match known.get(&id) {
                Some(seq) => time >= from || h.last().seq > *seq,
                None => time >= horizon,
            }
        })
        .collect();
    if heads.len() > max {
        return Ok(incomplete(ResumeIncomplete::TooManyConversations));
    }
    heads.sort_by_key(|h| Reverse(h.key()));
    let mut active = conversations::entries(ports, user, heads)?;
    let mut batches = Vec::with_capacity(active.len());
    // Counted as each page is read: what is held is the budget and one page at most.
    let mut bytes = 0u64;
    for c in &mut active {
        let after_seq = known.get(&c.conversation_id).copied().unwrap_or(0);
        // The list's last message is the head (for a former member, the event it left by).
        let caught_up = c.last_message.as_ref().is_some_and(|m| m.seq <= after_seq);
        c.last_message = None;
        if caught_up {
            continue;
        }
        let sync = v1::Sync {
            conversation_id: c.conversation_id,
            after_seq,
            limit: 0,
        };
        match reads::sync(ports, user, &sync, bounds.page_max, bounds.bytes_max) {
            Ok(batch) if batch.messages.is_empty() => {}
            Ok(batch) => {
                bytes = bytes.saturating_add(batch.encoded_len() as u64);
                if bytes > bounds.bytes_max {
                    return Ok(incomplete(ResumeIncomplete::TooLarge));
                }
                batches.push(batch);
            }
            // Left or dissolved between the two reads: as the list would say next time.
            Err(refusal) if refusal.code == ErrorCode::NotFound => {}
            Err(refusal) => return Err(refusal),
        }
    }
    Ok(Outcome {
        batches,
        done: v1::Resumed {
            complete: true,
            reason: ResumeIncomplete::Unspecified as i32,
            conversations: active,
        },
    })
}

impl Backend {
    /// Serves a login's `Resume` (the shard asks after sending `LoginOk`): the reads wait for
    /// the read gate like Sync's, hold no lock of the login path, and every frame goes to the
    /// shard in one event. Refused work is a `Resumed{complete: false}`, never an error: the
    /// login itself succeeded.
    pub(crate) async fn resume(
        self: &Arc<Self>,
        conn: ConnRef,
        user: UserId,
        request_id: u64,
        resume: v1::Resume,
    ) {
        let login = &self.settings.login;
        let bounds = Bounds {
            window_ms: login.resume_window_ms,
            conversations_max: login.resume_conversations_max,
            page_max: self.settings.limits.sync_page_max,
            bytes_max: login.resume_bytes_max,
        };
        let Ok(ticket) = self.reads.ticket(conn) else {
            let outcome = incomplete(ResumeIncomplete::Unavailable);
            self.send_resumed(conn, request_id, outcome).await;
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = ticket.permit().await;
            let ports = this.ports.clone();
            let now = crate::time::now_ms();
            let answer =
                tokio::task::spawn_blocking(move || read(&ports, user, &resume, now, bounds)).await;
            let outcome = match answer {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(refusal)) => {
                    tracing::warn!(user, message = %refusal.message, "resume: a read failed");
                    incomplete(ResumeIncomplete::Unavailable)
                }
                Err(join) => {
                    tracing::error!(user, %join, "resume: the read task failed");
                    incomplete(ResumeIncomplete::Unavailable)
                }
            };
            this.send_resumed(conn, request_id, outcome).await;
        });
    }

    async fn send_resumed(&self, conn: ConnRef, request_id: u64, outcome: Outcome) {
        let mut frames = Vec::with_capacity(outcome.batches.len() + 1);
        for batch in outcome.batches {
            let frame = crate::api::encoded(request_id, Body::SyncBatch(batch));
            frames.push(Outgoing::One(conn.conn, frame));
        }
        let done = crate::api::encoded(request_id, Body::Resumed(outcome.done));
        frames.push(Outgoing::One(conn.conn, done));
        self.send_to_shard(conn.shard, ShardEvent::Frames(frames))
            .await;
    }
}

#[cfg(test)]
#[path = "resume_tests.rs"]
mod tests;

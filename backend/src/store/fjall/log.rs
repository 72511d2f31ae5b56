//! The conversation log in fjall: one run per conversation per commit group, recalls beside.

use bytes::Bytes;
use fjall::{Readable, Snapshot};
use serde::{Deserialize, Serialize};

use super::{FjallStore, be_u64, decode, encode_value, key_u64, pair_key};
use crate::store::{
    CommitGroup, ConvId, ConvKind, ConversationLog, Mentions, MessageRecord, StoreError, UserId,
    in_batches,
};

pub(super) const META_NEXT_MSG_ID: &[u8] = b"next_msg_id";

/// A message as its run stores it: its conversation and seq are the run's key and the
/// message's place in it, and recalls are kept beside the runs.
#[derive(Serialize)]
struct StoredRef<'a> {
    msg_id: u64,
    from: UserId,
    to: UserId,
    client_msg_id: &'a str,
    content_type: i32,
    #[serde(serialize_with = "as_bytes")]
    content: &'a [u8],
    server_time_ms: u64,
    recall_of_seq: u64,
}

/// Content as one byte string (a length, then one copy), not a sequence of `u8`s serialised one
/// by one: postcard writes both the same way, so stored runs read back either way, but the
/// sequence cost the sequencer ~10 % of its CPU with 1 KiB messages.
fn as_bytes<S: serde::Serializer>(content: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(content)
}

/// A group message as its run stores it: [`StoredRef`] and the mentions. Groups' runs never
/// existed before this encoding, so the kind of a run's conversation says which one it is and
/// direct runs keep theirs (stored data stays readable).
#[derive(Serialize)]
struct StoredGroupRef<'a> {
    message: StoredRef<'a>,
    mention_user_ids: &'a [UserId],
    mention_all: bool,
}

/// [`StoredGroupRef`] read back.
#[derive(Deserialize)]
struct StoredGroup {
    message: Stored,
    mention_user_ids: Vec<UserId>,
    mention_all: bool,
}

fn stored_ref(m: &MessageRecord) -> StoredRef<'_> {
    StoredRef {
        msg_id: m.msg_id,
        from: m.from,
        to: m.to,
        client_msg_id: &m.client_msg_id,
        content_type: m.content_type,
        content: &m.content,
        server_time_ms: m.server_time_ms,
        recall_of_seq: m.recall_of_seq,
    }
}

/// [`StoredRef`] read back.
#[derive(Deserialize)]
struct Stored {
    msg_id: u64,
    from: UserId,
    to: UserId,
    client_msg_id: String,
    content_type: i32,
    content: Bytes,
    server_time_ms: u64,
    recall_of_seq: u64,
}

/// A run's value: consecutive messages of one conversation, ascending from the key's seq.
pub(super) fn encode_run<'a, I>(run: I) -> fjall::Slice
where
    I: ExactSizeIterator<Item = &'a MessageRecord> + Clone,
{
    /// Serialises the messages as [`StoredRef`]s straight from the iterator, with no copy.
    struct Run<I>(I);
    impl<'a, I> Serialize for Run<I>
    where
        I: ExactSizeIterator<Item = &'a MessageRecord> + Clone,
    {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(self.0.clone().map(stored_ref))
        }
    }
    /// [`Run`] for a group's messages.
    struct GroupRun<I>(I);
    impl<'a, I> Serialize for GroupRun<I>
    where
        I: ExactSizeIterator<Item = &'a MessageRecord> + Clone,
    {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(self.0.clone().map(|m| {
                let (ids, all) = m
                    .mentions
                    .as_deref()
                    .map_or((&[][..], false), |x| (&x.user_ids[..], x.all));
                StoredGroupRef {
                    message: stored_ref(m),
                    mention_user_ids: ids,
                    mention_all: all,
                }
            }))
        }
    }
    let is_group = run
        .clone()
        .next()
        .is_some_and(|m| m.conv_id.kind() == ConvKind::Group);
    if is_group {
        encode_value(&GroupRun(run))
    } else {
        encode_value(&Run(run))
    }
}

pub(super) fn decode_run(key: &[u8], value: &[u8]) -> Result<Vec<MessageRecord>, StoreError> {
    let conv = ConvId::from_stored(key_u64(key, 0)?);
    let first = key_u64(key, 8)?;
    let record = |seq: u64, m: Stored, mentions: Option<Box<Mentions>>| MessageRecord {
        conv_id: conv,
        seq,
        msg_id: m.msg_id,
        from: m.from,
        to: m.to,
        client_msg_id: m.client_msg_id,
        content_type: m.content_type,
        content: m.content,
        server_time_ms: m.server_time_ms,
        recalled: false,
        recall_of_seq: m.recall_of_seq,
        recall_event_seq: 0,
        mentions,
    };
    if conv.kind() != ConvKind::Group {
        let stored: Vec<Stored> = decode(value)?;
        return Ok((first..)
            .zip(stored)
            .map(|(seq, m)| record(seq, m, None))
            .collect());
    }
    let stored: Vec<StoredGroup> = decode(value)?;
    Ok((first..)
        .zip(stored)
        .map(|(seq, g)| {
            let mentions = (!g.mention_user_ids.is_empty() || g.mention_all).then(|| {
                Box::new(Mentions {
                    user_ids: g.mention_user_ids,
                    all: g.mention_all,
                })
            });
            record(seq, g.message, mentions)
        })
        .collect())
}

/// Calls `f` with each conversation's messages of the group, as one ascending slice of
/// references, in conversation order.
fn for_each_run(messages: &[MessageRecord], mut f: impl FnMut(&[&MessageRecord])) {
    let mut sorted: Vec<&MessageRecord> = messages.iter().collect();
    // Stable: a conversation's messages keep the sequencer's (ascending) order.
    sorted.sort_by_key(|m| m.conv_id);
    for run in sorted.chunk_by(|a, b| a.conv_id == b.conv_id) {
        for pair in run.windows(2) {
            assert_eq!(
                pair[1].seq,
                pair[0].seq + 1,
                "a conversation's messages in one group must have consecutive seqs"
            );
        }
        f(run);
    }
}

impl FjallStore {
    /// Marks what `messages` (one conversation's, sorted by seq ascending or descending: a
    /// page of either read) holds of the recalls stored.
    pub(super) fn apply_recalls(
        &self,
        view: &Snapshot,
        conv: ConvId,
        messages: &mut [MessageRecord],
    ) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
            return Ok(());
        };
        let ascending = first.seq <= last.seq;
        let (lo, hi) = if ascending {
            (first.seq, last.seq)
        } else {
            (last.seq, first.seq)
        };
        debug_assert!(
            messages
                .windows(2)
                .all(|w| (w[0].seq < w[1].seq) == ascending),
            "a page sorted by seq"
        );
        let conv = conv.to_wire();
        for guard in view.range(&self.recalls, pair_key(conv, lo)..=pair_key(conv, hi)) {
            let (key, value) = guard.into_inner()?;
            let seq = key_u64(&key, 8)?;
            // Found by binary search: a page may hold as many recalls as messages.
            let i = if ascending {
                messages.partition_point(|m| m.seq < seq)
            } else {
                messages.partition_point(|m| m.seq > seq)
            };
            if let Some(m) = messages.get_mut(i).filter(|m| m.seq == seq) {
                m.recalled = true;
                m.content.clear();
                m.recall_event_seq = be_u64(&value)?;
            }
        }
        Ok(())
    }

    /// The message at `seq` of `conv` in `view`, its recall applied.
    fn message_in(
        &self,
        view: &Snapshot,
        conv: ConvId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let c = conv.to_wire();
        let Some(start) = self.run_start(view, c, seq)? else {
            return Ok(None);
        };
        let key = pair_key(c, start);
        let Some(value) = view.get(&self.runs, key)? else {
            return Ok(None);
        };
        let run = decode_run(&key, &value)?;
        let Some(found) = run.into_iter().find(|m| m.seq == seq) else {
            return Ok(None);
        };
        let mut found = [found];
        self.apply_recalls(view, conv, &mut found)?;
        let [found] = found;
        Ok(Some(found))
    }

    /// The first seq of the run that holds `seq`, if one starts at or before it.
    pub(super) fn run_start(
        &self,
        view: &Snapshot,
        conv: u64,
        seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        match view
            .range(&self.runs, pair_key(conv, 0)..=pair_key(conv, seq))
            .next_back()
        {
            Some(guard) => Ok(Some(be_u64(&guard.key()?[8..])?)),
            None => Ok(None),
        }
    }
}

impl ConversationLog for FjallStore {
    fn append(&self, group: &CommitGroup) -> Result<(), StoreError> {
        let _writing = self.commit_lock();
        self.writable()?;
        self.check_fences(group)?;
        let mut batch = self.batch();
        for_each_run(&group.messages, |run| {
            let first = run[0];
            batch.insert(
                &self.runs,
                pair_key(first.conv_id.to_wire(), first.seq),
                encode_run(run.iter().copied()),
            );
        });
        for (conv, seq, event_seq) in &group.recalls {
            batch.insert(
                &self.recalls,
                pair_key(conv.to_wire(), *seq),
                event_seq.to_be_bytes(),
            );
        }
        for m in &group.recency {
            if let Some(from) = m.from {
                batch.remove(
                    &self.recent,
                    super::cursors::recent_key(m.user, from, m.conv),
                );
            }
            batch.insert(
                &self.recent,
                super::cursors::recent_key(m.user, m.to, m.conv),
                [],
            );
        }
        for (conv, user, row) in &group.cursor_rows {
            batch.insert(
                &self.cursor_rows,
                pair_key(conv.to_wire(), *user),
                encode_value(row),
            );
        }
        if let Some(next) = group.next_msg_id {
            batch.insert(&self.meta, META_NEXT_MSG_ID, next.to_be_bytes());
        }
        self.write_contacts(&mut batch, &group.contacts)?;
        self.write_groups(&mut batch, &group.groups)?;
        self.commit(batch)
    }

    fn next_msg_id(&self) -> Result<u64, StoreError> {
        match self.view().get(&self.meta, META_NEXT_MSG_ID)? {
            Some(v) => be_u64(&v),
            None => Ok(1),
        }
    }

    fn last_message(&self, conv: ConvId) -> Result<Option<MessageRecord>, StoreError> {
        let view = self.view();
        let c = conv.to_wire();
        let Some(guard) = view
            .range(&self.runs, pair_key(c, 0)..=pair_key(c, u64::MAX))
            .next_back()
        else {
            return Ok(None);
        };
        let (key, value) = guard.into_inner()?;
        let mut run = decode_run(&key, &value)?;
        let Some(last) = run.pop() else {
            return Ok(None);
        };
        let mut last = [last];
        self.apply_recalls(&view, conv, &mut last)?;
        let [last] = last;
        Ok(Some(last))
    }

    fn message(&self, conv: ConvId, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        self.message_in(&self.view(), conv, seq)
    }

    fn messages_at(
        &self,
        keys: &[(ConvId, u64)],
    ) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        // One snapshot for each batch: its answers are of one point in time.
        in_batches(keys, |batch| {
            let view = self.view();
            batch
                .iter()
                .map(|(conv, seq)| self.message_in(&view, *conv, *seq))
                .collect()
        })
    }

    fn messages_after(
        &self,
        conv: ConvId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let Some(first) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let view = self.view();
        let c = conv.to_wire();
        let start = self.run_start(&view, c, first)?.unwrap_or(first);
        let mut out = Vec::new();
        'runs: for guard in view.range(&self.runs, pair_key(c, start)..=pair_key(c, u64::MAX)) {
            let (key, value) = guard.into_inner()?;
            let run = decode_run(&key, &value)?;
            for m in run.into_iter().filter(|m| m.seq >= first) {
                out.push(m);
                if out.len() == limit {
                    break 'runs;
                }
            }
        }
        self.apply_recalls(&view, conv, &mut out)?;
        Ok(out)
    }

    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let view = self.view();
        let c = conv.to_wire();
        let mut out = Vec::new();
        'runs: for guard in view
            .range(&self.runs, pair_key(c, 0)..pair_key(c, before_seq))
            .rev()
        {
            let (key, value) = guard.into_inner()?;
            let run = decode_run(&key, &value)?;
            for m in run.into_iter().rev().filter(|m| m.seq < before_seq) {
                out.push(m);
                if out.len() == limit {
                    break 'runs;
                }
            }
        }
        self.apply_recalls(&view, conv, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    /// Runs stored before content was serialised as one byte string read back unchanged.
    #[test]
    fn content_as_bytes_is_stored_as_the_earlier_sequence_was() {
        #[derive(Serialize)]
        struct Sequence<'a> {
            content: &'a [u8],
        }
        #[derive(Serialize)]
        struct ByteString<'a> {
            #[serde(serialize_with = "super::as_bytes")]
            content: &'a [u8],
        }
        // Past 127 bytes the length takes two varint bytes.
        for len in [0, 1, 127, 128, 1024, 70_000] {
            let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(
                postcard::to_stdvec(&Sequence { content: &content }).unwrap(),
                postcard::to_stdvec(&ByteString { content: &content }).unwrap(),
                "{len} bytes"
            );
        }
    }
}

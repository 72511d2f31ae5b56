//! The conversation log: a commit group's three steps (the module doc), and messages read
//! back only up to each conversation's published head.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::future::{join_all, try_join_all};
use scylla::statement::batch::BatchType;

use super::ScyllaStore;
use super::codec::{self, bucket, buckets, i, u};
use super::writes::Writes;
use crate::store::{
    CommitGroup, ConvId, ConversationLog, Mentions, MessageRecord, StoreError, in_batches,
};

pub(super) const META_NEXT_MSG_ID: &str = "next_msg_id";

/// A row of `messages` as `message_columns!` reads it.
pub(super) type MessageRow = (
    i64,
    i64,
    i64,
    i64,
    String,
    i32,
    Vec<u8>,
    i64,
    i64,
    Option<i64>,
    Option<Vec<i64>>,
    Option<bool>,
);

pub(super) fn message_of(conv: ConvId, row: MessageRow) -> MessageRecord {
    let (
        seq,
        msg_id,
        from,
        to,
        client_msg_id,
        content_type,
        content,
        time,
        recall_of,
        event,
        ids,
        all,
    ) = row;
    let recall_event_seq = event.map_or(0, u);
    let recalled = recall_event_seq > 0;
    let ids: Vec<u64> = ids.unwrap_or_default().into_iter().map(u).collect();
    let all = all.unwrap_or(false);
    MessageRecord {
        conv_id: conv,
        seq: u(seq),
        msg_id: u(msg_id),
        from: u(from),
        to: u(to),
        client_msg_id,
        content_type,
        content: if recalled {
            Bytes::new()
        } else {
            Bytes::from(content)
        },
        server_time_ms: u(time),
        recalled,
        recall_of_seq: u(recall_of),
        recall_event_seq,
        mentions: (!ids.is_empty() || all).then(|| Box::new(Mentions { user_ids: ids, all })),
    }
}

/// The head a group publishes for one conversation: from `prev` to `new`.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeadMove {
    pub conv: ConvId,
    pub prev: u64,
    pub new: u64,
    pub time_ms: u64,
    /// The fence's epoch, if the group is fenced on this conversation.
    pub epoch: Option<u64>,
}

/// Each conversation's head move, checking the sequencer's contract (a conversation's
/// messages in one group are consecutive and ascending).
fn head_moves(group: &CommitGroup) -> Vec<HeadMove> {
    let mut moves: BTreeMap<ConvId, HeadMove> = BTreeMap::new();
    for m in &group.messages {
        let epoch = group
            .fences
            .iter()
            .find(|(c, _)| *c == m.conv_id)
            .map(|(_, e)| *e);
        let entry = moves.entry(m.conv_id).or_insert(HeadMove {
            conv: m.conv_id,
            prev: m.seq.saturating_sub(1),
            new: m.seq.saturating_sub(1),
            time_ms: 0,
            epoch,
        });
        assert_eq!(
            m.seq,
            entry.new + 1,
            "a conversation's messages in one group must have consecutive seqs"
        );
        entry.new = m.seq;
        entry.time_ms = m.server_time_ms;
    }
    moves.into_values().collect()
}

impl ScyllaStore {
    /// The conversation's published head: `(seq, time)`, `(0, 0)` before its first message.
    pub(super) async fn head(&self, conv: ConvId) -> Result<(u64, u64), StoreError> {
        let row = self
            .first::<(Option<i64>, Option<i64>, Option<i64>, Option<i64>)>(
                &self.st.head_get,
                (i(conv.to_wire()),),
            )
            .await?;
        Ok(row.map_or((0, 0), |(h, t, _, _)| (h.map_or(0, u), t.map_or(0, u))))
    }

    async fn message_at(
        &self,
        conv: ConvId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let c = i(conv.to_wire());
        Ok(self
            .first::<MessageRow>(&self.st.msg_get, (c, i(bucket(seq)), i(seq)))
            .await?
            .map(|row| message_of(conv, row)))
    }

    /// The message at `seq` if the conversation's published head has reached it.
    async fn published_message(
        &self,
        conv: ConvId,
        seq: u64,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let (head, _) = self.head(conv).await?;
        if seq == 0 || seq > head {
            return Ok(None);
        }
        self.message_at(conv, seq).await
    }

    async fn last_message_async(&self, conv: ConvId) -> Result<Option<MessageRecord>, StoreError> {
        let (head, _) = self.head(conv).await?;
        if head == 0 {
            return Ok(None);
        }
        self.message_at(conv, head).await
    }

    /// Messages with seqs in `lo ..= hi` (all published), ascending or newest first.
    async fn range(
        &self,
        conv: ConvId,
        lo: u64,
        hi: u64,
        descending: bool,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let c = i(conv.to_wire());
        let st = if descending {
            &self.st.msg_range_desc
        } else {
            &self.st.msg_range_asc
        };
        let span: Vec<u64> = if descending {
            buckets(lo, hi).rev().collect()
        } else {
            buckets(lo, hi).collect()
        };
        // The partitions of the range, read at once; each holds at most one bucket's seqs.
        let reads = span.into_iter().map(|b| {
            let first = lo.max(b * codec::MESSAGES_PER_BUCKET);
            let last = hi.min((b + 1) * codec::MESSAGES_PER_BUCKET - 1);
            let limit = i32::try_from(last - first + 1).unwrap_or(i32::MAX);
            self.rows::<MessageRow>(st, (c, i(b), i(first), i(last), limit))
        });
        let pages = try_join_all(reads).await?;
        Ok(pages
            .into_iter()
            .flatten()
            .map(|row| message_of(conv, row))
            .collect())
    }

    /// Step 2 and 3 of a group (the module doc); step 1 is `check_fences`.
    async fn append_async(&self, group: &CommitGroup) -> Result<(), StoreError> {
        self.check_fences(group).await?;
        let moves = head_moves(group);
        let epoch_of = |conv: ConvId| {
            moves
                .iter()
                .find(|m| m.conv == conv)
                .and_then(|m| m.epoch)
                .or_else(|| {
                    group
                        .fences
                        .iter()
                        .find(|(c, _)| *c == conv)
                        .map(|(_, e)| *e)
                })
                .unwrap_or(0)
        };
        // Messages: one unlogged batch per partition (conversation, bucket).
        let mut partitions: BTreeMap<(ConvId, u64), Writes<'_>> = BTreeMap::new();
        for m in &group.messages {
            // Written even when empty (a frozen list is one cell, no tombstone), so that a
            // former owner's leftover row at this seq keeps none of its mentions.
            let (ids, all) = m.mentions.as_deref().map_or((Vec::new(), false), |x| {
                (
                    x.user_ids.iter().map(|v| i(*v)).collect::<Vec<i64>>(),
                    x.all,
                )
            });
            let bytes = m.content.len() + m.client_msg_id.len();
            partitions
                .entry((m.conv_id, bucket(m.seq)))
                .or_default()
                .push(
                    &self.st.msg_insert,
                    (
                        i(m.conv_id.to_wire()),
                        i(bucket(m.seq)),
                        i(m.seq),
                        i(m.msg_id),
                        i(m.from),
                        i(m.to),
                        m.client_msg_id.clone(),
                        m.content_type,
                        m.content.clone(),
                        i(m.server_time_ms),
                        i(m.recall_of_seq),
                        ids,
                        all,
                        codec::message_ts(epoch_of(m.conv_id), m.seq),
                    ),
                    bytes,
                );
        }
        // Everything else: logged batches.
        let mut side = Writes::default();
        for (conv, seq, event_seq) in &group.recalls {
            side.push(
                &self.st.msg_recall,
                (
                    codec::message_ts(epoch_of(*conv), *event_seq),
                    i(*event_seq),
                    i(conv.to_wire()),
                    i(bucket(*seq)),
                    i(*seq),
                ),
                0,
            );
        }
        self.write_cursors(&mut side, group);
        if let Some(next) = group.next_msg_id {
            side.push(&self.st.meta_put, (i(next), META_NEXT_MSG_ID), 0);
        }
        self.write_contacts(&mut side, &group.contacts).await?;
        self.write_groups(&mut side, &group.groups).await?;
        let message_sends = partitions
            .into_values()
            .map(|writes| self.send(BatchType::Unlogged, writes));
        let rows = async { try_join_all(message_sends).await.map(drop) };
        let side_rows = async {
            if side.is_empty() {
                Ok(())
            } else {
                self.send(BatchType::Logged, side).await
            }
        };
        futures_util::future::try_join(rows, side_rows).await?;
        self.add_group_counts(&group.groups).await?;
        self.publish_heads(&moves).await
    }

    /// Step 3: one LWT per conversation. A failure whose outcome is unknown stops the store's
    /// writes (the module doc says why); refusals as `Fenced` do not ([`publish_outcome`]).
    async fn publish_heads(&self, moves: &[HeadMove]) -> Result<(), StoreError> {
        let results = join_all(moves.iter().map(|m| self.publish_head(*m))).await;
        let outcome = publish_outcome(results);
        if let Err(Published::Unknown(err)) = &outcome {
            self.health.fail(err);
        }
        outcome.map_err(Published::into_error)
    }
}

/// How step 3 failed.
#[derive(Debug)]
enum Published {
    /// Every failed head was refused as `Fenced` (another node owns its conversation): its
    /// rows stay invisible and the next owner writes them at a higher epoch's timestamp. What
    /// the published heads made visible is known too (the writer reloads it and a resend is
    /// answered by dedup), so the store takes the next group.
    Fenced(StoreError),
    /// Some head's outcome is unknown (a timeout, a head not where the group expected):
    /// writing on could rewrite its rows at the same (epoch, seq) timestamp.
    Unknown(StoreError),
}

impl Published {
    fn into_error(self) -> StoreError {
        match self {
            Self::Fenced(err) | Self::Unknown(err) => err,
        }
    }
}

/// Step 3's outcome from each head's: `Unknown` if any error is not `Fenced`, whatever else
/// happened; else `Fenced` with every stale fence, however many heads were published.
fn publish_outcome(results: Vec<Result<(), StoreError>>) -> Result<(), Published> {
    let mut stale = Vec::new();
    for err in results.into_iter().filter_map(Result::err) {
        match err {
            StoreError::Fenced { stale: more } => stale.extend(more),
            unknown => return Err(Published::Unknown(unknown)),
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(Published::Fenced(StoreError::Fenced { stale }))
    }
}

impl ConversationLog for ScyllaStore {
    fn append(&self, group: &CommitGroup) -> Result<(), StoreError> {
        self.writable()?;
        self.run(self.append_async(group))
    }

    fn next_msg_id(&self) -> Result<u64, StoreError> {
        Ok(self.run(self.meta(META_NEXT_MSG_ID))?.unwrap_or(1))
    }

    fn last_message(&self, conv: ConvId) -> Result<Option<MessageRecord>, StoreError> {
        self.run(self.last_message_async(conv))
    }

    fn last_messages(&self, convs: &[ConvId]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        self.run(try_join_all(
            convs.iter().map(|c| self.last_message_async(*c)),
        ))
    }

    fn message(&self, conv: ConvId, seq: u64) -> Result<Option<MessageRecord>, StoreError> {
        self.run(self.published_message(conv, seq))
    }

    fn messages_at(
        &self,
        keys: &[(ConvId, u64)],
    ) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        // A batch's reads in flight together: one wait per batch, not per key.
        in_batches(keys, |batch| {
            self.run(try_join_all(
                batch.iter().map(|(c, s)| self.published_message(*c, *s)),
            ))
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
        self.run(async {
            let (head, _) = self.head(conv).await?;
            if first > head {
                return Ok(Vec::new());
            }
            // Seqs are gap-free: the page is exactly these seqs.
            let last = head.min(first.saturating_add(limit as u64 - 1));
            self.range(conv, first, last, false).await
        })
    }

    fn messages_before(
        &self,
        conv: ConvId,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        if limit == 0 || before_seq <= 1 {
            return Ok(Vec::new());
        }
        self.run(async {
            let (head, _) = self.head(conv).await?;
            let last = head.min(before_seq - 1);
            if last == 0 {
                return Ok(Vec::new());
            }
            let first = last.saturating_sub(limit as u64 - 1).max(1);
            self.range(conv, first, last, true).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(conv: ConvId, seq: u64) -> MessageRecord {
        MessageRecord {
            conv_id: conv,
            seq,
            msg_id: seq,
            from: 100_000_000,
            to: 100_000_001,
            client_msg_id: format!("c{seq}"),
            content_type: 1,
            content: Bytes::from_static(b"hi"),
            server_time_ms: 1_000 + seq,
            recalled: false,
            recall_of_seq: 0,
            recall_event_seq: 0,
            mentions: None,
        }
    }

    #[test]
    fn a_group_moves_each_conversations_head_once() {
        let a = ConvId::direct(100_000_000, 100_000_001).unwrap();
        let b = ConvId::group(7).unwrap();
        let group = CommitGroup {
            messages: vec![m(a, 4), m(b, 1), m(a, 5), m(b, 2)],
            fences: vec![(b, 3)],
            ..CommitGroup::default()
        };
        let moves = head_moves(&group);
        assert_eq!(moves.len(), 2);
        let ma = moves.iter().find(|x| x.conv == a).unwrap();
        assert_eq!((ma.prev, ma.new, ma.time_ms, ma.epoch), (3, 5, 1_005, None));
        let mb = moves.iter().find(|x| x.conv == b).unwrap();
        assert_eq!((mb.prev, mb.new, mb.epoch), (0, 2, Some(3)));
    }

    fn fenced(conv: u64) -> Result<(), StoreError> {
        Err(StoreError::Fenced {
            stale: vec![crate::store::StaleFence {
                conv,
                fenced: 1,
                stored: 2,
            }],
        })
    }

    fn timed_out() -> Result<(), StoreError> {
        Err(StoreError::Unavailable("request timed out".into()))
    }

    #[test]
    fn heads_refused_as_fenced_are_a_known_outcome_even_after_others_were_published() {
        assert!(publish_outcome(vec![Ok(()), Ok(())]).is_ok());
        // X published, Y and Z fenced: the state is known; both stale fences are reported.
        match publish_outcome(vec![Ok(()), fenced(7), fenced(9)]) {
            Err(Published::Fenced(StoreError::Fenced { stale })) => {
                assert_eq!(stale.iter().map(|s| s.conv).collect::<Vec<_>>(), [7, 9]);
            }
            other => panic!("expected a known Fenced outcome, got {other:?}"),
        }
        assert!(matches!(
            publish_outcome(vec![fenced(7)]),
            Err(Published::Fenced(_))
        ));
    }

    #[test]
    fn any_head_whose_outcome_is_unknown_stops_writes_whatever_came_first() {
        // X fenced first, Y timed out, nothing published: Y's outcome is unknown.
        assert!(matches!(
            publish_outcome(vec![fenced(7), timed_out()]),
            Err(Published::Unknown(StoreError::Unavailable(_)))
        ));
        assert!(matches!(
            publish_outcome(vec![Ok(()), timed_out(), fenced(7)]),
            Err(Published::Unknown(StoreError::Unavailable(_)))
        ));
        let moved = Err(StoreError::Engine("its head is 4, not 3".into()));
        assert!(matches!(
            publish_outcome(vec![moved]),
            Err(Published::Unknown(StoreError::Engine(_)))
        ));
    }

    #[test]
    #[should_panic(expected = "consecutive seqs")]
    fn a_gap_in_a_groups_seqs_is_a_bug() {
        let a = ConvId::direct(100_000_000, 100_000_001).unwrap();
        head_moves(&CommitGroup {
            messages: vec![m(a, 1), m(a, 3)],
            ..CommitGroup::default()
        });
    }

    #[test]
    fn message_rows_decode_with_recalls_and_mentions() {
        let g = ConvId::group(3).unwrap();
        let row: MessageRow = (
            9,
            77,
            100_000_000,
            0,
            "cid".into(),
            2,
            b"secret".to_vec(),
            1_234,
            0,
            Some(12),
            Some(vec![100_000_001]),
            Some(true),
        );
        let msg = message_of(g, row);
        assert!(msg.recalled);
        assert!(
            msg.content.is_empty(),
            "a recalled message's content is not returned"
        );
        assert_eq!(msg.recall_event_seq, 12);
        assert_eq!(
            msg.mentions.as_deref(),
            Some(&Mentions {
                user_ids: vec![100_000_001],
                all: true
            })
        );
        let plain = message_of(
            g,
            (
                1,
                1,
                1,
                1,
                String::new(),
                0,
                vec![],
                0,
                0,
                Some(0),
                None,
                None,
            ),
        );
        assert!(!plain.recalled);
        assert_eq!(plain.mentions, None);
    }
}

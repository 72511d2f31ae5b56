//! Conversation ownership on `conv_meta`: a claim is an LWT that advances the epoch; the
//! fence is checked at LOCAL_SERIAL before a group writes, and again by the LWT that
//! publishes each head (`IF epoch = ? AND head = ?`).

use futures_util::future::try_join_all;
use futures_util::{StreamExt, TryStreamExt, stream};

use super::codec::{i, u};
use super::log::HeadMove;
use super::{Lwt, ScyllaStore};
use crate::store::{
    Claim, CommitGroup, ConvId, IdKind, OwnerRecord, OwnerStore, StaleFence, StoreError,
    refuse_stale_fences,
};

/// LWTs of one `claim_many` (and reads of one `owners`) in flight at once, at most: each is a
/// Paxos round on the replicas, so a takeover of thousands does not flood them.
const CLAIMS_IN_FLIGHT_MAX: usize = 32;

/// `conv_meta` as read: `(head, head_time_ms, epoch, owner)`.
type MetaRow = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);

fn owner_of(lwt: &Lwt) -> OwnerRecord {
    OwnerRecord {
        epoch: lwt.bigint("epoch").map_or(0, u),
        node: lwt.bigint("owner").map_or(0, u),
    }
}

impl ScyllaStore {
    /// The stored epoch and owner, at LOCAL_SERIAL (0, 0 when never claimed).
    async fn owner_serial(&self, conv: ConvId) -> Result<OwnerRecord, StoreError> {
        let row = self
            .first::<MetaRow>(&self.st.head_get_serial, (i(conv.to_wire()),))
            .await?;
        Ok(
            row.map_or(OwnerRecord { epoch: 0, node: 0 }, |(_, _, e, o)| {
                OwnerRecord {
                    epoch: e.map_or(0, u),
                    node: o.map_or(0, u),
                }
            }),
        )
    }

    /// Step 1: refuses a group whose fences name epochs that are not the stored ones (every
    /// stale one reported), before anything of it is written.
    pub(super) async fn check_fences(&self, group: &CommitGroup) -> Result<(), StoreError> {
        let stored = try_join_all(group.fences.iter().map(|(c, _)| self.owner_serial(*c))).await?;
        let mut stored = stored.into_iter();
        refuse_stale_fences(&group.fences, |_| Ok(stored.next().map_or(0, |o| o.epoch)))
    }

    /// Step 3 for one conversation: moves its head from `prev` to `new` by LWT, under its
    /// fence if it has one.
    pub(super) async fn publish_head(&self, m: HeadMove) -> Result<(), StoreError> {
        let c = i(m.conv.to_wire());
        let (new, time) = (i(m.new), i(m.time_ms));
        // The first message of a conversation nobody claimed: its row does not exist yet.
        if m.prev == 0 && m.epoch.unwrap_or(0) == 0 {
            let created = self.lwt(&self.st.head_first, (c, new, time)).await?;
            if created.applied {
                return Ok(());
            }
        }
        let done = match m.epoch {
            Some(epoch) => {
                self.lwt(
                    &self.st.head_publish_fenced,
                    (new, time, c, i(epoch), i(m.prev)),
                )
                .await?
            }
            None => {
                self.lwt(&self.st.head_publish, (new, time, c, i(m.prev)))
                    .await?
            }
        };
        if done.applied {
            return Ok(());
        }
        let stored = owner_of(&done);
        if let Some(fenced) = m.epoch
            && stored.epoch != fenced
        {
            return Err(StoreError::Fenced {
                stale: vec![StaleFence {
                    conv: m.conv.to_wire(),
                    fenced,
                    stored: stored.epoch,
                }],
            });
        }
        let head = done.bigint("head").map_or(0, u);
        Err(StoreError::Engine(
            format!(
                "conversation {}: its head is {head}, not {} as this group expected \
                 (another writer sequences it)",
                m.conv, m.prev
            )
            .into(),
        ))
    }
}

impl OwnerStore for ScyllaStore {
    fn owner(&self, conv: ConvId) -> Result<Option<OwnerRecord>, StoreError> {
        let owner = self.run(self.owner_serial(conv))?;
        Ok((owner.epoch > 0).then_some(owner))
    }

    fn claim(&self, conv: ConvId, node: u64, seen_epoch: u64) -> Result<Claim, StoreError> {
        self.writable()?;
        self.run(self.claim_one(conv, node, seen_epoch))
    }

    fn owners(&self, convs: &[ConvId]) -> Result<Vec<Option<OwnerRecord>>, StoreError> {
        let read = stream::iter(convs.iter().map(|c| self.owner_serial(*c)))
            .buffered(CLAIMS_IN_FLIGHT_MAX)
            .map_ok(|o| (o.epoch > 0).then_some(o))
            .try_collect();
        self.run(read)
    }

    /// Concurrent LWTs, [`CLAIMS_IN_FLIGHT_MAX`] at a time: one wait for the lot, not one per
    /// conversation (a Scylla batch of LWTs must share a partition; these do not).
    fn claim_many(&self, node: u64, claims: &[(ConvId, u64)]) -> Result<Vec<Claim>, StoreError> {
        self.writable()?;
        let claimed = stream::iter(
            claims
                .iter()
                .map(|&(c, seen)| self.claim_one(c, node, seen)),
        )
        .buffered(CLAIMS_IN_FLIGHT_MAX)
        .try_collect();
        self.run(claimed)
    }

    /// A compare-and-set loop of LWTs on the counter's `meta` row, bounded (`take_many`).
    fn lease_ids(&self, kind: IdKind, count: u64) -> Result<std::ops::Range<u64>, StoreError> {
        assert!(count > 0, "an empty lease");
        self.writable()?;
        let name = match kind {
            IdKind::Message => super::log::META_NEXT_MSG_ID,
            IdKind::Group => super::groups::META_NEXT_GROUP_ID,
        };
        self.run(self.take_many(name, 1, count))
    }
}

impl ScyllaStore {
    async fn claim_one(
        &self,
        conv: ConvId,
        node: u64,
        seen_epoch: u64,
    ) -> Result<Claim, StoreError> {
        let c = i(conv.to_wire());
        {
            let mut seen = seen_epoch;
            if seen_epoch == 0 {
                let created = self.lwt(&self.st.claim_first, (c, i(node))).await?;
                if created.applied {
                    return Ok(Claim::Won(1));
                }
                let current = owner_of(&created);
                if current.epoch != 0 {
                    return Ok(Claim::Lost(current));
                }
                // The row exists unclaimed (messages written before cluster mode).
                seen = 0;
            }
            let next = seen + 1;
            let moved = self
                .lwt(&self.st.claim_next, (i(next), i(node), c, i(seen)))
                .await?;
            if moved.applied {
                return Ok(Claim::Won(next));
            }
            // A refused UPDATE returns the condition's columns (the epoch), not the owner.
            if moved.bigint("owner").is_some() {
                return Ok(Claim::Lost(owner_of(&moved)));
            }
            Ok(Claim::Lost(self.owner_serial(conv).await?))
        }
    }
}

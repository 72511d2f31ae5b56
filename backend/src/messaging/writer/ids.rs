//! Cluster mode: message and group ids come from blocks leased from the store of record
//! (`OwnerStore::lease_ids`, one atomic advance of the stored counter per block), so that
//! nodes sharing a store never hand out the same id. The next block is leased by a helper
//! thread while half of the current one is left, so the commit thread rarely waits for one.
//! Ids are never given back: a block left at a restart or taken by a failed group is skipped
//! (ids are unique, not dense; seqs are per conversation and unaffected). One box does none of
//! this: the counters advance in its commit groups as before.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::mpsc as std_mpsc;

use super::*;
use crate::store::{IdKind, OwnerStore};

/// Leases in flight at once: one per kind.
const LEASES_IN_FLIGHT_MAX: usize = 2;

/// The ids of one kind this node holds: the block in use first, then those leased ahead.
#[derive(Default)]
struct Held {
    blocks: VecDeque<Range<u64>>,
    /// A lease of this kind is with the helper thread.
    in_flight: bool,
}

impl Held {
    fn left(&self) -> u64 {
        self.blocks.iter().map(|b| b.end - b.start).sum()
    }

    fn pop(&mut self) -> Option<u64> {
        while let Some(block) = self.blocks.front_mut() {
            if let Some(id) = block.next() {
                return Some(id);
            }
            self.blocks.pop_front();
        }
        None
    }
}

pub(crate) struct IdBlocks {
    owners: Arc<dyn OwnerStore>,
    block_size: u64,
    msg: Held,
    group: Held,
    /// To the helper thread (which ends when this is dropped), and its answers.
    ask: std_mpsc::SyncSender<IdKind>,
    answers: std_mpsc::Receiver<(IdKind, Result<Range<u64>, StoreError>)>,
}

impl IdBlocks {
    pub(crate) fn new(owners: Arc<dyn OwnerStore>, block_size: u64) -> std::io::Result<Self> {
        assert!(
            block_size > 0,
            "cluster.id_block_size is checked at startup"
        );
        let (ask, asked) = std_mpsc::sync_channel::<IdKind>(LEASES_IN_FLIGHT_MAX);
        let (answer, answers) = std_mpsc::sync_channel(LEASES_IN_FLIGHT_MAX);
        let store = Arc::clone(&owners);
        std::thread::Builder::new()
            .name(crate::threads::ID_LEASE.into())
            .spawn(move || {
                for kind in asked {
                    let leased = store.lease_ids(kind, block_size);
                    if answer.send((kind, leased)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            owners,
            block_size,
            msg: Held::default(),
            group: Held::default(),
            ask,
            answers,
        })
    }

    fn held(&mut self, kind: IdKind) -> &mut Held {
        match kind {
            IdKind::Message => &mut self.msg,
            IdKind::Group => &mut self.group,
        }
    }

    /// Takes in the blocks the helper leased; with `wait_for`, waits for that kind's lease
    /// in flight. A failed lease ahead is only logged: the next one is asked for when needed.
    fn receive(&mut self, wait_for: Option<IdKind>) {
        loop {
            let answer = match wait_for {
                Some(kind) if self.held(kind).in_flight => self.answers.recv().ok(),
                _ => self.answers.try_recv().ok(),
            };
            let Some((kind, leased)) = answer else {
                return;
            };
            let held = self.held(kind);
            held.in_flight = false;
            match leased {
                Ok(block) => held.blocks.push_back(block),
                Err(err) => tracing::warn!(%err, ?kind, "cluster: leasing ids ahead failed"),
            }
        }
    }

    /// Asks the helper for the next block of `kind` once half a block or less is left.
    fn lease_ahead(&mut self, kind: IdKind) {
        let half = self.block_size.div_ceil(2);
        let held = self.held(kind);
        if held.in_flight || held.left() > half {
            return;
        }
        held.in_flight = true;
        if self.ask.try_send(kind).is_err() {
            // The helper is gone (it cannot panic but through the store): lease inline.
            self.held(kind).in_flight = false;
        }
    }

    /// Makes sure `count` ids of `kind` are held: takes in what the helper leased, waits for
    /// its lease in flight if that is not enough, and leases inline what is still missing.
    pub(crate) fn ensure(&mut self, kind: IdKind, count: u64) -> Result<(), StoreError> {
        self.receive(None);
        if self.held(kind).left() < count {
            self.receive(Some(kind));
        }
        while self.held(kind).left() < count {
            let missing = count - self.held(kind).left();
            let block = self.owners.lease_ids(kind, missing.max(self.block_size))?;
            metrics::counter!("ringchat_cluster_id_leases_waited_total").increment(1);
            self.held(kind).blocks.push_back(block);
        }
        self.lease_ahead(kind);
        Ok(())
    }

    /// The next id of `kind`, leasing a block first if none is held.
    pub(crate) fn take(&mut self, kind: IdKind) -> Result<u64, StoreError> {
        if self.held(kind).left() == 0 {
            self.ensure(kind, 1)?;
        }
        let id = self.held(kind).pop().expect("ensured");
        if self.held(kind).left() <= self.block_size / 2 {
            self.receive(None);
            self.lease_ahead(kind);
        }
        Ok(id)
    }

    /// The next `count` ids of `kind`, in the order [`Self::take`] will hand them out
    /// (leased first if fewer are held).
    pub(crate) fn peek(&mut self, kind: IdKind, count: usize) -> Result<Vec<u64>, StoreError> {
        self.ensure(kind, count as u64)?;
        Ok(self
            .held(kind)
            .blocks
            .iter()
            .flat_map(|b| b.clone())
            .take(count)
            .collect())
    }

    /// Drops the next `count` ids of `kind` unused (skipped, never handed out).
    pub(crate) fn skip(&mut self, kind: IdKind, count: usize) {
        for _ in 0..count {
            if self.held(kind).pop().is_none() {
                break;
            }
        }
    }
}

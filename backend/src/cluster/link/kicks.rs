//! Kicks to other nodes are delivered, not fired and forgotten. A revocation (password change or
//! reset, logout, revoked device), a disable or an operator's kick on this node must end the
//! user's sessions on every node, including a node whose link blips at that moment (the queue
//! refuses while the link is down, and a link that breaks loses what was in flight).
//!
//! - Sender: each peer keeps the kicks it has not confirmed (`Pending`), coalesced per user
//!   (one entry for all devices, and up to `DEVICES_PER_USER_MAX` devices; more become "all"),
//!   bounded by `cluster.peer_kicks_pending_max` users. A kick is recorded, then queued as
//!   usual; every new stream to the peer starts with the whole set; the peer confirms each kick
//!   it applied on the stream's response half (the same `NodeKick`, echoed), which removes it.
//! - Receiver: a kick ends only what it is still right to end (`Link::apply_kicks`): for a
//!   revocation, the sessions whose token the store of record no longer has; for a disable,
//!   the user's sessions while the account is still disabled; for an operator's kick (nothing
//!   to check in the store), the sessions opened before it was issued (`opened_by_ms`). So a
//!   kick that arrives late (or twice, or widened to every device) never ends a login made
//!   since with valid credentials.
//!   A store that does not answer ends the sessions (fail closed: they can log in again).
//! - A `REPLACED` kick (a login of the device on the sending node: `Link::send_kick_once`)
//!   carries the replacing session's open time, not the time it is sent, and ends the device's
//!   sessions opened before that: the later registered session of a device stays, on one node
//!   (`Sessions::open_beside`, under its lock) as across nodes. A login slow after it
//!   registered (the store's re-check, the user's groups) never ends a session of the device
//!   opened since on another node.
//!
//! A kick goes to the nodes of this node's view when it is issued; a node missing from that
//! view is sent nothing then. Two parts make up for that, one on each side (receivers already
//! make a late or repeated kick harmless, so erring towards sending is safe):
//!
//! - Sender, [`KickLog`]: the remembered kicks (not the `REPLACED` ones, sent once) are also
//!   kept in a log, bounded by `cluster.peer_kicks_pending_max` entries (a newcomer's
//!   `Pending` could not hold more; past it the oldest goes, counted by
//!   `ringchat_cluster_kick_log_dropped_total`), for a window after they were handed out:
//!   [`kick_log_window_ms`]. A kick issued while this node's view is not fresh (not joined
//!   yet, or Redis away: nodes that joined meanwhile are missing from it) is handed out only
//!   by the next fresh view, so its window starts then. When a node enters the view
//!   (`newcomers.rs`: every node of the first view after joining, and each one new since),
//!   its peer's `Pending` is seeded with the whole log: delivered and confirmed like any
//!   kick. This covers a node that joined while this one's view lacked it (up to one
//!   heartbeat), and every node when this one issued kicks before it could see any.
//! - Receiver, `recheck.rs`: what no window covers is a node that was out of the others'
//!   views for longer (its Redis cut past `node_ttl_ms`, or sessions taken before its first
//!   join, which nobody knew to kick). Such a node knows it ([`ClusterView::returns`]: its
//!   first join, or a gap between its heartbeats long enough to have been dropped), and then
//!   checks each of its sessions against the store by the same rule a received kick applies
//!   ([`KickStores::verdict`]).
//!
//! [`ClusterView::returns`]: crate::cluster::ClusterView::returns

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringchat_proto::v1::{self, KickReason, NodeBatch, NodeItem, node_item::Item};
use tokio::sync::mpsc;

use super::Link;
use super::peer::Peer;
use crate::api::{ConnRef, ShardEvent};
use crate::cluster::NODE_CLOCKS_APART_MAX_MS;
use crate::store::{AccountAdminStore, AccountStore, StoreError, TokenHash};

/// Devices remembered per user before the user's entry becomes "every device". Safe for
/// revocations (the receiver ends only sessions whose token is gone, whatever the entry
/// names); for an operator's kicks of more devices than this at once, the other devices'
/// sessions opened before the newest of them end too (they may log in again).
const DEVICES_PER_USER_MAX: usize = 16;

/// One kick as remembered: its reason (`KickReason` as i32) and when it was issued (this
/// node's wall clock, unix ms); for a `REPLACED` kick, when the replacing session opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kick {
    pub(crate) reason: i32,
    pub(crate) issued_at_ms: u64,
}

/// One user's kicks not confirmed yet.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct UserKicks {
    /// Every device, one per [`Check`] (`check_slot`): kicks that check different things do
    /// not stand in for each other (a logout's "token gone" would spare a disabled account's
    /// sessions), so a newer one replaces only an older one of its own kind.
    all: [Option<Kick>; 3],
    /// Per device: kept beside `all` too, since an operator's kick ends only sessions opened
    /// before it, so an older "every device" does not cover a newer device's kick.
    devices: Vec<(String, Kick)>,
}

impl UserKicks {
    /// `kick` for every device: it takes its kind's place (the newer of the two) and covers
    /// the device kicks of its kind issued before it.
    fn widen(&mut self, kick: Kick) {
        let slot = check_slot(kick.reason);
        let all = &mut self.all[slot];
        if all.is_none_or(|old| old.issued_at_ms <= kick.issued_at_ms) {
            *all = Some(kick);
        }
        let cut = all.map_or(0, |k| k.issued_at_ms);
        self.devices
            .retain(|(_, k)| check_slot(k.reason) != slot || k.issued_at_ms > cut);
    }
}

/// The place in [`UserKicks::all`] of a kick of `reason`.
fn check_slot(reason: i32) -> usize {
    match KickReason::try_from(reason).map_or(Check::None, check_for) {
        Check::TokenGone => 0,
        Check::Disabled => 1,
        Check::None => 2,
    }
}

/// Why a kick was not remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KickRefused {
    /// `cluster.peer_kicks_pending_max` users have kicks waiting for this peer already.
    #[error("too many users' kicks wait for this peer")]
    Full,
}

/// A peer's kicks not confirmed yet, by user.
#[derive(Debug)]
pub(crate) struct Pending {
    users: HashMap<u64, UserKicks>,
    users_max: usize,
}

impl Pending {
    pub(crate) fn new(users_max: usize) -> Self {
        Self {
            users: HashMap::new(),
            users_max,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    /// Remembers a kick (`device` `None`: every device) until the peer confirms it. A newer
    /// kick replaces the entry of its kind it falls on (it ends at least what the older one
    /// did: sessions opened before a later time, under the same check).
    pub(crate) fn record(
        &mut self,
        user: u64,
        device: Option<&str>,
        kick: Kick,
    ) -> Result<(), KickRefused> {
        if !self.users.contains_key(&user) && self.users.len() >= self.users_max {
            return Err(KickRefused::Full);
        }
        let entry = self.users.entry(user).or_default();
        match device {
            None => entry.widen(kick),
            Some(d) => {
                let full = entry.devices.len() >= DEVICES_PER_USER_MAX;
                match entry.devices.iter_mut().find(|(x, _)| x == d) {
                    Some((_, k)) => *k = kick,
                    None if full => entry.widen(kick),
                    None => entry.devices.push((d.to_owned(), kick)),
                }
            }
        }
        Ok(())
    }

    /// The peer applied `k`: forgotten, unless a different kick replaced it meanwhile.
    pub(crate) fn confirmed(&mut self, k: &v1::NodeKick) {
        let Some(entry) = self.users.get_mut(&k.user_id) else {
            return;
        };
        let echoed = Kick {
            reason: k.reason,
            issued_at_ms: k.issued_at_ms,
        };
        if k.all_devices {
            let slot = &mut entry.all[check_slot(k.reason)];
            if *slot == Some(echoed) {
                *slot = None;
            }
        } else {
            entry
                .devices
                .retain(|(d, kick)| !(*d == k.device_id && *kick == echoed));
        }
        if entry.all.iter().all(Option::is_none) && entry.devices.is_empty() {
            self.users.remove(&k.user_id);
        }
    }

    /// Every kick still waiting, as items (a new stream starts with them).
    pub(crate) fn items(&self) -> Vec<NodeItem> {
        let mut out = Vec::new();
        for (user, k) in &self.users {
            out.extend(k.all.iter().flatten().map(|kick| item(*user, None, *kick)));
            out.extend(
                k.devices
                    .iter()
                    .map(|(d, kick)| item(*user, Some(d), *kick)),
            );
        }
        out
    }
}

/// How long a remembered kick stays in the [`KickLog`] after it was handed out (issued
/// under a fresh view, or the first fresh view after it), in ms: `node_ttl_ms` plus one
/// `heartbeat_interval_ms`. A node whose record reached Redis before the kick is in this
/// node's view by its next read, one `heartbeat_interval_ms` (plus a `redis_timeout_ms`
/// deadline, below it) later; the TTL is a wide margin for a slow sweep or a late read, still
/// a few seconds' worth of kicks. A node away for longer was dropped from the views and checks
/// its sessions itself when it comes back (`recheck.rs`).
pub(crate) fn kick_log_window_ms(config: &crate::cluster::ClusterConfig) -> u64 {
    config
        .node_ttl_ms
        .saturating_add(config.heartbeat_interval_ms)
}

/// A kick in the log: whom it names, the kick, and until when it is kept (`None`: not handed
/// out yet, kept until the next fresh view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Logged {
    pub(crate) user: u64,
    pub(crate) device: Option<Box<str>>,
    pub(crate) kick: Kick,
    keep_until: Option<Instant>,
}

/// The remembered kicks this node issued lately, for nodes that enter its view after (module
/// comment). Oldest first; `keep_until` never decreases along it (an entry not handed out yet
/// counts as the latest), so expiry pops from the front.
#[derive(Debug)]
pub(crate) struct KickLog {
    entries: VecDeque<Logged>,
    /// `cluster.peer_kicks_pending_max`.
    entries_max: usize,
    window: Duration,
}

impl KickLog {
    pub(crate) fn new(entries_max: usize, window_ms: u64) -> Self {
        Self {
            entries: VecDeque::new(),
            entries_max: entries_max.max(1),
            window: Duration::from_millis(window_ms),
        }
    }

    /// Logs a kick issued at `now`; `handed_out`: the view it went to was fresh. Returns how
    /// many older entries were dropped to make room (0 or 1).
    pub(crate) fn log(
        &mut self,
        user: u64,
        device: Option<&str>,
        kick: Kick,
        now: Instant,
        handed_out: bool,
    ) -> usize {
        let mut dropped = 0;
        while self.entries.len() >= self.entries_max {
            self.entries.pop_front();
            dropped += 1;
        }
        // After an entry not handed out yet, one that is must not expire before it: it is
        // kept as long (the order of `keep_until` is what lets expiry pop from the front).
        let behind_open = self.entries.back().is_some_and(|e| e.keep_until.is_none());
        self.entries.push_back(Logged {
            user,
            device: device.map(Into::into),
            kick,
            keep_until: (handed_out && !behind_open).then(|| now + self.window),
        });
        dropped
    }

    /// This node's view is fresh at `now`: what waited for it is handed out, its window
    /// starts now.
    pub(crate) fn handed_out(&mut self, now: Instant) {
        let until = now + self.window;
        for e in self.entries.iter_mut().rev() {
            if e.keep_until.is_some() {
                break;
            }
            e.keep_until = Some(until);
        }
    }

    /// Forgets what is past its window at `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.keep_until.is_some_and(|until| until <= now))
        {
            self.entries.pop_front();
        }
    }

    pub(crate) fn entries(&self) -> impl ExactSizeIterator<Item = &Logged> {
        self.entries.iter()
    }
}

/// A `NodeKick` item.
pub(crate) fn item(user_id: u64, device: Option<&str>, kick: Kick) -> NodeItem {
    NodeItem {
        item: Some(Item::Kick(v1::NodeKick {
            user_id,
            device_id: device.unwrap_or_default().to_owned(),
            reason: kick.reason,
            all_devices: device.is_none(),
            issued_at_ms: kick.issued_at_ms,
        })),
    }
}

/// The latest `opened_at_ms` (this node's clock) of a session a kick ends, for a kick that
/// checks nothing in the store (an operator's, a `REPLACED`): the kick's age by the sender's
/// clock (from its issue to the batch's hand-over) taken back from when the batch arrived
/// here. So only the two nodes' elapsed times are compared, never their clocks; the time in
/// transit makes the cut later, never earlier. A session opened at the cut or before ends: a
/// tie cannot be ordered, and two sessions of a device ending is repaired by a login, two
/// staying is not.
///
/// A `REPLACED` kick's cut is also at most its open time plus [`NODE_CLOCKS_APART_MAX_MS`]
/// (both are later than the replacing session's open time by this node's clock, when the
/// clocks are that close): a kick held up in transit (a congested link) then ends no session
/// of the device opened here more than that bound after the replacing one. An operator's
/// kick keeps the age alone: past the bound it would spare a session it was meant to end.
/// `None`: not stamped (an older node): every session named ends.
pub(crate) fn opened_by_ms(k: &v1::NodeKick, sent_at_ms: u64, received_at_ms: u64) -> Option<u64> {
    if k.issued_at_ms == 0 || sent_at_ms == 0 {
        return None;
    }
    let by_age = received_at_ms.saturating_sub(sent_at_ms.saturating_sub(k.issued_at_ms));
    if k.reason == KickReason::Replaced as i32 {
        return Some(by_age.min(k.issued_at_ms.saturating_add(NODE_CLOCKS_APART_MAX_MS)));
    }
    Some(by_age)
}

/// What a kick's reason makes the receiver check before it ends a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// The session's token must be gone from the store.
    TokenGone,
    /// The account must still be disabled.
    Disabled,
    /// Nothing to check (an operator's kick: the device may log in again at once).
    None,
}

pub(crate) fn check_for(reason: KickReason) -> Check {
    match reason {
        KickReason::PasswordChanged | KickReason::DeviceRevoked | KickReason::LoggedOut => {
            Check::TokenGone
        }
        KickReason::AccountDisabled => Check::Disabled,
        _ => Check::None,
    }
}

/// The stores a received kick is checked against (the store of record's accounts).
#[derive(Clone)]
pub struct KickStores {
    pub accounts: Arc<dyn AccountStore>,
    pub admin: Arc<dyn AccountAdminStore>,
}

impl KickStores {
    /// Whether a session of `user` with token `hash` is to end for a kick that checks `check`:
    /// the one rule of a received kick and of the check a node makes when it comes back
    /// (`recheck.rs`). `Err`: the store did not answer.
    pub(crate) fn verdict(
        &self,
        user: u64,
        hash: &TokenHash,
        check: Check,
    ) -> Result<bool, StoreError> {
        Ok(match check {
            Check::TokenGone => !matches!(self.accounts.token(hash)?, Some(t) if t.user_id == user),
            Check::Disabled => self.admin.user_flags(user)?.is_some(),
            Check::None => true,
        })
    }

    /// [`Self::verdict`] for a received kick: a store error ends the session (fail closed).
    fn ends(&self, user: u64, hash: &TokenHash, check: Check) -> bool {
        self.verdict(user, hash, check).unwrap_or(true)
    }
}

/// A session a kick names: (user, connection, its token, the reason).
type Named = (u64, ConnRef, TokenHash, KickReason);

impl Link {
    /// A kick of a user's sessions (`device`'s only, when given), to every other live node:
    /// an operator's disable or a password change on this node ends the user's sessions
    /// everywhere. Each peer remembers it until that node confirms it applied it, and sends it
    /// again on each new stream meanwhile (`kicks.rs`): a link that is down or breaks delays a
    /// kick, it does not lose it.
    pub(crate) fn send_kick(
        self: &Arc<Self>,
        user_id: u64,
        device: Option<&str>,
        reason: v1::KickReason,
    ) {
        let kick = Kick {
            reason: reason as i32,
            issued_at_ms: crate::time::now_ms(),
        };
        self.kick_every_peer(user_id, device, kick, true);
    }

    /// A device's `REPLACED` kick (a login of that device here, whose session opened at
    /// `opened_at_ms`: `Session::opened_at_ms`), sent once to every other live node and not
    /// remembered: every named login sends one, so remembered they would fill a down peer's
    /// `cluster.peer_kicks_pending_max` in a reconnect storm and push out the revocations and
    /// disables that must not be lost. A lost one leaves a session whose credentials are still
    /// valid, until its own connection ends. It carries the open time, not the time it is
    /// sent: a login that took long after it registered must not end a session of the device
    /// registered meanwhile on another node.
    pub(crate) fn send_kick_once(self: &Arc<Self>, user_id: u64, device: &str, opened_at_ms: u64) {
        let kick = Kick {
            reason: v1::KickReason::Replaced as i32,
            issued_at_ms: opened_at_ms,
        };
        self.kick_every_peer(user_id, Some(device), kick, false);
    }

    /// Sends `kick` to the nodes of the view; `remember`: each peer keeps it until confirmed,
    /// and the log keeps it for nodes that enter the view later (module comment).
    fn kick_every_peer(
        self: &Arc<Self>,
        user_id: u64,
        device: Option<&str>,
        kick: Kick,
        remember: bool,
    ) {
        // Logged and the view read under the newcomers' lock, which their sweep takes after
        // reading the view: a node missing from the view read here is either in `known`
        // already (then it was in this view too) or new to the sweep after, which finds the
        // kick in the log.
        let view = if remember {
            let mut look = self.newcomers.lock();
            let view = self.view_nodes();
            let fresh = view.as_ref().is_some_and(|v| v.joined && v.fresh);
            let dropped = look.kicks.log(user_id, device, kick, Instant::now(), fresh);
            if dropped > 0 {
                metrics::counter!("ringchat_cluster_kick_log_dropped_total")
                    .increment(dropped as u64);
                tracing::error!(
                    user = user_id,
                    "cluster: peer_kicks_pending_max kicks in the log already; the oldest is dropped, a node entering the view later will not get it"
                );
            }
            view
        } else {
            self.view_nodes()
        };
        let Some(view) = view else {
            return;
        };
        let send: fn(&Peer, u64, Option<&str>, Kick) = if remember {
            Peer::kick
        } else {
            Peer::kick_once
        };
        for node in view.nodes.iter().filter(|n| n.record.node_id != self.me) {
            if let Some(peer) = self.peer(&node.record.node_id, &node.record.advertise_addr) {
                send(&peer, user_id, device, kick);
            }
        }
    }

    /// The kicks of one incoming batch (sent at `sent_at_ms`, the batch's stamp): checked
    /// against the store and applied off the receiving task (a store read never holds up the
    /// link's frames), then confirmed to the sender on the stream's response half (`acks`; a
    /// confirmation that does not fit is made up by the sender sending the kick again on its
    /// next stream).
    pub(super) fn apply_kicks(
        self: &Arc<Self>,
        kicks: Vec<v1::NodeKick>,
        sent_at_ms: u64,
        acks: mpsc::Sender<NodeBatch>,
    ) {
        let received_at_ms = crate::time::now_ms();
        let link = Arc::clone(self);
        tokio::spawn(async move {
            link.kick_checked(&kicks, sent_at_ms, received_at_ms).await;
            let confirm = NodeBatch {
                from_node: link.me.clone(),
                items: kicks
                    .into_iter()
                    .map(|k| NodeItem {
                        item: Some(Item::Kick(k)),
                    })
                    .collect(),
                missed: false,
                sent_at_ms: 0,
            };
            let _ = acks.try_send(confirm);
        });
    }

    async fn kick_checked(&self, kicks: &[v1::NodeKick], sent_at_ms: u64, received_at_ms: u64) {
        let mut named: Vec<Named> = Vec::new();
        let mut spared = 0u64;
        {
            let sessions = self.sessions.read();
            for k in kicks {
                let reason = KickReason::try_from(k.reason).unwrap_or(KickReason::Unspecified);
                let device = (!k.all_devices).then_some(k.device_id.as_str());
                // An operator's kick or a REPLACED is checked against nothing in the store: a
                // session opened since it was issued (a login after the kick, which reached
                // here late: a link that was down, a kick sent again), or since the replacing
                // session opened, is not the one it meant.
                let opened_by = match check_for(reason) {
                    Check::None => opened_by_ms(k, sent_at_ms, received_at_ms),
                    Check::TokenGone | Check::Disabled => None,
                };
                for s in sessions
                    .of_user(k.user_id)
                    .iter()
                    .filter(|s| device.is_none_or(|d| *s.device_id == *d))
                {
                    if opened_by.is_some_and(|by| s.opened_at_ms > by) {
                        spared += 1;
                        continue;
                    }
                    named.push((k.user_id, s.conn, s.token_hash, reason));
                }
            }
        }
        if spared > 0 {
            metrics::counter!("ringchat_cluster_kicks_spared_total").increment(spared);
        }
        if named.is_empty() {
            return;
        }
        let n = named.len();
        let ends: Vec<bool> = match self.kick_stores.get().cloned() {
            None => vec![true; n],
            Some(stores) => {
                let asked: Vec<(u64, TokenHash, Check)> = named
                    .iter()
                    .map(|(u, _, h, r)| (*u, *h, check_for(*r)))
                    .collect();
                tokio::task::spawn_blocking(move || {
                    asked
                        .iter()
                        .map(|(u, h, c)| stores.ends(*u, h, *c))
                        .collect()
                })
                .await
                .unwrap_or_else(|_| vec![true; n])
            }
        };
        for ((_, conn, _, reason), end) in named.into_iter().zip(ends) {
            if !end {
                metrics::counter!("ringchat_cluster_kicks_spared_total").increment(1);
                continue;
            }
            self.end_session(conn, reason).await;
        }
    }

    /// Tells `conn`'s shard to end it with `reason`.
    pub(super) async fn end_session(&self, conn: ConnRef, reason: KickReason) {
        if let Some(tx) = self.shards.get(usize::from(conn.shard)) {
            let _ = tx
                .send(ShardEvent::Kick {
                    conn: conn.conn,
                    reason,
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kick of `reason` issued at `at` ms.
    fn k(reason: i32, at: u64) -> Kick {
        Kick {
            reason,
            issued_at_ms: at,
        }
    }

    fn kick(user: u64, device: Option<&str>, kick: Kick) -> v1::NodeKick {
        match item(user, device, kick).item {
            Some(Item::Kick(k)) => k,
            _ => unreachable!(),
        }
    }

    #[test]
    fn kicks_are_coalesced_per_user_and_forgotten_once_confirmed() {
        let mut p = Pending::new(2);
        p.record(1, Some("phone"), k(11, 1)).unwrap();
        p.record(1, Some("phone"), k(12, 2)).unwrap();
        assert_eq!(p.items().len(), 1, "one entry per device");
        p.record(1, None, k(10, 3)).unwrap();
        assert_eq!(
            p.items(),
            vec![item(1, None, k(10, 3))],
            "every device covers one issued before"
        );
        // A device's kick issued after "every device" ends sessions opened since: kept.
        p.record(1, Some("tablet"), k(14, 4)).unwrap();
        assert_eq!(p.items().len(), 2);
        // A confirmation of an older kick leaves the newer one.
        p.confirmed(&kick(1, Some("phone"), k(12, 2)));
        p.confirmed(&kick(1, None, k(10, 2)));
        p.confirmed(&kick(1, Some("tablet"), k(14, 3)));
        assert_eq!(p.items().len(), 2, "same reason, issued earlier: kept");
        p.confirmed(&kick(1, None, k(10, 3)));
        assert_eq!(p.len(), 1);
        p.confirmed(&kick(1, Some("tablet"), k(14, 4)));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn the_set_is_bounded_in_users_and_devices() {
        let mut p = Pending::new(2);
        p.record(1, None, k(10, 1)).unwrap();
        p.record(2, Some("a"), k(11, 1)).unwrap();
        assert_eq!(p.record(3, None, k(10, 1)), Err(KickRefused::Full));
        p.record(2, Some("b"), k(11, 1)).unwrap();
        // "a", "b" and these: one more than the bound, the last one.
        for i in 0..DEVICES_PER_USER_MAX - 1 {
            p.record(2, Some(&format!("d{i}")), k(11, 5)).unwrap();
        }
        assert_eq!(p.len(), 2);
        let of_2: Vec<NodeItem> = p
            .items()
            .into_iter()
            .filter(|i| matches!(&i.item, Some(Item::Kick(k)) if k.user_id == 2))
            .collect();
        assert_eq!(
            of_2,
            vec![item(2, None, k(11, 5))],
            "too many devices: every one, as of the newest"
        );
        p.confirmed(&kick(2, None, k(11, 5)));
        p.record(3, None, k(10, 1)).unwrap();
    }

    /// A disable for every device is not replaced by device kicks that widen to every device
    /// but check only that a token is gone: the disabled account's sessions must still end.
    #[test]
    fn every_device_kicks_of_different_checks_are_kept_apart() {
        let disabled = KickReason::AccountDisabled as i32;
        let revoked = KickReason::DeviceRevoked as i32;
        let mut p = Pending::new(4);
        p.record(1, None, k(disabled, 1)).unwrap();
        for i in 0..=DEVICES_PER_USER_MAX {
            p.record(1, Some(&format!("d{i}")), k(revoked, 2)).unwrap();
        }
        let mut items = p.items();
        items.sort_by_key(|i| match &i.item {
            Some(Item::Kick(k)) => k.reason,
            _ => 0,
        });
        assert_eq!(
            items,
            vec![item(1, None, k(revoked, 2)), item(1, None, k(disabled, 1))]
        );
        p.confirmed(&kick(1, None, k(revoked, 2)));
        assert_eq!(p.items(), vec![item(1, None, k(disabled, 1))]);
    }

    fn logged(log: &KickLog) -> Vec<(u64, Option<&str>)> {
        log.entries()
            .map(|e| (e.user, e.device.as_deref()))
            .collect()
    }

    /// The log keeps at most its bound in entries (the oldest goes), and each handed-out kick
    /// for its window: from its issue under a fresh view, or from the next fresh view.
    #[test]
    fn the_kick_log_is_bounded_in_entries_and_in_time_from_its_hand_out() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut log = KickLog::new(3, 1_000);
        assert_eq!(log.log(1, None, k(10, 1), ms(0), true), 0);
        assert_eq!(log.log(2, Some("phone"), k(11, 2), ms(100), true), 0);
        assert_eq!(log.log(3, None, k(13, 3), ms(200), true), 0);
        assert_eq!(
            log.log(4, None, k(10, 4), ms(300), true),
            1,
            "the oldest goes"
        );
        assert_eq!(logged(&log), [(2, Some("phone")), (3, None), (4, None)]);
        log.expire(ms(1_099));
        assert_eq!(log.entries().len(), 3);
        log.expire(ms(1_100));
        assert_eq!(
            logged(&log),
            [(3, None), (4, None)],
            "1 000 ms after its issue"
        );
        // Issued while the view is not fresh: kept however long until it is handed out.
        log.log(5, None, k(10, 5), ms(400), false);
        // Behind one not handed out: waits with it (expiry goes in order).
        log.log(6, None, k(10, 6), ms(500), true);
        log.expire(ms(60_000));
        assert_eq!(logged(&log), [(5, None), (6, None)]);
        log.handed_out(ms(60_000));
        log.expire(ms(60_999));
        assert_eq!(log.entries().len(), 2);
        log.expire(ms(61_000));
        assert_eq!(log.entries().len(), 0);
    }

    #[test]
    fn a_kick_ends_sessions_opened_before_its_age_by_the_senders_clock() {
        let issued = kick(1, None, k(14, 1_000));
        // Sent 4 s after it was issued (the sender's clock); arrived at 50 000 here.
        assert_eq!(opened_by_ms(&issued, 5_000, 50_000), Some(46_000));
        // The sender's clock stepped back meanwhile: no age, cut at arrival.
        assert_eq!(opened_by_ms(&issued, 900, 50_000), Some(50_000));
        // Not stamped (an older node): no cut.
        assert_eq!(opened_by_ms(&issued, 0, 50_000), None);
        assert_eq!(opened_by_ms(&kick(1, None, k(14, 0)), 5_000, 50_000), None);
    }

    /// A REPLACED kick's cut is the replacing session's open time (its `issued_at_ms`), late
    /// by its time in transit, by no more than the clocks' bound.
    #[test]
    fn a_replaced_kicks_cut_is_the_replacing_sessions_open_time_within_the_clocks_bound() {
        let replaced = KickReason::Replaced as i32;
        let opened = kick(1, Some("phone"), k(replaced, 10_000));
        // Sent 4 s after the session opened (a slow login), 1 ms in transit.
        assert_eq!(opened_by_ms(&opened, 14_000, 14_001), Some(10_001));
        // Held up 30 s in transit: cut at the clocks' bound after the open time.
        assert_eq!(
            opened_by_ms(&opened, 10_005, 40_005),
            Some(10_000 + NODE_CLOCKS_APART_MAX_MS)
        );
        // An operator's kick keeps its age alone.
        let operator = kick(1, None, k(KickReason::KickedByOperator as i32, 10_000));
        assert_eq!(opened_by_ms(&operator, 10_005, 40_005), Some(40_000));
    }

    /// The receiving side with a real sessions table: of the device's sessions, a REPLACED kick
    /// ends the one opened before the replacing session and spares the one opened after it,
    /// even when the kick arrives long after both (held up in transit); other devices stay.
    #[tokio::test]
    async fn a_replaced_kick_ends_only_the_devices_sessions_opened_before_the_replacing_one() {
        use crate::groups::online::GroupOnline;
        use crate::sessions::{Session, Sessions, SharedSessions};
        use ringchat_proto::v1::Platform;

        let sessions = SharedSessions::new(Sessions::new(8, vec![]));
        let session = |conn: u64, device: &str, opened_at_ms: u64| Session {
            conn: ConnRef { shard: 0, conn },
            device_id: device.into(),
            platform: Platform::Ios,
            token_hash: [0; 32],
            peer: std::net::Ipv4Addr::LOCALHOST.into(),
            opened_at_ms,
            token_expires_at_ms: u64::MAX,
        };
        let config = crate::cluster::ClusterConfig {
            node_id: "n2".into(),
            ..Default::default()
        };
        let (tx, mut shard) = mpsc::channel(8);
        let link = Link::new(
            &config,
            vec![tx],
            sessions.clone(),
            Arc::new(GroupOnline::new(1)),
            100,
            64 << 10,
        )
        .expect("one shard");
        // The replacing session (on the sender) opened at 10 000; its kick was handed over at
        // 10 005 and arrived here 30 s later.
        let opened_at = 10_000;
        let replaced = kick(7, Some("phone"), k(KickReason::Replaced as i32, opened_at));
        // One case at a time: this node keeps one session of a device.
        for (opened_here, ends) in [(opened_at - 1, true), (opened_at + 3_000, false)] {
            sessions
                .write()
                .open(7, session(1, "phone", opened_here))
                .unwrap();
            sessions.write().open(7, session(2, "laptop", 0)).unwrap();
            link.kick_checked(
                std::slice::from_ref(&replaced),
                opened_at + 5,
                opened_at + 30_005,
            )
            .await;
            let kicked: Vec<(u64, KickReason)> = std::iter::from_fn(|| shard.try_recv().ok())
                .map(|e| match e {
                    ShardEvent::Kick { conn, reason } => (conn, reason),
                    _ => panic!("only kicks"),
                })
                .collect();
            let want = if ends {
                vec![(1, KickReason::Replaced)]
            } else {
                vec![]
            };
            assert_eq!(
                kicked, want,
                "the phone's session opened at {opened_here}, the replacing one at {opened_at}"
            );
            sessions.write().close(7, ConnRef { shard: 0, conn: 1 });
            sessions.write().close(7, ConnRef { shard: 0, conn: 2 });
        }
    }
}

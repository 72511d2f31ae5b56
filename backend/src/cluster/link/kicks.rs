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

use std::collections::HashMap;
use std::sync::Arc;

use ringchat_proto::v1::{self, KickReason, NodeBatch, NodeItem, node_item::Item};
use tokio::sync::mpsc;

use super::Link;
use super::peer::Peer;
use crate::api::{ConnRef, ShardEvent};
use crate::cluster::NODE_CLOCKS_APART_MAX_MS;
use crate::store::{AccountAdminStore, AccountStore, TokenHash};

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
    /// Whether a session of `user` with token `hash` is to end for a kick that checks `check`.
    /// A store error ends it (fail closed).
    fn ends(&self, user: u64, hash: &TokenHash, check: Check) -> bool {
        match check {
            Check::TokenGone => {
                !matches!(self.accounts.token(hash), Ok(Some(t)) if t.user_id == user)
            }
            Check::Disabled => !matches!(self.admin.user_flags(user), Ok(None)),
            Check::None => true,
        }
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
        self.kick_every_peer(user_id, device, kick, Peer::kick);
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
        self.kick_every_peer(user_id, Some(device), kick, Peer::kick_once);
    }

    fn kick_every_peer(
        self: &Arc<Self>,
        user_id: u64,
        device: Option<&str>,
        kick: Kick,
        send: fn(&Peer, u64, Option<&str>, Kick),
    ) {
        let Some(view) = self.view_nodes() else {
            return;
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

//! Owner -> destinations: what a durable group sends to other nodes (answers to forwarded
//! writes, pushes to users, group frames, membership changes), gathered by delivery into
//! `Outbound` and queued once per destination node; typing, best effort.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use ringchat_proto::v1::{self, NodeItem, node_item::Item};

use super::peer::Peer;
use super::{Link, wire};
use crate::api::ConnRef;
use crate::observe::otlp::Traceparent;
use crate::store::ConvId;

/// What one durable group sends to other nodes, gathered by delivery in outcome order.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    items: Vec<Out>,
    /// The trace context of the write whose items are being added (delivery sets it for a
    /// traced write's outcome): each item of it carries the context to the other node.
    pub(crate) trace: Option<Traceparent>,
}

#[derive(Debug)]
enum Out {
    Answer {
        conn: ConnRef,
        request_id: u64,
        frame: Bytes,
        trace: Option<Traceparent>,
    },
    Users {
        users: Vec<u64>,
        except: ConnRef,
        frame: Bytes,
        trace: Option<Traceparent>,
    },
    Group {
        g: u64,
        seq: u64,
        except: ConnRef,
        frame: Bytes,
        trace: Option<Traceparent>,
    },
    Member {
        g: u64,
        user: u64,
        joined: bool,
    },
}

impl Outbound {
    pub(crate) fn answer(&mut self, conn: ConnRef, request_id: u64, frame: Bytes) {
        self.items.push(Out::Answer {
            conn,
            request_id,
            frame,
            trace: self.trace,
        });
    }

    pub(crate) fn users(&mut self, users: &[u64], except: ConnRef, frame: &Bytes) {
        self.items.push(Out::Users {
            users: users.to_vec(),
            except,
            frame: frame.clone(),
            trace: self.trace,
        });
    }

    /// `seq`: the message the frame pushes (0: not a message).
    pub(crate) fn group(&mut self, g: ConvId, seq: u64, except: ConnRef, frame: &Bytes) {
        self.items.push(Out::Group {
            g: g.to_wire(),
            seq,
            except,
            frame: frame.clone(),
            trace: self.trace,
        });
    }

    pub(crate) fn member(&mut self, g: ConvId, user: u64, joined: bool) {
        self.items.push(Out::Member {
            g: g.to_wire(),
            user,
            joined,
        });
    }
}

/// An item's `traceparent` field: empty when not traced.
pub(super) fn traceparent(trace: Option<Traceparent>) -> String {
    trace.map(|t| t.encode()).unwrap_or_default()
}

/// `except` as the destination at `slot` names it: its own connection, or none.
fn except_for(except: ConnRef, slot: u16) -> Option<v1::OriginConn> {
    wire::origin_of(except)
        .filter(|(s, _)| *s == slot)
        .map(|(_, o)| o)
}

/// A destination node of a durable group, and which pushes to users it takes.
struct Dest {
    peer: Arc<Peer>,
    /// The recipients the routes place there; `None`: every push (no routes here).
    users: Option<HashSet<u64>>,
    items: Vec<NodeItem>,
}

impl Dest {
    /// Those of `users` that may have a session there (none: the push does not go there).
    fn users_there(&self, users: &[u64]) -> Vec<u64> {
        match &self.users {
            None => users.to_vec(),
            Some(there) => users
                .iter()
                .copied()
                .filter(|u| there.contains(u))
                .collect(),
        }
    }
}

impl Link {
    /// The nodes a durable group's frames go to besides this one: for a push to users, the
    /// nodes where the routes (`cluster/routes/`) place any of its users (every other live
    /// node for users the routes do not know, or while they are not trusted: `nodes_of` lists
    /// those users at every node), each push to only its own users' nodes; for group
    /// audiences and membership changes, every other live node (each node resolves a group's
    /// online members itself; the owner does not read member lists to route).
    fn destinations(self: &Arc<Self>, out: &Outbound) -> Vec<Dest> {
        let Some(view) = self.view_nodes() else {
            return Vec::new();
        };
        let everyone = out
            .items
            .iter()
            .any(|i| matches!(i, Out::Group { .. } | Out::Member { .. }));
        let routes = self.attached.get().and_then(|(c, _)| c.routes());
        let placed: Option<Vec<(Arc<str>, HashSet<u64>)>> = routes.map(|routes| {
            let mut users: Vec<u64> = out
                .items
                .iter()
                .filter_map(|i| match i {
                    Out::Users { users, .. } => Some(users.iter().copied()),
                    _ => None,
                })
                .flatten()
                .collect();
            users.sort_unstable();
            users.dedup();
            if users.is_empty() {
                return Vec::new();
            }
            routes
                .nodes_of(&users)
                .nodes
                .into_iter()
                .map(|d| (d.node_id, d.users.into_iter().collect()))
                .collect()
        });
        let mut dests = Vec::new();
        for n in view.nodes.iter().filter(|n| n.record.node_id != self.me) {
            let users = match &placed {
                None => None,
                Some(placed) => {
                    let there = placed
                        .iter()
                        .find(|(id, _)| **id == *n.record.node_id)
                        .map(|(_, users)| users.clone());
                    if there.is_none() && !everyone {
                        continue;
                    }
                    Some(there.unwrap_or_default())
                }
            };
            if let Some(peer) = self.peer(&n.record.node_id, &n.record.advertise_addr) {
                dests.push(Dest {
                    peer,
                    users,
                    items: Vec::new(),
                });
            }
        }
        dests
    }

    /// On the owner, after a durable group: its answers to their origin nodes, its frames to
    /// every destination node, each node's part queued at once (or dropped at once).
    pub(crate) fn send_group(self: &Arc<Self>, out: Outbound) {
        if out.items.is_empty() {
            return;
        }
        let fans = out.items.iter().any(|i| !matches!(i, Out::Answer { .. }));
        if fans && self.view_nodes().is_some_and(|v| !v.joined) {
            self.newcomers
                .fanned_unjoined
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut per_peer: Vec<Dest> = if fans {
            self.destinations(&out)
        } else {
            Vec::new()
        };
        for item in out.items {
            match item {
                Out::Answer {
                    conn,
                    request_id,
                    frame,
                    trace,
                } => {
                    let Some((slot, origin)) = wire::origin_of(conn) else {
                        continue;
                    };
                    let answer = NodeItem {
                        item: Some(Item::Answer(v1::Answer {
                            origin: Some(origin),
                            request_id,
                            frame,
                            traceparent: traceparent(trace),
                        })),
                    };
                    match per_peer.iter_mut().find(|d| d.peer.slot == slot) {
                        Some(d) => d.items.push(answer),
                        None => {
                            if let Some(peer) = self.peer_by_slot(slot) {
                                // Takes answers only (its users are none of this group's).
                                per_peer.push(Dest {
                                    peer,
                                    users: Some(HashSet::new()),
                                    items: vec![answer],
                                });
                            }
                        }
                    }
                }
                Out::Users {
                    users,
                    except,
                    frame,
                    trace,
                } => {
                    for d in &mut per_peer {
                        let user_ids = d.users_there(&users);
                        if user_ids.is_empty() {
                            continue;
                        }
                        d.items.push(NodeItem {
                            item: Some(Item::ToUsers(v1::ToUsers {
                                user_ids,
                                except: except_for(except, d.peer.slot),
                                frame: frame.clone(),
                                traceparent: traceparent(trace),
                            })),
                        });
                    }
                }
                Out::Group {
                    g,
                    seq,
                    except,
                    frame,
                    trace,
                } => {
                    for d in &mut per_peer {
                        d.items.push(NodeItem {
                            item: Some(Item::ToGroup(v1::ToGroup {
                                group_id: g,
                                except: except_for(except, d.peer.slot),
                                frame: frame.clone(),
                                traceparent: traceparent(trace),
                                seq,
                            })),
                        });
                    }
                }
                Out::Member { g, user, joined } => {
                    for d in &mut per_peer {
                        d.items.push(NodeItem {
                            item: Some(Item::MemberChange(v1::NodeMemberChange {
                                group_id: g,
                                user_id: user,
                                joined,
                            })),
                        });
                    }
                }
            }
        }
        for d in per_peer {
            if !d.items.is_empty() {
                // Refused: counted by the peer; answers lost are answered by the origin's
                // deadline, frames lost are caught up by seq.
                let _ = d.peer.push_all(d.items);
            }
        }
    }

    /// Typing, to the other nodes where it may have an audience: for a direct conversation
    /// (`to`: its other member) the nodes the routes place them on; for a group (`to` empty)
    /// every other live node (each resolves the group's online members itself). Best effort:
    /// never waits, dropped when a peer's queue is half full or its link is down.
    pub(crate) fn send_typing(self: &Arc<Self>, conversation_id: u64, from: u64, to: &[u64]) {
        let Some(view) = self.view_nodes() else {
            return;
        };
        let routes = self.attached.get().and_then(|(c, _)| c.routes());
        let wanted: Option<Vec<Arc<str>>> = match routes {
            Some(routes) if !to.is_empty() => Some(
                routes
                    .nodes_of(to)
                    .nodes
                    .into_iter()
                    .map(|d| d.node_id)
                    .collect(),
            ),
            _ => None,
        };
        for node in view.nodes.iter().filter(|n| n.record.node_id != self.me) {
            if wanted
                .as_ref()
                .is_some_and(|w| !w.iter().any(|id| **id == *node.record.node_id))
            {
                continue;
            }
            if let Some(peer) = self.peer(&node.record.node_id, &node.record.advertise_addr) {
                peer.push_best_effort(vec![NodeItem {
                    item: Some(Item::Typing(v1::NodeTyping {
                        conversation_id,
                        from_user_id: from,
                        user_ids: to.to_vec(),
                    })),
                }]);
            }
        }
    }
}

//! Owner -> destinations: what a durable group sends to other nodes (answers to forwarded
//! writes, pushes to users, group frames, membership changes), gathered by delivery into
//! `Outbound` and queued once per destination node; typing, best effort.

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

    pub(crate) fn group(&mut self, g: ConvId, except: ConnRef, frame: &Bytes) {
        self.items.push(Out::Group {
            g: g.to_wire(),
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

impl Link {
    /// The nodes a durable group's frames go to besides this one: for pushes to users, the
    /// nodes where the routes (`cluster/routes/`) place any of them (every other live node for
    /// users the routes do not know, or while they are not trusted); for group audiences and
    /// membership changes, every other live node (each node resolves a group's online members
    /// itself; the owner does not read member lists to route).
    fn destinations(self: &Arc<Self>, out: &Outbound) -> Vec<Arc<Peer>> {
        let Some(view) = self.view_nodes() else {
            return Vec::new();
        };
        let only_users = out
            .items
            .iter()
            .all(|i| matches!(i, Out::Answer { .. } | Out::Users { .. }));
        let routes = self.attached.get().and_then(|(c, _)| c.routes());
        let wanted: Option<Vec<Arc<str>>> = match routes {
            Some(routes) if only_users => {
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
                Some(
                    routes
                        .nodes_of(&users)
                        .nodes
                        .into_iter()
                        .map(|d| d.node_id)
                        .collect(),
                )
            }
            _ => None,
        };
        view.nodes
            .iter()
            .filter(|n| n.record.node_id != self.me)
            .filter(|n| {
                wanted
                    .as_ref()
                    .is_none_or(|w| w.iter().any(|id| **id == *n.record.node_id))
            })
            .filter_map(|n| self.peer(&n.record.node_id, &n.record.advertise_addr))
            .collect()
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
        let mut per_peer: Vec<(Arc<Peer>, Vec<NodeItem>)> = if fans {
            self.destinations(&out)
                .into_iter()
                .map(|p| (p, Vec::new()))
                .collect()
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
                    match per_peer.iter_mut().find(|(p, _)| p.slot == slot) {
                        Some((_, items)) => items.push(answer),
                        None => {
                            if let Some(p) = self.peer_by_slot(slot) {
                                per_peer.push((p, vec![answer]));
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
                    for (p, items) in &mut per_peer {
                        items.push(NodeItem {
                            item: Some(Item::ToUsers(v1::ToUsers {
                                user_ids: users.clone(),
                                except: except_for(except, p.slot),
                                frame: frame.clone(),
                                traceparent: traceparent(trace),
                            })),
                        });
                    }
                }
                Out::Group {
                    g,
                    except,
                    frame,
                    trace,
                } => {
                    for (p, items) in &mut per_peer {
                        items.push(NodeItem {
                            item: Some(Item::ToGroup(v1::ToGroup {
                                group_id: g,
                                except: except_for(except, p.slot),
                                frame: frame.clone(),
                                traceparent: traceparent(trace),
                            })),
                        });
                    }
                }
                Out::Member { g, user, joined } => {
                    for (_, items) in &mut per_peer {
                        items.push(NodeItem {
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
        for (peer, items) in per_peer {
            if !items.is_empty() {
                // Refused: counted by the peer; answers lost are answered by the origin's
                // deadline, frames lost are caught up by seq.
                let _ = peer.push_all(items);
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

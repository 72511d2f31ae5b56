//! `# HELP` for the cluster families kept in the metrics registry (recorded by `cluster/**`,
//! the sequencer's `writer/{ownership,ids}.rs` and `messaging/submit.rs`). The families read
//! from the node view at scrape time carry their own help (`admin::render_metrics`).
//! Described on every server (a description alone publishes nothing), so a family shows up
//! with its help whichever node first records it.

use metrics::{describe_counter, describe_gauge};

/// Called once, after the recorder is installed (`admin::install_metrics`); a family recorded
/// without a line here fails `gateway/tests/cluster_metrics.rs`.
pub fn describe() {
    for (name, help) in COUNTERS {
        describe_counter!(*name, *help);
    }
    for (name, help) in GAUGES {
        describe_gauge!(*name, *help);
    }
}

const COUNTERS: &[(&str, &str)] = &[
    // Ownership and ids (the sequencer).
    (
        "ringchat_cluster_claims_total",
        "Conversations this node's sequencer claimed (won an epoch for in the store of record), since start.",
    ),
    (
        "ringchat_cluster_claim_round_trips_total",
        "Claim calls to the store of record (one per commit group that had conversations to claim), since start.",
    ),
    (
        "ringchat_cluster_fenced_groups_total",
        "Commit groups refused because another node had claimed one of their conversations (their writes answered UNAVAILABLE), since start.",
    ),
    (
        "ringchat_cluster_claims_refused_total",
        "Writes refused UNAVAILABLE because this node's view of the cluster is too old to claim a conversation (Redis unreachable for longer than node_ttl_ms - heartbeat_interval_ms), since start.",
    ),
    (
        "ringchat_cluster_id_leases_waited_total",
        "Times a commit group waited for a block of ids leased from the store of record (none held in advance: raise cluster.id_block_size), since start.",
    ),
    // Forwarding writes to their owner.
    (
        "ringchat_cluster_forwarded_writes_total",
        "Client writes queued on a link to the node that owns their conversation, since start.",
    ),
    (
        "ringchat_cluster_forward_refused_total",
        "Writes answered UNAVAILABLE instead of reaching their owner, by reason: full (the peer's queue), down (the link), timeout (no answer within forward_timeout_ms), pending_full (too many waiting for answers), owner_busy (this node is the owner and its sequencer's queue was full), since start.",
    ),
    (
        "ringchat_cluster_owner_unknown_total",
        "Writes refused UNAVAILABLE because no node was known to own their conversation (this node not joined yet, or missing from its own view), since start.",
    ),
    (
        "ringchat_cluster_stale_answers_total",
        "Answers from an owner that no connection here waited for any more (answered UNAVAILABLE already, or for this node's previous process), dropped, since start.",
    ),
    // The node links, per peer.
    (
        "ringchat_cluster_peer_batches_sent_total",
        "Batches handed to the link to each peer, since start.",
    ),
    (
        "ringchat_cluster_peer_items_sent_total",
        "Items (forwarded writes, answers, pushes, kicks, typing) handed to the link to each peer, since start.",
    ),
    (
        "ringchat_cluster_peer_batches_received_total",
        "Batches received from each peer, since start.",
    ),
    (
        "ringchat_cluster_peer_items_received_total",
        "Items received from each peer, since start.",
    ),
    (
        "ringchat_cluster_peer_items_dropped_total",
        "Items for each peer not sent, by reason: full (peer_queue_items_max waiting, or half of it for typing), down (the link was down), oversized (past the links' item limit), stale (a push queued longer than node_ttl_ms - 1.5 x heartbeat_interval_ms, or more than node_ttl_ms - 0.5 x heartbeat_interval_ms after this node's last heartbeat that reached Redis, when another node may own its conversation: the peer is told its sessions must Sync), since start.",
    ),
    (
        "ringchat_cluster_peer_missed_total",
        "Batches from each peer that said frames for this node were dropped on the way (sessions here are told to Sync), since start.",
    ),
    (
        "ringchat_cluster_peer_items_superseded_total",
        "Pushes from each peer dropped on arrival because the peer had opened a newer stream since the one they came on (delivered after the newer stream's, they could break a conversation's seq order; sessions here are told to Sync), since start.",
    ),
    (
        "ringchat_cluster_peer_links_up_total",
        "Links to each peer that came up (dialed and the stream accepted), since start.",
    ),
    (
        "ringchat_cluster_peer_links_down_total",
        "Links to each peer that went down, by result: lost (was up) or failed (dialing did not succeed), since start.",
    ),
    (
        "ringchat_cluster_peer_refused_total",
        "Link streams from other nodes refused UNAUTHENTICATED (no valid proof of cluster.peer_secret, or no client certificate with [cluster.tls]), since start.",
    ),
    (
        "ringchat_cluster_peer_legacy_secret_total",
        "Link streams taken from nodes of two versions before, which send cluster.peer_secret itself instead of a proof, since start.",
    ),
    (
        "ringchat_cluster_peer_older_proof_total",
        "Link streams taken from nodes of the previous version, whose proof is bound to this node's id but not to its address and start, since start.",
    ),
    (
        "ringchat_cluster_peers_new_in_view_total",
        "Times each node entered this node's view after it had joined (its next batch says it may have missed pushes), since start.",
    ),
    (
        "ringchat_cluster_peers_parked_total",
        "Peers no longer dialed because their node was out of the view for node_ttl_ms after a link failure, since start.",
    ),
    // Kicks sent to other nodes.
    (
        "ringchat_cluster_kicks_unremembered_total",
        "Kicks for each peer sent once and not remembered until confirmed, because peer_kicks_pending_max users' kicks waited for it, since start.",
    ),
    (
        "ringchat_cluster_kick_log_dropped_total",
        "Kicks dropped from the log of recent kicks (for nodes entering the view later) because peer_kicks_pending_max kicks were in it, since start.",
    ),
    (
        "ringchat_cluster_kicks_seeded_total",
        "Kicks of the log of recent kicks handed to each node when it entered this node's view, since start.",
    ),
    (
        "ringchat_cluster_rechecks_total",
        "Checks of every session here against the store, made when this node joined or came back after other nodes may have dropped it from their views, since start.",
    ),
    (
        "ringchat_cluster_recheck_sessions_ended_total",
        "Sessions those checks ended (token revoked or account disabled while this node was away), since start.",
    ),
    (
        "ringchat_cluster_kicks_spared_total",
        "Sessions a kick from another node left alone (token still valid, account no longer disabled, or opened after the kick), since start.",
    ),
    // Catching up after lost pushes.
    (
        "ringchat_cluster_sync_hints_requested_total",
        "Requests to tell every session here to Sync, by why: missed, link_lost, link_back (folded into at most one hint per sync_hint_interval_ms), since start.",
    ),
    (
        "ringchat_cluster_login_checks_total",
        "Catch-up checks after logins (cluster/login_check.rs), by outcome: active (SyncNeeded sent), quiet, closed, waited (route change not out yet; looked at again), late and failed (SyncNeeded sent without a read), overflow (the queue was full: every session here told to Sync), since start.",
    ),
    (
        "ringchat_cluster_sync_hints_total",
        "SyncNeeded hints sent to every session of this node, since start.",
    ),
    (
        "ringchat_cluster_sync_hint_sessions_total",
        "Sessions sent a SyncNeeded hint (summed over the hints), since start.",
    ),
    // gRPC listener and heartbeat.
    (
        "ringchat_cluster_grpc_conns_refused_total",
        "Connections to grpc_listen closed at once because grpc_conns_max were open, since start.",
    ),
    (
        "ringchat_cluster_grpc_handshake_timeouts_total",
        "Connections to grpc_listen closed because their handshake did not start within grpc_handshake_timeout_ms, since start.",
    ),
    (
        "ringchat_cluster_grpc_idle_closed_total",
        "Connections to grpc_listen closed because they served no request (a status call, or a peer's link) for grpc_idle_timeout_ms, since start.",
    ),
    (
        "ringchat_cluster_heartbeat_failures_total",
        "Heartbeats that could not write this node's record or read the view from Redis (the view is then stale), since start.",
    ),
    // Routes (where users' devices are).
    (
        "ringchat_cluster_route_cache_hits_total",
        "Users whose nodes the route cache knew when a message was routed, since start.",
    ),
    (
        "ringchat_cluster_route_cache_misses_total",
        "Users the route cache did not know when a message was routed (sent to every live node, and fetched), since start.",
    ),
    (
        "ringchat_cluster_route_cache_refills_total",
        "Users whose route cache entry was routed by but read again from Redis, being routes.ttl_ms old, since start.",
    ),
    (
        "ringchat_cluster_route_fill_dropped_total",
        "Batches of route cache misses (and refills) not fetched from Redis because the fill queue was full, since start.",
    ),
    (
        "ringchat_cluster_route_everywhere_total",
        "Route lookups (a commit group's recipients, a typing notice) answered with every live node because the route cache was not trusted (its subscription down or just back), by why, since start.",
    ),
    (
        "ringchat_cluster_route_session_reads_total",
        "Reads of a user's routes for its sessions on other nodes (a login's device rules, ListDevices), by outcome: ok, failed (Redis error: this node's sessions only) or unsubscribed (route subscription down: not read), since start.",
    ),
    (
        "ringchat_cluster_route_writes_total",
        "Users' route hashes sent to Redis to write (logins, closes, refreshes; failed writes too), since start.",
    ),
    (
        "ringchat_cluster_route_write_failures_total",
        "Route writes to Redis (pipelines) that failed, since start.",
    ),
    (
        "ringchat_cluster_route_pubsub_messages_total",
        "Route change messages published to (direction=out) or received from (direction=in) Redis, since start.",
    ),
    // Presence across nodes.
    (
        "ringchat_cluster_presence_messages_total",
        "Users' presence changes published to Redis (direction=out) or received from it (direction=in), one per user, since start.",
    ),
    (
        "ringchat_cluster_presence_write_failures_total",
        "Presence writes to Redis (pipelines) that failed (their users are written again), since start.",
    ),
    (
        "ringchat_cluster_presence_parts_restored_total",
        "This node's presence parts a rewrite found missing in Redis (restarted empty, flushed, expired) and published again, since start.",
    ),
    (
        "ringchat_cluster_presence_decided_total",
        "Presence changes heard from other nodes that this node decided on (and told friends here when shown state changed), since start.",
    ),
    // Chat rooms across the nodes (`rooms/cluster/`).
    (
        "ringchat_room_cluster_refused_total",
        "Room joins, infos and sends answered UNAVAILABLE on this node because the room's owner node did not answer (reason: timeout, down = its link went down, not_queued = its link refused the ask, asks_full = room_cluster asks waiting at their bound), since start.",
    ),
    (
        "ringchat_room_cluster_messages_dropped_total",
        "Room messages this node numbered as a room's owner but could not queue for a node with members there (its link down or its queue full: a gap in room_seq there), since start.",
    ),
    (
        "ringchat_room_cluster_items_dropped_total",
        "Room items from other nodes dropped (reason: stranger = a node not in the view, invalid = a part no node of this version sends, not_owner = a part of a room this node does not own by its view: answered UNAVAILABLE, its node sends it again later), since start.",
    ),
    (
        "ringchat_room_cluster_resend_overflows_total",
        "Room parts that did not reach their owner node while 16,384 rooms already waited to be sent again: every room with a session here is sent again instead (a room emptied meanwhile is not), since start.",
    ),
    // Group membership repairs after a change from another node may have been lost
    // (`groups/online/repair.rs`).
    (
        "ringchat_group_online_repairs_wanted_total",
        "Times this node asked to re-read the groups of its online users because frames from another node may have been lost (a missed batch, a link that ended or came back); other nodes' group pushes are held until a pass is done, since start.",
    ),
    (
        "ringchat_group_online_repair_failures_total",
        "Passes re-reading the online users' groups that failed and were tried again a second later (a store error; delivery not done within 5 s with what the pass read; a user's groups changing on every read), the log line says which; group pushes from other nodes stay held meanwhile; since start.",
    ),
    (
        "ringchat_group_remote_frames_held_total",
        "Group frames from other nodes not pushed to this node's sessions because a pass re-reading the online users' groups was due (they are told to Sync once it is done), since start.",
    ),
    (
        "ringchat_room_cluster_parts_expired_total",
        "Room parts this owner node dropped because their node had not reported them for 30 s (every node reports every part every 10 s): a part whose report of emptying was lost, since start.",
    ),
    (
        "ringchat_room_cluster_reregistrations_total",
        "Times this node sent its rooms' parts to their owners because the node view changed, since start.",
    ),
];

const GAUGES: &[(&str, &str)] = &[
    (
        "ringchat_cluster_peers_welcomed",
        "Other nodes of the view this node has taken in; each that entered after this node joined was told it may have missed pushes.",
    ),
    (
        "ringchat_cluster_grpc_conns",
        "Connections open on grpc_listen (at most grpc_conns_max).",
    ),
    (
        "ringchat_cluster_peer_queue_items",
        "Items queued for each peer's link (at most peer_queue_items_max).",
    ),
    (
        "ringchat_cluster_kicks_pending_users",
        "Users with kicks each peer has not confirmed yet (at most peer_kicks_pending_max).",
    ),
    (
        "ringchat_cluster_nodes_missing_kept",
        "Nodes kept in the view though missing from the last read of Redis (they leave after node_ttl_ms).",
    ),
    (
        "ringchat_cluster_route_cache_users",
        "Users held in the route cache (at most cluster.routes.cache_users_max).",
    ),
    (
        "ringchat_room_cluster_owned",
        "Chat rooms this node keeps as their owner node (each node's part of each).",
    ),
    (
        "ringchat_room_cluster_resend_rooms",
        "Chat rooms whose part did not reach their owner node and is to be sent again (at most 16,384).",
    ),
];

//! The cluster scenario's report as text.

use std::fmt::Write as _;

use super::ClusterReport;

pub fn table(r: &ClusterReport) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "cluster-pairs: {} pairs ({:?} placement: {} cross-node), group of {} on {} nodes, {} B, window {}, {:.0} s",
        r.pairs,
        r.placement,
        r.cross_node_pairs,
        r.group_members,
        r.group_nodes,
        r.size_bytes,
        r.window,
        r.duration_s
    );
    let _ = writeln!(
        t,
        "  clients per node    start {:?}  end {:?}",
        r.clients_per_node_start, r.clients_per_node_end
    );
    let _ = writeln!(
        t,
        "  messages            {:>10} sent, {} acked, {} resent after UNAVAILABLE, {} abandoned unacked",
        r.sent, r.acked, r.retried, r.abandoned
    );
    let _ = writeln!(
        t,
        "  delivered           {:>10} ({:.0}/s), {} caught up by Sync ({} gap Syncs), {} redelivered (kept once)",
        r.delivered, r.delivered_msgs_per_s, r.caught_up, r.gap_syncs, r.redelivered
    );
    let l = &r.latency_us;
    let _ = writeln!(
        t,
        "  latency             p50 {} µs  p90 {} µs  p99 {} µs  max {} µs",
        l.p50, l.p90, l.p99, l.max
    );
    let _ = writeln!(
        t,
        "  lost {}  unchecked clients {}  duplicates {}  out of order {}  corrupt {}  errors {}",
        r.lost, r.deliveries_unchecked, r.duplicates, r.out_of_order, r.corrupt, r.errors
    );
    for (kind, n) in &r.error_kinds {
        let _ = writeln!(t, "    {kind}: {n}");
    }
    let _ = writeln!(
        t,
        "  final Sync check    {} conversations ({} not fetched): {} seq gaps, {} stored twice, {} acked missing",
        r.conversations_checked,
        r.conversations_unchecked,
        r.seq_gaps,
        r.stored_twice,
        r.acked_missing
    );
    for p in &r.problems {
        let _ = writeln!(t, "    {p}");
    }
    let ms = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
    let _ = writeln!(
        t,
        "  drops               {}{}; reconnects {} by {} clients; every client served again after {}; longest outage {}; {} never came back",
        r.drops,
        if r.expect_drops {
            " (expected)"
        } else {
            " (none expected)"
        },
        r.reconnects,
        r.clients_reconnected,
        ms(r.served_again_ms),
        ms(r.outage_max_ms),
        r.unserved_clients
    );
    let _ = writeln!(
        t,
        "  login refusals      {} at setup, {} while reconnecting (told to come back later, retried after retry_after_ms)",
        r.setup_refusals, r.reconnect_refusals
    );
    match (r.server_cpu_s, r.server_cpu_us_per_msg) {
        (Some(cpu), Some(per)) => {
            let _ = writeln!(
                t,
                "  server CPU          {cpu:.2} s over pids {:?} = {per:.1} µs per delivered message",
                r.server_pids
            );
        }
        _ => {
            let _ = writeln!(t, "  server CPU          not measured (no --server-pid)");
        }
    }
    t
}

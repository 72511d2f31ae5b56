//! Which node sequences a conversation: rendezvous (highest random weight) hashing over the live
//! nodes. Every node computes the same answer from the same view without talking to the
//! others; a node that leaves moves only the conversations it had, and a node that joins takes
//! about 1/n of them, from every node alike.
//!
//! The hashes here must never change between versions (nodes of two versions must agree on the
//! owner), so they are spelled out instead of taken from a hasher whose output may change.

/// A node's number: a stable 64-bit hash of its `node_id` (FNV-1a, then mixed). It is also the
/// `node` an [`crate::store::OwnerRecord`] names.
pub fn node_number(node_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// A chat room's key, the `conv` its owner is found by: a stable hash of its name (FNV-1a,
/// then mixed, as [`node_number`]) with the top bit set, so it never equals a conversation's
/// wire id and a room does not land where that conversation does by construction.
pub fn room_key(name: &str) -> u64 {
    node_number(name) | 1 << 63
}

/// The weight of `conv` (its wire id) on node `node` (its [`node_number`]).
pub fn weight(conv: u64, node: u64) -> u64 {
    mix(conv ^ mix(node))
}

/// Of `nodes` (each with its node number), the one that owns `conv`: the highest weight;
/// `None` when there is no node. Ties (two live nodes cannot share a number: their ids would
/// collide) go to the first.
pub fn owner<T>(conv: u64, nodes: impl IntoIterator<Item = (T, u64)>) -> Option<T> {
    let mut best: Option<(T, u64)> = None;
    for (node, number) in nodes {
        let w = weight(conv, number);
        if best.as_ref().is_none_or(|(_, bw)| w > *bw) {
            best = Some((node, w));
        }
    }
    best.map(|(node, _)| node)
}

/// Index in `nodes` (node numbers) of `conv`'s owner.
pub fn owner_index(conv: u64, nodes: &[u64]) -> Option<usize> {
    owner(conv, nodes.iter().copied().enumerate())
}

/// The 64-bit finaliser of MurmurHash3: every input bit flips about half the output bits.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONVS: u64 = 30_000;

    fn nodes(ids: &[&str]) -> Vec<u64> {
        ids.iter().map(|id| node_number(id)).collect()
    }

    fn owners(nodes: &[u64]) -> Vec<u64> {
        (1..=CONVS)
            .map(|c| nodes[owner_index(c, nodes).expect("nodes")])
            .collect()
    }

    #[test]
    fn stable_across_versions_and_orders() {
        // Pinned: a change here splits a mixed-version cluster's idea of who owns what.
        assert_eq!(node_number("n1"), 0xf5c0_8557_ac1e_5104);
        assert_eq!(weight(1, 2), 0x8d4f_874c_404d_de5c);
        assert_eq!(room_key("lobby"), node_number("lobby") | 1 << 63);
        assert_eq!(room_key("lobby"), 0xb4ea_f00b_b6c1_c767, "pinned");
        let a = nodes(&["n1", "n2", "n3"]);
        let b = nodes(&["n3", "n1", "n2"]);
        assert_eq!(owners(&a), owners(&b));
        assert_eq!(owner_index(7, &[]), None);
        assert_eq!(owner_index(7, &a[..1]), Some(0));
    }

    #[test]
    fn balanced() {
        let ids = ["n1", "n2", "n3", "n4", "n5"];
        let nodes = nodes(&ids);
        let owners = owners(&nodes);
        let fair = CONVS / nodes.len() as u64;
        for n in &nodes {
            let count = owners.iter().filter(|o| *o == n).count() as u64;
            // Within 5% of a fair share (the binomial spread here is about 1%).
            assert!(
                count.abs_diff(fair) * 20 < fair,
                "node {n:x} owns {count} of {CONVS}, fair is {fair}"
            );
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_conversations() {
        let all = nodes(&["n1", "n2", "n3", "n4"]);
        let before = owners(&all);
        let gone = all[2];
        let rest: Vec<u64> = all.iter().copied().filter(|&n| n != gone).collect();
        let after = owners(&rest);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if *b == gone {
                moved += 1;
                assert_ne!(*a, gone);
            } else {
                assert_eq!(a, b, "a conversation of a node that stayed moved");
            }
        }
        // The one that left had about a quarter.
        assert!(moved * 5 > CONVS && moved * 3 < CONVS, "moved {moved}");
    }

    #[test]
    fn a_node_joining_takes_about_its_share_and_nothing_else_moves() {
        let three = nodes(&["n1", "n2", "n3"]);
        let mut four = three.clone();
        let new = node_number("n4");
        four.push(new);
        let before = owners(&three);
        let after = owners(&four);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as u64;
        assert!(before.iter().zip(&after).all(|(b, a)| a == b || *a == new));
        let fair = CONVS / 4;
        assert!(moved.abs_diff(fair) * 20 < fair, "moved {moved}");
    }
}

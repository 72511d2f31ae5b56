use super::*;

fn v6(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The `i`th /64 of 2001:db8:<site>::/48.
fn subnet(site: u16, i: u16) -> IpAddr {
    IpAddr::from([0x2001, 0xdb8, site, i, 0, 0, 0, 1])
}

#[test]
fn a_client_is_its_ipv4_address_or_its_ipv6_64_and_its_network_a_24_or_a_48() {
    let a = v6("2001:db8:1:2:aaaa::1");
    let b = v6("2001:db8:1:2:bbbb::9");
    let other = v6("2001:db8:1:3::1");
    assert_eq!(client_key(a), client_key(b));
    assert_ne!(client_key(a), client_key(other));
    assert_eq!(network_key(a), network_key(other));
    assert_eq!(network_key(a), v6("2001:db8:1::"));
    assert_ne!(network_key(a), network_key(v6("2001:db8:2::1")));
    let v4: IpAddr = "192.0.2.7".parse().unwrap();
    assert_eq!(client_key(v4), v4);
    assert_eq!(client_key(v6("::ffff:192.0.2.7")), v4);
    assert_eq!(network_key(v4), "192.0.2.0".parse::<IpAddr>().unwrap());
    assert_eq!(network_key(v6("::ffff:192.0.2.7")), network_key(v4));
    assert_eq!(region_key(v4), "192.0.0.0".parse::<IpAddr>().unwrap());
}

#[test]
fn a_share_is_keyed_by_the_ipv4_address_or_the_ipv6_48() {
    // Four /64s of one site are one share; another site is another.
    assert_eq!(share_key(subnet(1, 0)), share_key(subnet(1, 3)));
    assert_eq!(share_key(subnet(1, 3)), v6("2001:db8:1::"));
    assert_ne!(share_key(subnet(1, 0)), share_key(subnet(2, 0)));
    // An IPv4 address is its own share, not its /24's.
    let v4: IpAddr = "192.0.2.7".parse().unwrap();
    assert_eq!(share_key(v4), v4);
    assert_ne!(share_key(v4), share_key("192.0.2.8".parse().unwrap()));
    assert_eq!(share_key(v6("::ffff:192.0.2.7")), v4);
}

#[test]
fn counts_per_key_within_a_window_then_starts_over() {
    let l = WindowLimiter::new(2, 1000, 10);
    assert_eq!(l.take("a", 0, 0), Ok(()));
    assert_eq!(l.take("a", 0, 10), Ok(()));
    assert_eq!(l.take("a", 0, 400), Err(600));
    assert_eq!(l.take("b", 0, 400), Ok(()), "keys are counted apart");
    assert_eq!(l.take("a", 0, 1000), Ok(()), "a new window");
}

#[test]
fn a_full_table_of_live_keys_drops_the_biggest_groups_oldest_and_refuses_nobody() {
    // Group 1 holds three keys, group 2 one: the table is full.
    let l = WindowLimiter::new(1, 1000, 4);
    for (key, group, at) in [(10, 1, 0), (11, 1, 10), (12, 1, 20), (20, 2, 5)] {
        assert_eq!(l.take(key, group, at), Ok(()));
    }
    assert_eq!(l.take(30, 3, 100), Ok(()), "a newcomer gets in");
    // Group 1's oldest key went (it starts over); the rest are still counted.
    assert_eq!(l.take(10, 1, 200), Ok(()));
    assert!(
        l.take(20, 2, 200).is_err(),
        "the small group kept its count"
    );
    assert!(l.take(30, 3, 200).is_err());
}

#[test]
fn dead_keys_go_before_live_ones() {
    let l = WindowLimiter::new(1, 1000, 2);
    assert!(l.take(1, 1, 0).is_ok());
    assert!(l.take(2, 1, 500).is_ok());
    assert!(l.take(3, 2, 1000).is_ok(), "key 1's window ended: room");
    assert!(l.take(2, 1, 1000).is_err(), "key 2 is live and kept");
}

#[test]
fn many_64s_of_one_48_cannot_lock_out_a_client_of_another_network() {
    let l = ClientLimiter::new(2, 50, 3_600_000, 1_000);
    // An honest client elsewhere used its budget up before the flood.
    let honest = v6("2001:db8:ffff::1");
    assert!(l.take(honest, 0).is_ok());
    assert!(l.take(honest, 0).is_ok());
    let mut admitted = 0;
    for i in 0..=u16::MAX {
        while l.take(subnet(1, i), 1).is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 50, "the /48's budget, however many /64s it uses");
    assert!(matches!(
        l.take(subnet(1, 100), 1),
        Err(Limited::Network { .. })
    ));
    assert!(
        l.take(v6("2001:db8:2::1"), 2).is_ok(),
        "another network gets in"
    );
    assert!(l.take("192.0.2.1".parse().unwrap(), 2).is_ok());
    assert!(
        matches!(l.take(honest, 2), Err(Limited::Client { .. })),
        "the flood did not reset anyone else's count"
    );
}

/// Counting IPv6 networks only, an IPv4 /24 is no shared budget (a carrier's NAT pool): its
/// addresses are counted alone, while an IPv6 /48 still is one.
#[test]
fn counting_ipv6_networks_only_keeps_ipv4_per_address() {
    let l = ClientLimiter::new(2, 3, 3_600_000, 1_000).counting_networks_of(NetworksOf::Ipv6);
    let v4 = |last: u8| IpAddr::from([203, 0, 113, last]);
    for last in 1..=10 {
        assert!(l.take(v4(last), 0).is_ok() && l.take(v4(last), 0).is_ok());
    }
    assert!(matches!(l.take(v4(1), 0), Err(Limited::Client { .. })));
    for i in 0..3 {
        assert!(l.take(subnet(1, i), 0).is_ok());
    }
    assert!(matches!(
        l.take(subnet(1, 9), 0),
        Err(Limited::Network { .. })
    ));
    assert_eq!(ipv6_network_key(v4(1)), None);
    assert_eq!(ipv6_network_key(v6("::ffff:203.0.113.1")), None);
    assert_eq!(ipv6_network_key(subnet(1, 9)), Some(v6("2001:db8:1::")));
}

#[test]
fn many_networks_filling_the_tables_lose_their_own_entries_first() {
    // 4,096 /48s of one /32 each take once: both tables (200 keys) overflow many times.
    let l = ClientLimiter::new(5, 1, 3_600_000, 200);
    let honest = v6("2001:db9:1::1");
    assert!(l.take(honest, 0).is_ok());
    for site in 0..4_096u16 {
        assert!(
            l.take(subnet(site, 0), 1).is_ok(),
            "never refused for a full table"
        );
    }
    assert!(
        matches!(l.take(honest, 2), Err(Limited::Network { .. })),
        "the flood's /32 gave way, not the honest client's network"
    );
    assert!(l.take(v6("2001:dba::1"), 2).is_ok());
    let tables = l.tables.lock().unwrap();
    assert!(tables.clients.entries.len() <= 200);
    assert!(tables.networks.as_ref().unwrap().entries.len() <= 200);
}

//! The PROXY protocol (HAProxy's proxy-protocol.txt, v1 text and v2 binary), for clients that
//! reach the listeners through an L4 load balancer: `gateway.proxy_protocol_from` names the
//! balancers, whose connections must open with a header carrying the real client's address.
//! This file is the pure part: which peers are trusted, and how a header is recognised, sized
//! and read. The shard reads it off the socket once per connection (`shard/conn/proxy.rs`).
//!
//! Parsed here rather than with a crate: the shard needs the header's exact length while it is
//! still arriving (it takes only the header off the socket, so nothing behind it is lost) and
//! why one is refused (no header at all, malformed, too large), which is most of a parser; the
//! address fields are the small rest.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::security::parse_net;

/// Largest header taken, in bytes: v2's 16-byte preamble and up to 520 bytes of addresses and
/// TLVs (the most the specification asks a receiver to take). A v1 line is shorter (below).
pub const HEADER_BYTES_MAX: usize = 536;
/// Largest v1 header, in bytes, CRLF included (the specification's bound: "a 108-byte buffer
/// is always enough to store all the line and a trailing zero").
const V1_BYTES_MAX: usize = 107;
/// Entries `gateway.proxy_protocol_from` may hold, at most: each costs a comparison per
/// accepted connection.
pub const PROXY_FROM_MAX: usize = 1024;

const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v2: signature, version and command, family and transport, 2-byte length.
const V2_PREAMBLE_BYTES: usize = 16;

/// Why a trusted peer's connection was closed before its header was read whole: the `reason`
/// label of `ringchat_proxy_header_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The first bytes are not a PROXY header (a client that bypassed the balancer, or a
    /// balancer not set to send one).
    Missing,
    /// A PROXY signature followed by something the protocol does not allow.
    Malformed,
    /// Longer than [`HEADER_BYTES_MAX`] (v2) or a v1 line with no end within its 107 bytes.
    TooLarge,
    /// Not whole within `gateway.handshake_timeout_ms`.
    Timeout,
    /// The peer closed (or reset) before the header was whole: a balancer's health check
    /// that connects and leaves.
    Closed,
}

/// How many reasons [`Refused`] has (the metric's counters per shard).
pub const REFUSED_REASONS: usize = 5;

impl Refused {
    pub const ALL: [Refused; REFUSED_REASONS] = [
        Refused::Missing,
        Refused::Malformed,
        Refused::TooLarge,
        Refused::Timeout,
        Refused::Closed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refused::Missing => "missing",
            Refused::Malformed => "malformed",
            Refused::TooLarge => "too_large",
            Refused::Timeout => "timeout",
            Refused::Closed => "closed",
        }
    }
}

/// What the bytes received so far come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A header's beginning: more bytes are needed.
    Incomplete,
    /// A whole header of `len` bytes; `source` is the client's address, `None` where the
    /// header names none (v2 `LOCAL`: the balancer's own health check; `UNKNOWN`, `UNSPEC`,
    /// Unix sockets), and the TCP peer's address stands.
    Complete { len: usize, source: Option<IpAddr> },
}

/// Reads the header at the start of `buf` (which may hold what follows it too). Never panics,
/// whatever `buf` holds.
pub fn scan(buf: &[u8]) -> Result<Scan, Refused> {
    if starts_like(buf, V1_SIGNATURE) {
        scan_v1(buf)
    } else if starts_like(buf, V2_SIGNATURE) {
        scan_v2(buf)
    } else {
        Err(Refused::Missing)
    }
}

/// Whether `buf` and `signature` agree on their common length.
fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

fn scan_v1(buf: &[u8]) -> Result<Scan, Refused> {
    let window = &buf[..buf.len().min(V1_BYTES_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_BYTES_MAX {
            Err(Refused::TooLarge)
        } else {
            Ok(Scan::Incomplete)
        };
    };
    let raw = window
        .get(V1_SIGNATURE.len()..end)
        .ok_or(Refused::Malformed)?;
    let len = end + 2;
    // The rest of an UNKNOWN line is to be ignored, whatever its bytes (the spec's receiver rule).
    if raw == b"UNKNOWN" || raw.starts_with(b"UNKNOWN ") {
        return Ok(Scan::Complete { len, source: None });
    }
    let line = std::str::from_utf8(raw).map_err(|_| Refused::Malformed)?;
    let fields: Vec<&str> = line.split(' ').collect();
    let source = match fields.as_slice() {
        [family @ ("TCP4" | "TCP6"), src, dst, src_port, dst_port] => {
            let src = v1_ip(family, src).ok_or(Refused::Malformed)?;
            if v1_ip(family, dst).is_none() || !port(src_port) || !port(dst_port) {
                return Err(Refused::Malformed);
            }
            Some(src)
        }
        _ => return Err(Refused::Malformed),
    };
    Ok(Scan::Complete { len, source })
}

/// A v1 address of its family (`TCP4`: dotted quad, `TCP6`: IPv6 text).
fn v1_ip(family: &str, text: &str) -> Option<IpAddr> {
    if family == "TCP4" {
        text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// A v1 port: decimal, no sign, no leading zero, at most 65535.
fn port(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
        && text.parse::<u16>().is_ok()
}

fn scan_v2(buf: &[u8]) -> Result<Scan, Refused> {
    if buf.len() < V2_PREAMBLE_BYTES {
        return Ok(Scan::Incomplete);
    }
    let (version_command, family_transport) = (buf[12], buf[13]);
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = V2_PREAMBLE_BYTES + body_len;
    if len > HEADER_BYTES_MAX {
        return Err(Refused::TooLarge);
    }
    if version_command >> 4 != 2 {
        return Err(Refused::Malformed);
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(Refused::Malformed),
    };
    if buf.len() < len {
        return Ok(Scan::Incomplete);
    }
    // A LOCAL header's block, family byte included, is to be ignored: the balancer speaks for
    // itself (the spec's receiver rule).
    if local {
        return Ok(Scan::Complete { len, source: None });
    }
    let body = &buf[V2_PREAMBLE_BYTES..len];
    // Family: 0 unspecified, 1 IPv4, 2 IPv6, 3 Unix; transport: 0 unspecified, 1 stream, 2 datagram.
    let (family, transport) = (family_transport >> 4, family_transport & 0x0f);
    if family > 3 || transport > 2 {
        return Err(Refused::Malformed);
    }
    let source = match family {
        1 => {
            let addrs: [u8; 12] = body
                .get(..12)
                .and_then(|a| a.try_into().ok())
                .ok_or(Refused::Malformed)?;
            let src: [u8; 4] = [addrs[0], addrs[1], addrs[2], addrs[3]];
            Some(IpAddr::V4(Ipv4Addr::from(src)))
        }
        2 => {
            let addrs: [u8; 36] = body
                .get(..36)
                .and_then(|a| a.try_into().ok())
                .ok_or(Refused::Malformed)?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&addrs[..16]);
            Some(IpAddr::V6(Ipv6Addr::from(src)))
        }
        // Unspecified or a Unix socket: no IP to take.
        _ => None,
    };
    Ok(Scan::Complete { len, source })
}

/// `gateway.proxy_protocol_from`, parsed: the peers whose connections must open with a header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedPeers(Vec<IpNet>);

impl TrustedPeers {
    /// Entries that do not parse (refused by [`problems`]) are left out.
    pub fn new(list: &[String]) -> Self {
        Self(IpNet::aggregate(
            &list.iter().filter_map(|e| parse_net(e)).collect(),
        ))
    }

    /// A linear scan, once per accepted connection; an empty list costs nothing.
    pub fn contains(&self, peer: IpAddr) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let peer = peer.to_canonical();
        self.0.iter().any(|n| n.contains(&peer))
    }
}

/// What is wrong with `gateway.proxy_protocol_from`.
pub fn problems(list: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if list.len() > PROXY_FROM_MAX {
        out.push(format!(
            "gateway.proxy_protocol_from: {} entries, more than {PROXY_FROM_MAX}",
            list.len()
        ));
    }
    for entry in list {
        match parse_net(entry) {
            None => out.push(format!(
                "gateway.proxy_protocol_from: {entry:?} is neither an IP address nor a CIDR range (for example 10.0.0.1/32, 2001:db8::1/128)"
            )),
            // Every listed host may name any client address: trusting all of them is never meant.
            Some(net) if net.prefix_len() == 0 => out.push(format!(
                "gateway.proxy_protocol_from: {entry:?} trusts every address, so any client could claim any address; list only the load balancers' own addresses (for example 10.0.0.1/32)"
            )),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn v2_ipv4(src: [u8; 4]) -> Vec<u8> {
        let mut body = src.to_vec();
        body.extend_from_slice(&[10, 0, 0, 1, 0x30, 0x39, 0x1b, 0x58]);
        v2(1, 0x11, &body)
    }

    fn complete(buf: &[u8]) -> (usize, Option<IpAddr>) {
        match scan(buf) {
            Ok(Scan::Complete { len, source }) => (len, source),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn v1_headers_give_their_source_and_length_and_leave_what_follows() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 7000\r\n";
        let mut buf = line.to_vec();
        buf.extend_from_slice(b"\x00\x00\x00\x05hello");
        assert_eq!(
            complete(&buf),
            (line.len(), Some("203.0.113.7".parse().unwrap()))
        );
        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n";
        assert_eq!(
            complete(six),
            (six.len(), Some("2001:db8::7".parse().unwrap()))
        );
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), (15, None));
        assert_eq!(complete(b"PROXY UNKNOWN whatever follows\r\nX"), (32, None));
        // The longest addresses, and a line of the longest length the specification allows.
        let longest = format!(
            "PROXY TCP6 {a} {a} 65535 65535\r\n",
            a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(complete(longest.as_bytes()).0, longest.len());
        let mut unknown = b"PROXY UNKNOWN ".to_vec();
        unknown.resize(V1_BYTES_MAX - 2, b'x');
        unknown.extend_from_slice(b"\r\n");
        assert_eq!(complete(&unknown), (V1_BYTES_MAX, None));
    }

    #[test]
    fn v2_headers_give_their_source_or_none() {
        let h = v2_ipv4([198, 51, 100, 9]);
        let mut buf = h.clone();
        buf.extend_from_slice(b"\x16\x03\x01 a ClientHello");
        assert_eq!(
            complete(&buf),
            (h.len(), Some("198.51.100.9".parse().unwrap()))
        );
        let mut body = vec![0x20, 0x01, 0x0d, 0xb8];
        body.extend_from_slice(&[0; 11]);
        body.push(7);
        body.extend_from_slice(&[0; 20]);
        // TLVs after the addresses are skipped.
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        let h = v2(1, 0x21, &body);
        assert_eq!(
            complete(&h),
            (h.len(), Some("2001:db8::7".parse().unwrap()))
        );
        // LOCAL (a health check): the balancer's own address stands, whatever follows.
        assert_eq!(complete(&v2(0, 0x11, &[1; 12])), (28, None));
        assert_eq!(complete(&v2(0, 0x00, &[])), (16, None));
        // Unspecified family and Unix sockets carry no IP.
        assert_eq!(complete(&v2(1, 0x00, &[])), (16, None));
        assert_eq!(complete(&v2(1, 0x31, &[0; 216])), (232, None));
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 7000\r\n".to_vec();
        for h in [v1, v2_ipv4([1, 2, 3, 4])] {
            for cut in 0..h.len() {
                assert_eq!(scan(&h[..cut]), Ok(Scan::Incomplete), "{cut} bytes");
            }
        }
    }

    #[test]
    fn other_bytes_bad_headers_and_big_ones_are_refused() {
        // A client that skipped the balancer: a framed Hello, a ClientHello, an HTTP request.
        for first in [
            &b"\x00\x00\x00\x04abcd"[..],
            b"\x16\x03\x01\x02\x00\x01",
            b"GET /ws HTTP/1.1\r\n",
            b"PROXZ",
            b"\r\n\r\n\0\r\nQUIZ",
        ] {
            assert_eq!(scan(first), Err(Refused::Missing), "{first:?}");
        }
        for bad in [
            &b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY \xff\xfe\r\n",
            b"PROXY \r\n",
        ] {
            assert_eq!(
                scan(bad),
                Err(Refused::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // v2: another version, an unknown command, family or transport, addresses cut short.
        let mut other_version = v2_ipv4([1, 2, 3, 4]);
        other_version[12] = 0x11;
        assert_eq!(scan(&other_version), Err(Refused::Malformed));
        assert_eq!(scan(&v2(2, 0x11, &[0; 12])), Err(Refused::Malformed));
        assert_eq!(scan(&v2(1, 0x41, &[0; 12])), Err(Refused::Malformed));
        assert_eq!(scan(&v2(1, 0x13, &[0; 12])), Err(Refused::Malformed));
        assert_eq!(scan(&v2(1, 0x11, &[0; 11])), Err(Refused::Malformed));
        assert_eq!(scan(&v2(1, 0x21, &[0; 35])), Err(Refused::Malformed));
        // Too large: a v2 length past the bound is refused from its preamble alone, and a v1
        // line with no end within 107 bytes.
        let mut big = v2(1, 0x11, &[0; 12]);
        big[14..16].copy_from_slice(&u16::try_from(HEADER_BYTES_MAX - 15).unwrap().to_be_bytes());
        assert_eq!(scan(&big[..16]), Err(Refused::TooLarge));
        let at_bound = v2(1, 0x31, &vec![0; HEADER_BYTES_MAX - 16]);
        assert_eq!(complete(&at_bound).0, HEADER_BYTES_MAX);
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(V1_BYTES_MAX, b'1');
        assert_eq!(scan(&long), Err(Refused::TooLarge));
        assert_eq!(scan(&long[..V1_BYTES_MAX - 1]), Ok(Scan::Incomplete));
    }

    /// No input panics: every prefix of garbage, of headers with bytes changed, of random bytes.
    #[test]
    fn no_input_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let headers = [
            b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 7000\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n".to_vec(),
            v2_ipv4([1, 2, 3, 4]),
            v2(1, 0x21, &[0; 36]),
        ];
        for _ in 0..20_000 {
            let mut buf = headers[(next() % 4) as usize].clone();
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % buf.len();
                buf[at] = next() as u8;
            }
            if next() % 3 == 0 {
                buf.truncate((next() as usize) % (buf.len() + 1));
            }
            if next() % 5 == 0 {
                buf = (0..(next() % 600)).map(|_| next() as u8).collect();
            }
            if let Ok(Scan::Complete { len, .. }) = scan(&buf) {
                assert!(len <= buf.len() && len <= HEADER_BYTES_MAX);
            }
        }
    }

    #[test]
    fn trusted_peers_and_their_problems() {
        let list = ["10.0.0.0/8", "127.0.0.1/32", "::ffff:192.0.2.1"].map(str::to_owned);
        assert!(problems(&list).is_empty());
        let t = TrustedPeers::new(&list);
        assert!(t.contains("10.9.8.7".parse().unwrap()));
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(t.contains("192.0.2.1".parse().unwrap()));
        assert!(!t.contains("127.0.0.2".parse().unwrap()));
        assert!(!TrustedPeers::default().contains("127.0.0.1".parse().unwrap()));
        let p = problems(&["10.0.0/8".to_owned(), "lb.example".to_owned()]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("gateway.proxy_protocol_from: \"10.0.0/8\""),
            "{p:?}"
        );
        let many = vec!["127.0.0.1".to_owned(); PROXY_FROM_MAX + 1];
        assert!(problems(&many)[0].contains("more than 1024"));
    }

    /// A range holding every address (an IPv4-mapped one included) is refused: each host in it
    /// could forge any client address. Narrower ranges are the operator's call.
    #[test]
    fn a_range_of_every_address_is_a_problem() {
        for every in ["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96", " 10.0.0.0/0 "] {
            let p = problems(&[every.to_owned()]);
            assert_eq!(p.len(), 1, "{every}: {p:?}");
            assert!(p[0].contains("trusts every address"), "{p:?}");
        }
        assert!(problems(&["0.0.0.0/1".to_owned(), "::/1".to_owned()]).is_empty());
    }

    /// The specification's receiver rules: a v2 `LOCAL` header's family byte and a v1 `UNKNOWN`
    /// line's remaining bytes are ignored, whatever they are.
    #[test]
    fn local_and_unknown_ignore_what_they_carry() {
        assert_eq!(complete(&v2(0, 0x40, &[])), (16, None));
        assert_eq!(complete(&v2(0, 0x03, &[7; 4])), (20, None));
        assert_eq!(complete(&v2(0, 0xff, &[])), (16, None));
        assert_eq!(complete(b"PROXY UNKNOWN \xff\r\n"), (17, None));
        assert_eq!(complete(b"PROXY UNKNOWN \xc3\x28 \x80\r\nX"), (20, None));
        // A PROXY command (not LOCAL) still needs a known family, and UNKNOWN must be the word.
        assert_eq!(scan(&v2(1, 0x40, &[])), Err(Refused::Malformed));
        assert_eq!(scan(b"PROXY UNKNOWNX\r\n"), Err(Refused::Malformed));
    }
}

//! The PROXY protocol on the client listeners (`gateway.proxy_protocol_from`): a connection from
//! a trusted load balancer (here loopback, 127.0.0.1/32) opens with a v1 or v2 header, and the
//! header's source address is the client's for every per-address rule (the registration quota
//! here, the failed-login throttle's IPv6 /48, the IP deny list); a trusted peer without a
//! usable header is closed and counted; a header from anyone else is bad input as before. Real
//! server, real sockets, both I/O drivers.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::TestServer;
use common::transport::{AnyClient, Kind, REPLY_TIMEOUT, deadline};
use ringchat_bench::client::password_login;
use ringchat_proto::v1::{self, ErrorCode};
use ringchat_proto::{Body, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TRUST_LOOPBACK: (&str, &str) = ("GATEWAY__PROXY_PROTOCOL_FROM", r#"["127.0.0.1/32"]"#);
/// One registration per client address an hour: a second one from an address is refused.
const ONE_REGISTRATION: (&str, &str) = ("ACCOUNTS__REGISTRATIONS_PER_IP_PER_HOUR", "1");

/// Two clients behind the balancer, in different /24s (the quota of a network is apart).
const ALICE: [u8; 4] = [203, 0, 113, 7];
const BOB: [u8; 4] = [198, 51, 100, 9];

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn v1(source: [u8; 4]) -> Vec<u8> {
    let [a, b, c, d] = source;
    format!("PROXY TCP4 {a}.{b}.{c}.{d} 127.0.0.1 40000 7000\r\n").into_bytes()
}

/// A v2 header: `command` 1 is PROXY (with IPv4 addresses, and a TLV after them), 0 LOCAL.
fn v2(command: u8, source: [u8; 4]) -> Vec<u8> {
    let mut body = source.to_vec();
    body.extend_from_slice(&[127, 0, 0, 1, 0x9c, 0x40, 0x1b, 0x58]);
    // A PP2_TYPE_NOOP TLV: skipped.
    body.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20 | command, 0x11]);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&body);
    h
}

fn register_body(name: &str) -> Body {
    Body::Register(v1::Register {
        username: name.into(),
        password: common::PASSWORD.into(),
        ..Default::default()
    })
}

fn hello_body() -> Body {
    Body::Hello(v1::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: "proxy-protocol-test".into(),
    })
}

/// A connection to `kind`'s listener that sends `header`, then opens the transport.
async fn through_balancer(server: &TestServer, kind: Kind, header: &[u8]) -> AnyClient {
    let mut tcp = AnyClient::connect_socket(server, kind).await;
    tcp.write_all(header).await.unwrap();
    AnyClient::try_open(server, kind, tcp)
        .await
        .unwrap_or_else(|e| panic!("{kind}: opening behind a PROXY header: {e:#}"))
}

/// Registers `name` on a connection behind `header`: `true` when accepted, `false` when the
/// address's quota refused it (RATE_LIMITED); anything else fails the test.
async fn registers(server: &TestServer, kind: Kind, header: &[u8], name: &str) -> bool {
    let mut c = through_balancer(server, kind, header).await;
    c.hello().await;
    match c.request(register_body(name)).await {
        Body::RegisterOk(_) => true,
        Body::Error(e) if e.code == ErrorCode::RateLimited as i32 => false,
        other => panic!("{kind}: register {name}: {other:?}"),
    }
}

/// A family's value summed over the shards, for one `reason`.
fn refused(server: &TestServer, family: &str, reason: &str) -> f64 {
    let label = format!("reason=\"{reason}\"");
    server
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{family}{{")) && k.contains(&label))
        .map(|(_, v)| *v)
        .sum()
}

fn proxy_refused(server: &TestServer, reason: &str) -> f64 {
    refused(server, "ringchat_proxy_header_refused_total", reason)
}

/// Whether the server closes `tcp` without a byte (by the reply deadline).
async fn closed_silently(tcp: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(REPLY_TIMEOUT, tcp.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!(
            "the server answered {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_) => panic!("not closed within {REPLY_TIMEOUT:?}"),
    }
}

async fn each_header_address_has_its_own_quota(driver: &str) {
    let server = TestServer::start(&[
        TRUST_LOOPBACK,
        ONE_REGISTRATION,
        ("GATEWAY__DRIVER", driver),
    ]);
    assert!(registers(&server, Kind::Tcp, &v1(ALICE), "alice1").await);
    assert!(
        !registers(&server, Kind::Tcp, &v2(1, ALICE), "alice2").await,
        "{driver}: a second registration from alice's address (v2 this time) is refused"
    );
    assert!(
        registers(&server, Kind::Tcp, &v2(1, BOB), "bob1").await,
        "{driver}: bob, behind the same balancer, has his own quota"
    );
    assert!(!registers(&server, Kind::Tcp, &v1(BOB), "bob2").await);
    // LOCAL (the balancer's health check) and UNKNOWN keep the balancer's own address.
    assert!(registers(&server, Kind::Tcp, &v2(0, ALICE), "local1").await);
    assert!(!registers(&server, Kind::Tcp, b"PROXY UNKNOWN\r\n", "local2").await);

    // The header and the first frame in one segment: the frame is not lost.
    let mut tcp = AnyClient::connect_socket(&server, Kind::Tcp).await;
    let mut segment = v1([192, 0, 2, 1]);
    segment.extend_from_slice(&ringchat_proto::encode_to_bytes(&ringchat_proto::frame(
        99,
        hello_body(),
    )));
    tcp.write_all(&segment).await.unwrap();
    let mut c = AnyClient::try_open(&server, Kind::Tcp, tcp).await.unwrap();
    let first = c.recv(deadline(REPLY_TIMEOUT)).await.expect("HelloOk");
    assert_eq!(first.request_id, 99);
    assert!(matches!(first.body, Some(Body::HelloOk(_))), "{first:?}");
    assert!(matches!(
        c.request(register_body("carol")).await,
        Body::RegisterOk(_)
    ));
    for reason in ["missing", "malformed", "too_large", "timeout", "closed"] {
        assert_eq!(proxy_refused(&server, reason), 0.0, "{reason}");
    }
}

#[tokio::test]
async fn each_header_address_has_its_own_registration_quota_on_io_uring() {
    each_header_address_has_its_own_quota("io_uring").await;
}

#[tokio::test]
async fn each_header_address_has_its_own_registration_quota_on_epoll() {
    each_header_address_has_its_own_quota("epoll").await;
}

async fn bad_headers_are_closed_and_counted(driver: &str) {
    let server = TestServer::start(&[
        TRUST_LOOPBACK,
        ("SECURITY__DENY", r#"["203.0.113.66"]"#),
        ("GATEWAY__HANDSHAKE_TIMEOUT_MS", "1000"),
        ("GATEWAY__DRIVER", driver),
    ]);
    // The deny list applies to the header's address, not to the balancer's.
    let mut tcp = AnyClient::connect_socket(&server, Kind::Tcp).await;
    tcp.write_all(&v1([203, 0, 113, 66])).await.unwrap();
    assert!(closed_silently(&mut tcp).await, "{driver}: a denied client");
    assert_eq!(
        refused(&server, "ringchat_connections_refused_total", "ip_denied"),
        1.0
    );
    through_balancer(&server, Kind::Tcp, &v1(ALICE))
        .await
        .hello()
        .await;

    // A trusted peer with no header (a client that went around the balancer), garbage after
    // the signature, a header past the size bound, one that never ends, none at all.
    let cases: [(&str, Vec<u8>); 5] = [
        (
            "missing",
            ringchat_proto::encode_to_bytes(&ringchat_proto::frame(1, hello_body())).to_vec(),
        ),
        ("malformed", b"PROXY TCP4 not an address\r\n".to_vec()),
        ("too_large", {
            let mut h = v2(1, ALICE);
            h[14..16].copy_from_slice(&1000u16.to_be_bytes());
            h
        }),
        ("timeout", b"PROXY TCP4 203.0.113.7 127.0".to_vec()),
        ("closed", Vec::new()),
    ];
    for (reason, bytes) in cases {
        let mut tcp = AnyClient::connect_socket(&server, Kind::Tcp).await;
        if reason == "closed" {
            drop(tcp);
            common::wait_until_async(&format!("{driver}: counted as {reason}"), || {
                proxy_refused(&server, reason) == 1.0
            })
            .await;
            continue;
        }
        tcp.write_all(&bytes).await.unwrap();
        assert!(closed_silently(&mut tcp).await, "{driver}: {reason}");
        assert_eq!(proxy_refused(&server, reason), 1.0, "{driver}: {reason}");
    }
    for reason in ["missing", "malformed", "too_large", "timeout", "closed"] {
        assert_eq!(proxy_refused(&server, reason), 1.0, "{driver}: {reason}");
    }
    // The shard serves on.
    through_balancer(&server, Kind::Tcp, &v2(1, BOB))
        .await
        .hello()
        .await;
}

#[tokio::test]
async fn a_trusted_peer_without_a_usable_header_is_closed_and_counted_on_io_uring() {
    bad_headers_are_closed_and_counted("io_uring").await;
}

#[tokio::test]
async fn a_trusted_peer_without_a_usable_header_is_closed_and_counted_on_epoll() {
    bad_headers_are_closed_and_counted("epoll").await;
}

/// TLS, WebSocket and WebSocket over TLS open behind a header, which names the client on each.
#[tokio::test]
async fn tls_and_websocket_open_behind_a_header() {
    let server = Kind::Tls.server(&[TRUST_LOOPBACK, ONE_REGISTRATION]);
    assert!(registers(&server, Kind::Tls, &v2(1, ALICE), "alice1").await);
    assert!(
        !registers(&server, Kind::Wss, &v1(ALICE), "alice2").await,
        "the TLS and wss connections are both alice's"
    );
    assert!(registers(&server, Kind::Ws, &v1(BOB), "bob1").await);
    assert!(!registers(&server, Kind::Wss, &v2(1, BOB), "bob2").await);

    // The header and the HTTP request in one segment: the request is answered.
    let mut tcp = AnyClient::connect_socket(&server, Kind::Ws).await;
    let mut segment = v1([192, 0, 2, 1]);
    segment.extend_from_slice(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(&segment).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(REPLY_TIMEOUT, tcp.read_to_end(&mut answer))
        .await
        .expect("the page within the deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Connections not logged in yet are counted per client (`gateway.prelogin_conns_per_ip_max`)
/// on the header's address, not the balancer's: past the limit a client's next connection is
/// told `SERVER_FULL` once its transport is up, on every transport, while another client behind
/// the same balancer gets in. The one turned away leaves the shard's table as its header names
/// its client, so that it takes nobody's place while it is told.
#[tokio::test]
async fn connections_not_logged_in_are_counted_per_header_address() {
    let server = Kind::Tls.server(&[
        TRUST_LOOPBACK,
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__PRELOGIN_CONNS_PER_IP_MAX", "1"),
    ]);
    let mut held = Vec::new();
    for (i, kind) in [Kind::Tcp, Kind::Ws, Kind::Tls, Kind::Wss]
        .into_iter()
        .enumerate()
    {
        // Two clients of their own on each transport: the places taken before stay taken.
        let n = 10 + u8::try_from(i).unwrap();
        let (alice, bob) = ([203, 0, 113, n], [198, 51, 100, n]);
        let mut first = through_balancer(&server, kind, &v1(alice)).await;
        first.hello().await;
        let mut second = through_balancer(&server, kind, &v2(1, alice)).await;
        second
            .expect_error_then_closed(ErrorCode::ServerFull, deadline(REPLY_TIMEOUT))
            .await;
        let mut other = through_balancer(&server, kind, &v1(bob)).await;
        other.hello().await;
        held.extend([first, other]);
    }
    assert_eq!(
        server.metric("ringchat_prelogin_refused_total{shard=\"0\"}"),
        4.0
    );
    // One turned away that stalls its opening (the upgrade never comes) holds no place in the
    // shard meanwhile: it is counted when refused, and gone from the shard's table by then.
    let mut stalled = AnyClient::connect_socket(&server, Kind::Ws).await;
    stalled.write_all(&v1([203, 0, 113, 10])).await.unwrap();
    common::wait_until_async("the stalled connection refused", || {
        server.metric("ringchat_prelogin_refused_total{shard=\"0\"}") == 5.0
    })
    .await;
    assert_eq!(
        server.metric("ringchat_connections{shard=\"0\"}"),
        held.len() as f64
    );
    for c in &mut held {
        c.ping().await;
    }
}

/// Without `gateway.proxy_protocol_from`, and from a peer it does not name, a PROXY header is
/// what it always was: bad input for the listener's protocol.
#[tokio::test]
async fn a_header_from_an_untrusted_peer_is_bad_input() {
    let plain = TestServer::start(&[]);
    for header in [v1(ALICE), v2(1, ALICE)] {
        let mut c = through_balancer(&plain, Kind::Tcp, &header).await;
        c.expect_error_then_closed(ErrorCode::FrameTooLarge, deadline(REPLY_TIMEOUT))
            .await;
    }
    // A server that trusts 127.0.0.1 only, reached from 127.0.0.2.
    let server = TestServer::start(&[TRUST_LOOPBACK, ONE_REGISTRATION]);
    let from = |ip: &str| ip.parse::<IpAddr>().unwrap();
    let untrusted =
        |addr: SocketAddr| ringchat_bench::client::tcp_connect_from(addr, Some(from("127.0.0.2")));
    let mut tcp = untrusted(server.tcp).await.expect("connect from 127.0.0.2");
    tcp.write_all(&v1(ALICE)).await.unwrap();
    let mut c = AnyClient::try_open(&server, Kind::Tcp, tcp).await.unwrap();
    c.expect_error_then_closed(ErrorCode::FrameTooLarge, deadline(REPLY_TIMEOUT))
        .await;
    // A client of its own there: served, under its own address, without a header.
    let tcp = untrusted(server.tcp).await.unwrap();
    let mut c = AnyClient::try_open(&server, Kind::Tcp, tcp).await.unwrap();
    c.hello().await;
    assert!(matches!(
        c.request(register_body("dave")).await,
        Body::RegisterOk(_)
    ));
    assert!(registers(&server, Kind::Tcp, &v1(ALICE), "alice1").await);
    for reason in ["missing", "malformed", "too_large", "timeout", "closed"] {
        assert_eq!(proxy_refused(&server, reason), 0.0, "{reason}");
        assert_eq!(proxy_refused(&plain, reason), 0.0, "{reason}");
    }
}

/// A v1 header for an IPv6 client.
fn v1_six(source: &str) -> Vec<u8> {
    format!("PROXY TCP6 {source} ::1 40000 7000\r\n").into_bytes()
}

/// A password login for an unknown `name` from `source` (behind the balancer): the error code.
async fn unknown_login(server: &TestServer, source: &str, name: &str) -> ErrorCode {
    let mut c = through_balancer(server, Kind::Tcp, &v1_six(source)).await;
    c.hello().await;
    let login = password_login(name, "not the password", "d");
    match c.request(Body::Login(login)).await {
        Body::Error(e) => ErrorCode::try_from(e.code).expect("a known code"),
        other => panic!("login {name} from {source}: {other:?}"),
    }
}

/// One holder of an IPv6 /48 has 65,536 /64s, each with `login.failures_free` of its own:
/// password logins for unknown usernames (each one costs a hash) from many /64s, each within
/// its own allowance, are refused once the /48's `login.failures_free_per_network` is used,
/// before any hashing, while a client of another /48 still logs in (and fails as usual).
#[tokio::test]
async fn failed_logins_from_many_64s_of_one_48_throttle_the_48() {
    const PER_NETWORK: u16 = 4;
    let per_network = PER_NETWORK.to_string();
    let server = TestServer::start(&[
        TRUST_LOOPBACK,
        ("LOGIN__FAILURES_FREE", "2"),
        ("LOGIN__FAILURES_FREE_PER_NETWORK", &per_network),
        // Longer than the test: a throttled network stays throttled.
        ("LOGIN__FAILURE_DELAY_MS", "600000"),
        ("LOGIN__FAILURE_DELAY_MS_MAX", "600000"),
    ]);
    // One failure from each of five /64s of 2001:db8:1::/48 (a name of its own each, so that
    // no account's throttle is met): the /48's four free ones, and the one past them that
    // starts the delays (as for `failures_free`).
    for subnet in 0..=PER_NETWORK {
        assert_eq!(
            unknown_login(
                &server,
                &format!("2001:db8:1:{subnet:x}::1"),
                &format!("nobody{subnet}")
            )
            .await,
            ErrorCode::InvalidCredentials,
            "/64 number {subnet}"
        );
    }
    // Past it each further failure is delayed: a fresh /64 of the /48 is refused at once.
    for subnet in [0x100, 0xffff] {
        assert_eq!(
            unknown_login(
                &server,
                &format!("2001:db8:1:{subnet:x}::1"),
                &format!("nobody{subnet}")
            )
            .await,
            ErrorCode::RateLimited,
            "/64 {subnet:x} of the throttled /48"
        );
    }
    // Another /48 is untouched: its clients' failures are counted as usual, and a user there
    // registers and logs in by password.
    assert_eq!(
        unknown_login(&server, "2001:db8:2::1", "nobody-else").await,
        ErrorCode::InvalidCredentials
    );
    let mut c = through_balancer(&server, Kind::Tcp, &v1_six("2001:db8:2:1::1")).await;
    let ok = c.signup("erin").await;
    assert!(ok.user_id > 0);
}

/// An IPv6 client's /48 is counted as a whole (`gateway.prelogin_conns_per_network_max`), all
/// its /64s together: past it the next connection from any of its /64s is told `SERVER_FULL`,
/// while another /48 behind the same balancer gets in; each /64 alone is still within
/// `prelogin_conns_per_ip_max`.
#[tokio::test]
async fn connections_not_logged_in_are_counted_per_ipv6_network() {
    let server = TestServer::start(&[
        TRUST_LOOPBACK,
        ("GATEWAY__CORES", "[0]"),
        ("GATEWAY__PRELOGIN_CONNS_PER_IP_MAX", "2"),
        ("GATEWAY__PRELOGIN_CONNS_PER_NETWORK_MAX", "3"),
    ]);
    let mut held = Vec::new();
    for source in ["2001:db8:7:1::1", "2001:db8:7:2::1", "2001:db8:7:3::1"] {
        let mut c = through_balancer(&server, Kind::Tcp, &v1_six(source)).await;
        c.hello().await;
        held.push(c);
    }
    let mut fourth = through_balancer(&server, Kind::Tcp, &v1_six("2001:db8:7:4::1")).await;
    fourth
        .expect_error_then_closed(ErrorCode::ServerFull, deadline(REPLY_TIMEOUT))
        .await;
    let mut other = through_balancer(&server, Kind::Tcp, &v1_six("2001:db8:8:1::1")).await;
    other.hello().await;
    held.push(other);
    assert_eq!(
        server.metric("ringchat_prelogin_refused_total{shard=\"0\"}"),
        1.0
    );
    // A place given back is the network's again.
    drop(held.remove(0));
    common::wait_until_async("the closed connection's place given back", || {
        server.metric("ringchat_connections{shard=\"0\"}") == 3.0
    })
    .await;
    let mut again = through_balancer(&server, Kind::Tcp, &v1_six("2001:db8:7:4::1")).await;
    again.hello().await;
}

/// Token logins with a token nobody holds, from `source` behind the balancer, on connections
/// of 4 logins each (a connection's refusals before login are bounded): their error codes.
async fn unknown_token_logins(server: &TestServer, source: &str, logins: u32) -> Vec<ErrorCode> {
    unknown_token_logins_behind(server, &v1_six(source), logins).await
}

/// [`unknown_token_logins`] from the client a PROXY `header` names.
async fn unknown_token_logins_behind(
    server: &TestServer,
    header: &[u8],
    logins: u32,
) -> Vec<ErrorCode> {
    const PER_CONNECTION: u32 = 4;
    let source = String::from_utf8_lossy(header);
    let mut codes = Vec::new();
    let mut c = None;
    for i in 0..logins {
        if i % PER_CONNECTION == 0 {
            let mut fresh = through_balancer(server, Kind::Tcp, header).await;
            fresh.hello().await;
            c = Some(fresh);
        }
        let login = v1::Login {
            credential: Some(v1::login::Credential::Token("made-up".into())),
            device_id: "d".into(),
            ..Default::default()
        };
        match c.as_mut().unwrap().request(Body::Login(login)).await {
            Body::Error(e) => codes.push(ErrorCode::try_from(e.code).expect("a known code")),
            other => panic!("token login behind {source:?}: {other:?}"),
        }
    }
    codes
}

/// Unknown tokens are counted per IPv6 /48 too (`UNKNOWN_TOKENS_PER_NETWORK`), not only per
/// /64: from many /64s of one /48, each well within its own `UNKNOWN_TOKENS_PER_CLIENT`, they
/// are refused once the /48's count is used, while another /48's are not. Before, each of a
/// /48's 65,536 /64s had its own count: store lookups without end.
#[tokio::test]
async fn unknown_tokens_from_many_64s_of_one_48_are_limited_per_48() {
    let per_client = ringchat_backend::UNKNOWN_TOKENS_PER_CLIENT;
    let per_network = ringchat_backend::UNKNOWN_TOKENS_PER_NETWORK;
    let server = TestServer::start(&[TRUST_LOOPBACK]);
    // Half a /64's count from each of as many /64s as the /48's count takes.
    let per_64 = per_client / 2;
    for subnet in 0..per_network.div_ceil(per_64) {
        let source = format!("2001:db8:5:{subnet:x}::1");
        let codes = unknown_token_logins(&server, &source, per_64).await;
        assert!(
            codes.iter().all(|c| *c == ErrorCode::InvalidCredentials),
            "/64 number {subnet}, within the /48's count: {codes:?}"
        );
    }
    // Past it, a fresh /64 of the /48 is refused at once, with when to come back.
    let mut c = through_balancer(&server, Kind::Tcp, &v1_six("2001:db8:5:ffff::1")).await;
    c.hello().await;
    let login = v1::Login {
        credential: Some(v1::login::Credential::Token("made-up".into())),
        device_id: "d".into(),
        ..Default::default()
    };
    match c.request(Body::Login(login)).await {
        Body::Error(e) if e.code == ErrorCode::RateLimited as i32 => {
            assert!(e.retry_after_ms > 0, "{e:?}");
        }
        other => panic!("a fresh /64 of the spent /48: {other:?}"),
    }
    // Another /48 is untouched.
    assert_eq!(
        unknown_token_logins(&server, "2001:db8:6::1", 1).await,
        [ErrorCode::InvalidCredentials]
    );
}

/// An IPv4 client's unknown tokens are counted per address only, as the password throttle
/// counts its failures: a carrier's NAT pool is one /24, and hosts there that spend their own
/// addresses' counts leave a neighbour whose token was revoked told `INVALID_CREDENTIALS`, not
/// `RATE_LIMITED`. Before, the /24 shared `UNKNOWN_TOKENS_PER_NETWORK` (150 a minute).
#[tokio::test]
async fn unknown_tokens_from_ipv4_neighbours_of_one_24_are_counted_per_address() {
    let per_client = ringchat_backend::UNKNOWN_TOKENS_PER_CLIENT;
    let per_network = ringchat_backend::UNKNOWN_TOKENS_PER_NETWORK;
    let server = TestServer::start(&[TRUST_LOOPBACK]);
    // Hosts 10.0.0.2, .3, ... each spend their whole count: together what the /24 had.
    let hosts = u8::try_from(per_network.div_ceil(per_client)).unwrap();
    for host in 2..2 + hosts {
        let codes = unknown_token_logins_behind(&server, &v1([10, 0, 0, host]), per_client).await;
        assert!(
            codes.iter().all(|c| *c == ErrorCode::InvalidCredentials),
            "10.0.0.{host}, within its own count: {codes:?}"
        );
    }
    // Each is past its own count...
    assert_eq!(
        unknown_token_logins_behind(&server, &v1([10, 0, 0, 2]), 1).await,
        [ErrorCode::RateLimited],
        "10.0.0.2 past its own count"
    );
    // ...and a neighbour in the same /24 is not.
    assert_eq!(
        unknown_token_logins_behind(&server, &v1([10, 0, 0, 2 + hosts]), 1).await,
        [ErrorCode::InvalidCredentials],
        "a neighbour of the spent addresses"
    );
}

/// `login` on a fresh connection behind `header`: its reply, which must be `LoginOk`.
async fn login_behind(server: &TestServer, header: &[u8], login: v1::Login) -> v1::LoginOk {
    let mut c = through_balancer(server, Kind::Tcp, header).await;
    c.hello().await;
    match c.request(Body::Login(login)).await {
        Body::LoginOk(ok) => ok,
        other => panic!(
            "login behind {:?}: {other:?}",
            String::from_utf8_lossy(header)
        ),
    }
}

/// A device's token logins are audited once per interval (`login_audit.rs`), but per client
/// address: the first use of a token from somewhere new (a stolen one) has its row even while
/// the device's own logins, a minute before, are being counted only. Before, the key was the
/// device alone, and a thief's logins within the device's 10 minutes left no row.
#[tokio::test]
async fn a_devices_token_used_from_a_new_address_is_audited_at_once() {
    let server = TestServer::start(&[TRUST_LOOPBACK]);
    let admin = server.api_key("ops", "admin");
    assert!(registers(&server, Kind::Tcp, &v1(ALICE), "alice").await);
    let password = password_login("alice", common::PASSWORD, "phone");
    let ok = login_behind(&server, &v1(ALICE), password).await;
    let by_token = || v1::Login {
        credential: Some(v1::login::Credential::Token(ok.token.clone())),
        device_id: "phone".into(),
        ..Default::default()
    };
    // From home, within the interval the password login started: counted, not audited.
    login_behind(&server, &v1(ALICE), by_token()).await;
    // The same token from another address: audited, naming that address.
    login_behind(&server, &v1(BOB), by_token()).await;
    let actor = format!("user:{}", ok.user_id);
    let bob = IpAddr::from(BOB).to_string();
    let mut row = None;
    common::wait_until_async("the token login from the new address audited", || {
        let (status, body) = admin.get("/api/audit?limit=200");
        assert_eq!(status, 200, "{body}");
        row = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "user.login" && e["actor"] == actor && e["from"] == bob)
            .cloned();
        row.is_some()
    })
    .await;
    let row = row.unwrap();
    assert_eq!(row["detail"], "device phone, by token", "{row}");
    // Home's token login stayed unaudited: only the password login's row is from there.
    let (_, body) = admin.get("/api/audit?limit=200");
    let alice = IpAddr::from(ALICE).to_string();
    let from_home: Vec<_> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "user.login" && e["actor"] == actor && e["from"] == alice)
        .map(|e| e["detail"].clone())
        .collect();
    assert_eq!(from_home, ["device phone"], "{body}");
}

//! Cluster mode: a revocation made on a node that could not see the user's other node still
//! ends the user's session there ("no session outlives its token"). Real `ringchat` nodes on
//! one PostgreSQL database, each reaching a Redis of the test's own through a cuttable proxy.
//! Needs the servers `scripts/test.sh` starts (RINGCHAT_TEST_POSTGRES_URL,
//! RINGCHAT_TEST_REDIS_SERVER).

mod common;

use common::cluster::{NodeEnv, free_port, unique};
use common::proxy::CutProxy;
use common::{PASSWORD, TestServer, expect_kicked_then_closed, wait_until_async};
use ringchat_backend::testkit::OwnRedis;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, KickReason};

/// n1 starts while its Redis is cut: it has not joined, its view is empty, but its shards take
/// logins. Alice, logged in on n2 (her phone), changes her password through n1: n1 had no
/// peer to send the kick to. Once n1 joins, its first view hands n2 the kicks it issued
/// meanwhile (`link/kicks.rs` `KickLog`): the phone's session ends `PASSWORD_CHANGED`. Before,
/// it lived on (a stolen token kept working on n2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_changed_on_a_node_that_had_not_joined_ends_the_session_on_another_node() {
    let db = common::store::fresh_database();
    let redis = OwnRedis::start(free_port());
    let prefix = format!("rc_kicklog_{}", unique());
    let target = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let mut proxies = Vec::new();
    let mut servers = Vec::new();
    for (id, cut) in [("n1", true), ("n2", false)] {
        let proxy = CutProxy::start(target).await;
        if cut {
            proxy.cut();
        }
        let env = NodeEnv::new(&db, &format!("redis://{}/", proxy.addr), &prefix, &id);
        servers.push(tokio::task::block_in_place(|| {
            TestServer::start(&env.pairs())
        }));
        proxies.push(proxy);
    }
    let (n1, n2) = (&servers[0], &servers[1]);
    // n2's own check of its sessions on joining (`link/recheck.rs`) has its list before the
    // phone logs in: the phone's session can only be ended by n1's kick.
    wait_until_async("n2 joins and has checked its sessions", || {
        n2.metric("ringchat_cluster_joined") == 1.0
            && n2.metric("ringchat_cluster_rechecks_total") >= 1.0
    })
    .await;
    let (mut phone, _) = n2.device("alice", "phone").await;
    assert_eq!(
        n1.metric("ringchat_cluster_joined"),
        0.0,
        "n1 cannot see n2"
    );
    let (mut laptop, _) = n1.device("alice", "laptop").await;
    let reply = laptop
        .request(Body::ChangePassword(v1::ChangePassword {
            old_password: PASSWORD.into(),
            new_password: "a new password 2".into(),
        }))
        .await
        .unwrap();
    assert!(matches!(reply, Body::ChangePasswordOk(_)), "{reply:?}");
    assert_eq!(
        n1.metric("ringchat_cluster_joined"),
        0.0,
        "n1 still cannot see n2"
    );
    phone.ping().await.expect("n2 has not heard of it yet");

    proxies[0].restore();
    assert_eq!(
        expect_kicked_then_closed(&mut phone).await,
        KickReason::PasswordChanged
    );
    laptop
        .ping()
        .await
        .expect("the session that changed it stays");
}

/// A node back in the cluster checks its sessions against the store; the sessions the store
/// did not answer for (about 15 s of rounds) end `RECONNECT`, not `DEVICE_REVOKED`: nothing
/// was revoked, and a client told its token was revoked forgets it and asks its user for the
/// password. The token logs in again once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_the_store_could_not_check_on_a_return_end_reconnect_and_keep_their_token() {
    let db = common::store::fresh_database();
    // The node reaches PostgreSQL through a proxy the test cuts.
    let (server, name) = db.rsplit_once('/').unwrap();
    let (user, pg_addr) = server.rsplit_once('@').unwrap();
    let pg = CutProxy::start(pg_addr.parse().unwrap()).await;
    let db = format!("{user}@{}/{name}", pg.addr);
    let redis = OwnRedis::start(free_port());
    let to_redis = CutProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    to_redis.cut();
    let prefix = format!("rc_recheck_{}", unique());
    let env = NodeEnv::new(&db, &format!("redis://{}/", to_redis.addr), &prefix, &"n1");
    let n1 = tokio::task::block_in_place(|| TestServer::start(&env.pairs()));
    let (mut phone, phone_ok) = n1.device("alice", "phone").await;
    assert_eq!(n1.metric("ringchat_cluster_joined"), 0.0);

    // Its first join is a return: it checks alice's session, and the store is cut.
    pg.cut();
    to_redis.restore();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let reason = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no Kicked within 60 s; log:\n{}",
            n1.log_tail()
        );
        match phone.recv_timeout().await {
            Ok(Some(frame)) => {
                if let Some(Body::Kicked(k)) = frame.body {
                    break KickReason::try_from(k.reason).unwrap();
                }
            }
            Ok(None) => panic!("closed without a Kicked frame"),
            Err(_) => {} // No frame yet: the rounds take about 15 s.
        }
    };
    assert_eq!(reason, KickReason::Reconnect);

    pg.restore();
    // The pool finds the store again within a few tries.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut c = common::account::hello(&n1).await;
        match c
            .login_token(phone_ok.user_id, &phone_ok.token, "phone")
            .await
            .unwrap()
        {
            Ok(_) => break,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the phone's token never logged in again: {e:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

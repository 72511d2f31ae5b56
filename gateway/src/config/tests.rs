//! The configuration loader's unit tests.

use super::*;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn empty_file_is_all_defaults() {
    let c = Config::parse("", no_env()).unwrap();
    assert_eq!(c.gateway.tcp_listen, "0.0.0.0:7000");
    assert_eq!(c.gateway.ws_listen, "0.0.0.0:7001");
    let addrs = c.gateway.listen_addrs().unwrap();
    assert!(
        addrs.tls.is_none() && addrs.wss.is_none(),
        "TLS needs a certificate"
    );
    assert_eq!(c.admin.listen, "127.0.0.1:8080");
}

#[test]
fn the_example_file_parses() {
    let text = include_str!("../../../ringchat.example.toml");
    let c = Config::parse(text, no_env()).unwrap();
    // Tracing across nodes is off unless an endpoint is set, in the example as by default.
    assert!(!c.observe.otlp.enabled());
    assert_eq!(c.observe.otlp, Default::default());
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
        colour = "blue"
        [gateway]
        tcp_listen = "nowhere"
        idle_timeout_ms = "soon"
        bogus = 1
        [storage]
        durability = "sometimes"
        [limits]
        sync_page_max = 0
    "#;
    let problems = Config::parse(text, no_env()).unwrap_err();
    let all = problems.join("\n");
    assert!(all.contains("colour = \"blue\": unknown key"), "{all}");
    assert!(all.contains("gateway.bogus = 1: unknown key"), "{all}");
    assert!(all.contains("gateway.idle_timeout_ms"), "{all}");
    assert!(all.contains("storage.durability"), "{all}");
    assert!(all.contains("gateway.tcp_listen"), "{all}");
    assert!(all.contains("limits.sync_page_max"), "{all}");
    assert_eq!(problems.len(), 6, "{all}");
}

#[test]
fn semantic_problems_are_listed_together() {
    let text = r#"
        [gateway]
        tcp_listen = "nowhere"
        cores = "some"
        [limits]
        sync_page_max = 0
    "#;
    let problems = Config::parse(text, no_env()).unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:?}");
}

/// The shard's outbound budget holds at least one connection's, and a backlog's deadline is
/// neither zero nor past a day.
#[test]
fn the_shard_outbound_budget_and_drain_timeout_are_checked() {
    let problems = Config::parse(
        "[gateway]\noutbound_bytes_max = 4194304\noutbound_bytes_per_shard_max = 2097152\noutbound_drain_timeout_ms = 0\n",
        no_env(),
    )
    .unwrap_err();
    let all = problems.join("\n");
    assert_eq!(problems.len(), 2, "{all}");
    assert!(
        all.contains("gateway.outbound_bytes_per_shard_max = 2097152: must be between gateway.outbound_bytes_max (4194304)"),
        "{all}"
    );
    assert!(
        all.contains("gateway.outbound_drain_timeout_ms = 0: must be between 1 and 86400000"),
        "{all}"
    );
    let c = Config::parse(
        "[gateway]\noutbound_bytes_max = 4194304\noutbound_bytes_per_shard_max = 4194304\n",
        no_env(),
    )
    .unwrap();
    assert_eq!(c.gateway.outbound_drain_timeout_ms, 60_000);
    assert_eq!(
        Config::default().gateway.outbound_bytes_per_shard_max,
        512 << 20
    );
}

/// The TLS handshake gate: an in-flight cap of 0 would refuse every TLS client, and a rate
/// past a million a second is no bound (0 is "not paced").
#[test]
fn the_tls_handshake_gate_is_checked() {
    let problems = Config::parse(
        "[gateway]\ntls_handshakes_per_shard_per_s = 2000000\ntls_handshakes_in_flight_per_shard_max = 0\n",
        no_env(),
    )
    .unwrap_err();
    let all = problems.join("\n");
    assert_eq!(problems.len(), 2, "{all}");
    assert!(
        all.contains("gateway.tls_handshakes_per_shard_per_s = 2000000: must be between 0"),
        "{all}"
    );
    assert!(
        all.contains("gateway.tls_handshakes_in_flight_per_shard_max = 0: must be at least 1"),
        "{all}"
    );
    let c = Config::parse("[gateway]\ntls_handshakes_per_shard_per_s = 0\n", no_env()).unwrap();
    assert_eq!(c.gateway.tls_handshakes_in_flight_per_shard_max, 1024);
}

#[test]
fn env_overrides_win_over_the_file() {
    let env = vec![
        (
            "RINGCHAT_GATEWAY__TCP_LISTEN".to_owned(),
            "127.0.0.1:9".to_owned(),
        ),
        ("RINGCHAT_GATEWAY__CORES".to_owned(), "[0]".to_owned()),
        ("RINGCHAT_STORAGE__DURABILITY".to_owned(), "none".to_owned()),
        ("RINGCHAT_GATEWAY__SERVER_NAME".to_owned(), "123".to_owned()),
        (
            "RINGCHAT_GATEWAY__TLS__CERT_PATH".to_owned(),
            "/etc/c.pem".to_owned(),
        ),
        ("RINGCHAT_GATEWAY__TLS__KEY_PATH".to_owned(), "k".to_owned()),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let c = Config::parse("[gateway]\ntcp_listen = \"0.0.0.0:1\"", env).unwrap();
    assert_eq!(c.gateway.tcp_listen, "127.0.0.1:9");
    assert_eq!(c.gateway.cores, Cores::List(vec![0]));
    assert_eq!(c.gateway.server_name, "123", "text keys stay text");
    assert_eq!(c.gateway.tls.cert_path, "/etc/c.pem", "nested sections");
    assert_eq!(
        c.storage.durability,
        ringchat_backend::config::Durability::None
    );
}

#[test]
fn device_policy_is_a_map_of_known_platforms() {
    let c = Config::parse("[login.policy]\nios = \"replace\"\n", no_env()).unwrap();
    assert_eq!(
        c.login.policy.get("ios"),
        Some(&ringchat_backend::config::DevicePolicy::Replace)
    );
    let unknown = Config::parse("[login.policy]\nnokia = \"replace\"\n", no_env()).unwrap_err();
    assert!(unknown[0].contains("nokia"), "{unknown:?}");
    let bad = Config::parse("[login.policy]\nweb = \"maybe\"\n", no_env()).unwrap_err();
    assert!(bad[0].contains("maybe"), "{bad:?}");
}

#[test]
fn tls_section_and_listener_switches() {
    let text = "[gateway]\ntcp_listen = \"\"\nws_listen = \"\"\n[gateway.tls]\ncert_path = \"c.pem\"\nkey_path = \"k.pem\"\n";
    let c = Config::parse(text, no_env()).unwrap();
    let addrs = c.gateway.listen_addrs().unwrap();
    assert!(addrs.tcp.is_none() && addrs.ws.is_none());
    assert_eq!(addrs.wss.unwrap().port(), 7444);
    let half = Config::parse("[gateway.tls]\ncert_path = \"c.pem\"\n", no_env()).unwrap_err();
    assert!(half[0].contains("gateway.tls"), "{half:?}");
    let none =
        Config::parse("[gateway]\ntcp_listen = \"\"\nws_listen = \"\"\n", no_env()).unwrap_err();
    assert!(none[0].contains("every client listener is off"), "{none:?}");
    let typo = Config::parse("[gateway.tls]\ncert = \"c.pem\"\n", no_env()).unwrap_err();
    assert_eq!(
        typo,
        vec![
            "config:2: gateway.tls.cert = \"c.pem\": unknown key (did you mean gateway.tls.cert_path?)"
                .to_owned()
        ]
    );
}

#[test]
fn file_connection_limits_are_checked() {
    let c = Config::parse(
        "[gateway.files]\nconns_max = 10\npipe_bytes = 65536\n",
        no_env(),
    )
    .unwrap();
    assert_eq!(c.gateway.files.conns_max, 10);
    assert_eq!(c.gateway.files.pipe_bytes, 65536);
    let text = "[gateway.files]\nconns_per_shard_max = 0\nconns_max = 0\npipe_bytes = 10\nheader_read_timeout_ms = 0\n";
    let problems = Config::parse(text, no_env()).unwrap_err();
    for key in [
        "gateway.files.conns_per_shard_max",
        "gateway.files.conns_max",
        "gateway.files.pipe_bytes",
        "gateway.files.header_read_timeout_ms",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(key)),
            "{key} not among {problems:?}"
        );
    }
}

/// The status node's HTTP listener limits parse, and 0 or an out-of-range timeout is refused.
#[test]
fn status_http_limits_are_checked() {
    let c = Config::parse(
        "[gateway.status_http]\nconns_per_ip_max = 3\nheader_read_timeout_ms = 500\n",
        no_env(),
    )
    .unwrap();
    assert_eq!(c.gateway.status_http.conns_per_ip_max, 3);
    assert_eq!(c.gateway.status_http.header_read_timeout_ms, 500);
    let text = "[gateway.status_http]\nconns_max = 0\nconns_per_ip_max = 0\nconns_per_network_max = 0\nheader_read_timeout_ms = 0\nwrite_stall_timeout_ms = 3600000\n";
    let problems = Config::parse(text, no_env()).unwrap_err();
    for key in [
        "gateway.status_http.conns_max",
        "gateway.status_http.conns_per_ip_max",
        "gateway.status_http.conns_per_network_max",
        "gateway.status_http.header_read_timeout_ms",
        "gateway.status_http.write_stall_timeout_ms",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(key)),
            "{key} not among {problems:?}"
        );
    }
}

/// A client with no pre-login connection at all could never log in: 0 is refused, by
/// `check-config` too, which reports these problems.
#[test]
fn the_pre_login_connections_per_client_are_at_least_one() {
    let c = Config::parse("[gateway]\nprelogin_conns_per_ip_max = 2\n", no_env()).unwrap();
    assert_eq!(c.gateway.prelogin_conns_per_ip_max, 2);
    assert_eq!(
        Config::default().gateway.prelogin_conns_per_ip_max,
        crate::config::PRELOGIN_CONNS_PER_IP_DEFAULT
    );
    let problems =
        Config::parse("[gateway]\nprelogin_conns_per_ip_max = 0\n", no_env()).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("gateway.prelogin_conns_per_ip_max")
                && p.ends_with("must be at least 1")),
        "{problems:?}"
    );
}

#[test]
fn unknown_env_key_is_a_problem() {
    let env = vec![("RINGCHAT_GATEWAY__NOPE".to_owned(), "1".to_owned())];
    let problems = Config::parse("", env).unwrap_err();
    assert_eq!(
        problems,
        vec!["environment variable RINGCHAT_GATEWAY__NOPE=1: gateway.nope: unknown key".to_owned()]
    );
}

fn layers(file: &str, env: &[(&str, &str)], overrides: Option<&str>) -> load::Layers {
    load::Layers {
        file: Some(load::TextLayer {
            path: "/etc/ringchat.toml".to_owned(),
            text: file.to_owned(),
        }),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        overrides: overrides.map(|text| load::TextLayer {
            path: "/data/config.overrides.toml".to_owned(),
            text: text.to_owned(),
        }),
        host: None,
    }
}

#[test]
fn problems_name_the_file_line_and_value_or_the_variable() {
    let text = "[gateway]\nserver_name = \"x\"\n\ntcp_listen = \"chat.example.com:7000\"\n[limits]\nmessages_per_s_max = 0\n";
    let env = [("RINGCHAT_GATEWAY__IDLE_TIMEOUT_MS", "soon")];
    let problems = load::load(&layers(text, &env, None)).unwrap_err();
    let all = problems.join("\n");
    assert!(
        all.contains("/etc/ringchat.toml:4: gateway.tcp_listen = \"chat.example.com:7000\": invalid socket address syntax: expected IP:PORT"),
        "{all}"
    );
    assert!(all.contains("a host name is not accepted"), "{all}");
    assert!(
        all.contains("/etc/ringchat.toml:6: limits.messages_per_s_max = 0: "),
        "{all}"
    );
    assert!(
        all.contains(
            "environment variable RINGCHAT_GATEWAY__IDLE_TIMEOUT_MS=soon: gateway.idle_timeout_ms: "
        ),
        "{all}"
    );
}

#[test]
fn an_unknown_key_gets_the_closest_known_one() {
    let text = "[gateway]\ntcp_listn = \"0.0.0.0:1\"\nmessages_per_s_max = 5\n";
    let all = load::load(&layers(text, &[], None)).unwrap_err().join("\n");
    assert!(all.contains("(did you mean gateway.tcp_listen?)"), "{all}");
    assert!(
        all.contains("(did you mean limits.messages_per_s_max?)"),
        "the same name in another section: {all}"
    );
    let nothing_close = load::load(&layers("zzzzqqqq = 1", &[], None)).unwrap_err();
    assert!(
        !nothing_close[0].contains("did you mean"),
        "{nothing_close:?}"
    );
}

#[test]
fn overrides_win_over_file_and_environment_and_keep_their_origin() {
    let text = "[limits]\nmessages_per_s_max = 100\n";
    let env = [("RINGCHAT_LIMITS__MESSAGES_PER_S_MAX", "200")];
    let loaded = load::load(&layers(
        text,
        &env,
        Some("[limits]\nmessages_per_s_max = 300\n"),
    ))
    .unwrap();
    assert_eq!(loaded.config.limits.messages_per_s_max, 300);
    assert_eq!(
        loaded.origin("limits.messages_per_s_max").place(),
        "/data/config.overrides.toml:2"
    );
    let env_only = load::load(&layers(text, &env, None)).unwrap();
    assert_eq!(env_only.config.limits.messages_per_s_max, 200);
    assert_eq!(
        env_only.origin("limits.messages_per_s_max").place(),
        "RINGCHAT_LIMITS__MESSAGES_PER_S_MAX"
    );
    assert_eq!(env_only.origin("limits.sync_page_max").place(), "");
}

#[test]
fn only_live_keys_move_and_the_rest_waits_for_a_restart() {
    let running = load::load(&layers("", &[], None)).unwrap();
    let text = "[limits]\nmessages_per_s_max = 7\n[gateway]\nqueue_events_max = 99\n";
    let candidate = load::load(&layers(text, &[], None)).unwrap();
    let (next, pending) = live::merge_live(&running, &candidate, &online_cores()).unwrap();
    assert_eq!(next.config.limits.messages_per_s_max, 7);
    assert_eq!(next.config.gateway.queue_events_max, 65_536);
    assert_eq!(pending, vec!["gateway.queue_events_max".to_owned()]);
    let changed = live::diff(&running.config, &next.config);
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].key, "limits.messages_per_s_max");
    // heartbeat must stay below the (running) idle timeout.
    let bad = load::load(&layers(
        "[gateway]\nheartbeat_interval_ms = 59000\nidle_timeout_ms = 1000000\n",
        &[],
        None,
    ))
    .unwrap();
    let mut running2 = running.clone();
    running2.config.gateway.idle_timeout_ms = 1_000_000;
    assert!(live::merge_live(&running2, &bad, &online_cores()).is_ok());
}

#[test]
fn overrides_are_set_and_removed_by_key() {
    let mut t = toml::Table::new();
    live::set(
        &mut t,
        "limits.messages_per_s_max",
        Some(toml::Value::Integer(5)),
    );
    live::set(
        &mut t,
        "security.deny",
        Some(toml::Value::Array(vec!["10.0.0.0/8".into()])),
    );
    let text = live::overrides_text(&t);
    assert!(text.contains("[limits]\nmessages_per_s_max = 5"), "{text}");
    live::set(&mut t, "limits.messages_per_s_max", None);
    assert!(!t.contains_key("limits"), "an emptied table goes: {t:?}");
}

#[test]
fn postgres_settings_are_checked_when_postgres_is_the_engine() {
    let text = r#"
        [storage]
        engine = "postgres"
        [storage.postgres]
        url = "postgres://db:notaport/ringchat"
        pool_connections_max = 0
        connect_timeout_ms = 0
        ca_file = "/nonexistent.pem"
    "#;
    let all = Config::parse(text, no_env()).unwrap_err().join("\n");
    for needle in [
        "not a PostgreSQL URL",
        "storage.postgres.pool_connections_max = 0: must be between 1 and 1024",
        "storage.postgres.connect_timeout_ms = 0",
        "only used with sslmode = \"require\"",
    ] {
        assert!(all.contains(needle), "{needle} missing in:\n{all}");
    }
    let missing = "[storage]\nengine = \"postgres\"\n";
    let all = Config::parse(missing, no_env()).unwrap_err().join("\n");
    assert!(all.contains("required with engine = \"postgres\""), "{all}");
}

/// The PostgreSQL URL (serialised hidden) survives a live change: it used to be refused on PostgreSQL (found by the PostgreSQL test pass).
#[test]
fn a_live_change_keeps_the_store_secrets() {
    let env = [
        ("RINGCHAT_STORAGE__ENGINE", "postgres"),
        (
            "RINGCHAT_STORAGE__POSTGRES__URL",
            "postgres://ringchat:secret@127.0.0.1:5432/ringchat",
        ),
    ];
    let running = load::load(&layers("", &env, None)).unwrap();
    let candidate = load::load(&layers("[limits]\nmessages_per_s_max = 7\n", &env, None)).unwrap();
    let (next, _) = live::merge_live(&running, &candidate, &online_cores()).unwrap();
    assert_eq!(next.config.limits.messages_per_s_max, 7);
    assert_eq!(
        next.config.storage.postgres.url,
        "postgres://ringchat:secret@127.0.0.1:5432/ringchat"
    );
}

#[test]
fn a_live_change_keeps_the_s3_secret() {
    let env = [
        ("RINGCHAT_FILES__STORAGE", "s3"),
        ("RINGCHAT_FILES__S3__BUCKET", "ringchat"),
        ("RINGCHAT_FILES__S3__ACCESS_KEY_ID", "id"),
        ("RINGCHAT_FILES__S3__SECRET_ACCESS_KEY", "s3-secret"),
    ];
    let running = load::load(&layers("", &env, None)).unwrap();
    let candidate = load::load(&layers("[limits]\nmessages_per_s_max = 7\n", &env, None)).unwrap();
    let (next, _) = live::merge_live(&running, &candidate, &online_cores()).unwrap();
    assert_eq!(next.config.limits.messages_per_s_max, 7);
    assert_eq!(next.config.files.s3.secret_access_key, "s3-secret");
}

/// A cluster node's secrets (serialised hidden, sentinel credentials stripped) survive a live
/// change: every change and SIGHUP on a cluster node used to be refused ("cluster.peer_secret:
/// required").
#[test]
fn a_live_change_keeps_the_cluster_secrets() {
    let peer_secret = "p".repeat(40);
    let base = [
        ("RINGCHAT_STORAGE__ENGINE", "postgres"),
        (
            "RINGCHAT_STORAGE__POSTGRES__URL",
            "postgres://ringchat:secret@127.0.0.1:5432/ringchat",
        ),
        ("RINGCHAT_CLUSTER__ENABLED", "true"),
        ("RINGCHAT_CLUSTER__NODE_ID", "n1"),
        ("RINGCHAT_CLUSTER__CLIENT_ADDRS", "[\"tcp://chat1:7000\"]"),
        ("RINGCHAT_CLUSTER__PEER_SECRET", peer_secret.as_str()),
        ("RINGCHAT_FILES__ENABLED", "false"),
    ];
    let redis = [(
        "RINGCHAT_CLUSTER__REDIS_URL",
        "redis://:redis-pw@127.0.0.1:6379/",
    )];
    let sentinel = [
        (
            "RINGCHAT_CLUSTER__SENTINEL_ADDRS",
            "[\"redis://u:sentinel-pw@10.0.0.1:26379\"]",
        ),
        ("RINGCHAT_CLUSTER__SENTINEL_MASTER", "main"),
    ];
    for extra in [&redis[..], &sentinel[..]] {
        let env: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
        let running = load::load(&layers("", &env, None)).unwrap();
        let candidate =
            load::load(&layers("[limits]\nmessages_per_s_max = 7\n", &env, None)).unwrap();
        let (next, pending) = live::merge_live(&running, &candidate, &online_cores()).unwrap();
        assert_eq!(next.config.limits.messages_per_s_max, 7);
        assert!(pending.is_empty(), "{pending:?}");
        let (now, before) = (&next.config.cluster, &running.config.cluster);
        assert_eq!(now.peer_secret, peer_secret);
        assert_eq!(now.redis_url, before.redis_url);
        assert_eq!(now.sentinel_addrs, before.sentinel_addrs);
        assert_eq!(
            next.config.storage.postgres.url,
            "postgres://ringchat:secret@127.0.0.1:5432/ringchat"
        );
        assert_eq!(
            next.origin("limits.messages_per_s_max").source(),
            ringchat_backend::live::Source::File
        );
    }
}

/// Every live key is copied by `merge_live` and names a key of the configuration.
#[test]
fn every_live_key_is_a_key_and_moves_in_a_merge() {
    let known = live::flat(&Config::default());
    for key in live::LIVE_KEYS {
        assert!(known.contains_key(*key), "{key}");
    }
    let running = load::load(&layers("", &[], None)).unwrap();
    let text = "[log]\nfilter = \"debug\"\n[security]\ndeny = [\"10.0.0.1\"]\n";
    let candidate = load::load(&layers(text, &[], None)).unwrap();
    let (next, _) = live::merge_live(&running, &candidate, &online_cores()).unwrap();
    assert_eq!(next.config.log.filter, "debug");
    assert_eq!(next.config.security.deny, vec!["10.0.0.1".to_owned()]);
}

/// A bad URL's problem names it without its password: problems are logged (a SIGHUP's
/// refusal), and the logs are served to viewers.
#[test]
fn a_problem_echoes_no_password() {
    for text in [
        "[storage]\nengine = \"postgres\"\n[storage.postgres]\nurl = \"postgres://u:topsecret@db:5432x/r\"\n",
        "[storage]\nengine = \"postgres\"\n[storage.postgres]\nurl = \"host=db port=x user=r password=topsecret\"\n",
        "[storage]\nengine = \"postgres\"\n[cluster]\nenabled = true\nredis_url = \"mysql://u:topsecret@r:6379\"\n",
        "[storage]\nengine = \"postgres\"\n[cluster]\nenabled = true\nsentinel_addrs = [\"u:topsecret@:x:y\"]\n",
    ] {
        let problems = Config::parse(text, no_env()).unwrap_err().join("\n");
        assert!(problems.contains("config:"), "located: {problems}");
        assert!(!problems.contains("topsecret"), "{text}\n→ {problems}");
    }
    let env = vec![
        (
            "RINGCHAT_STORAGE__POSTGRES__URL".to_owned(),
            "postgres://u:topsecret@db:5432x/r".to_owned(),
        ),
        ("RINGCHAT_STORAGE__ENGINE".to_owned(), "postgres".to_owned()),
    ];
    let problems = Config::parse("", env).unwrap_err().join("\n");
    assert!(
        problems.contains("RINGCHAT_STORAGE__POSTGRES__URL"),
        "{problems}"
    );
    assert!(!problems.contains("topsecret"), "{problems}");
}

#[test]
fn a_resume_fits_in_half_the_outbound_queue() {
    let resume_max = |text: &str| {
        let c = Config::parse(text, no_env()).unwrap();
        c.backend_settings().login.resume_bytes_max
    };
    assert_eq!(resume_max(""), 2 * 1024 * 1024, "the default");
    let small = "[gateway]\noutbound_bytes_max = 1048576\n";
    assert_eq!(resume_max(small), 512 * 1024, "half the smallest queue");
    let set = "[gateway]\noutbound_bytes_max = 4194304\n[login]\nresume_bytes_max = 1048576\n";
    assert_eq!(resume_max(set), 1024 * 1024);
}

/// `gateway.proxy_protocol_from` takes addresses and CIDR ranges, from the file or as a TOML
/// list in the environment; an entry that is neither is a problem naming the key.
#[test]
fn proxy_protocol_from_is_a_list_of_ranges() {
    assert!(
        Config::parse("", no_env())
            .unwrap()
            .gateway
            .proxy_protocol_from
            .is_empty()
    );
    let c = Config::parse(
        "[gateway]\nproxy_protocol_from = [\"10.0.0.0/8\", \"127.0.0.1\", \"2001:db8::/32\"]\n",
        no_env(),
    )
    .unwrap();
    assert_eq!(c.gateway.proxy_protocol_from.len(), 3);
    let env = vec![(
        "RINGCHAT_GATEWAY__PROXY_PROTOCOL_FROM".to_owned(),
        r#"["127.0.0.1/32"]"#.to_owned(),
    )];
    let c = Config::parse("", env).unwrap();
    assert_eq!(
        c.gateway.proxy_protocol_from,
        vec!["127.0.0.1/32".to_owned()]
    );
    let problems = Config::parse(
        "[gateway]\nproxy_protocol_from = [\"10.0.0.0/33\", \"lb.internal\"]\n",
        no_env(),
    )
    .unwrap_err();
    let all = problems.join("\n");
    assert_eq!(problems.len(), 2, "{all}");
    assert!(all.contains("gateway.proxy_protocol_from"), "{all}");
    assert!(
        all.contains("\"10.0.0.0/33\" is neither an IP address nor a CIDR range"),
        "{all}"
    );
    assert!(all.contains("\"lb.internal\""), "{all}");
}

/// Keys the defaults do not show (an `Option` that is `None`, a secret that never serialises)
/// are known all the same, in the file and in the environment: the ScyllaDB password could not
/// be configured ("unknown key", the server refused to start).
#[test]
fn the_scylla_password_and_the_dedup_filter_are_known_keys() {
    let text = "[storage]\ndedup_filter_items = 1000\n[storage.scylla]\npassword_file = \"/etc/ringchat/scylla-password\"\npassword = \"s3cret\"\n";
    let c = Config::parse(text, no_env()).unwrap();
    assert_eq!(
        c.storage.scylla.password_file.as_deref(),
        Some(std::path::Path::new("/etc/ringchat/scylla-password"))
    );
    assert_eq!(c.storage.scylla.password, "s3cret");
    assert_eq!(c.storage.dedup_filter_items, Some(1000));

    let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    let c = Config::parse(
        "",
        env(
            "RINGCHAT_STORAGE__SCYLLA__PASSWORD_FILE",
            "/run/secrets/scylla",
        ),
    )
    .unwrap();
    assert_eq!(
        c.storage.scylla.password_file.as_deref(),
        Some(std::path::Path::new("/run/secrets/scylla"))
    );
    // A password that looks like a number stays text.
    let c = Config::parse("", env("RINGCHAT_STORAGE__SCYLLA__PASSWORD", "12345")).unwrap();
    assert_eq!(c.storage.scylla.password, "12345");
    let c = Config::parse("", env("RINGCHAT_STORAGE__DEDUP_FILTER_ITEMS", "1000")).unwrap();
    assert_eq!(c.storage.dedup_filter_items, Some(1000));
}

/// Every key the example file names is accepted, the commented-out ones too (each uncommented
/// on its own, in its section): a documented key refused as unknown cannot come back.
#[test]
fn every_key_of_the_example_file_is_known_commented_out_ones_too() {
    let text = include_str!("../../../ringchat.example.toml");
    let mut section = String::new();
    let mut tried = 0;
    for line in text.lines() {
        if let Some(header) = line.strip_prefix('[') {
            section = header.trim_end_matches(']').to_owned();
            continue;
        }
        // `# key = value` where the rest is one TOML key and value; prose is not.
        let Some(candidate) = line.strip_prefix("# ") else {
            continue;
        };
        let Ok(alone) = candidate.parse::<toml::Table>() else {
            continue;
        };
        if alone.len() != 1 || alone.values().any(toml::Value::is_table) {
            continue;
        }
        tried += 1;
        let file = format!("[{section}]\n{candidate}\n");
        if let Err(problems) = Config::parse(&file, no_env()) {
            let wrong: Vec<_> = problems
                .iter()
                .filter(|p| {
                    p.contains("unknown key")
                        || p.contains("invalid type")
                        || p.contains("unknown variant")
                })
                .collect();
            assert!(wrong.is_empty(), "{file}: {wrong:?}");
        }
    }
    assert!(tried >= 5, "only {tried} commented-out keys found");
}

/// `"auto"` runs no more shards than the cgroup's CPU quota allows; a list is taken as it is.
#[test]
fn auto_cores_are_capped_by_the_cpu_quota() {
    let host = |quota| HostCpus {
        online: (0..64).collect(),
        quota,
    };
    let mut auto = Config::default();
    auto.backend.cores = vec![0, 1];
    assert_eq!(
        auto.shard_cores_on(&host(None)),
        (2..64).collect::<Vec<_>>()
    );
    assert_eq!(auto.shard_cores_on(&host(Some(4))), vec![2, 3, 4, 5]);
    assert_eq!(auto.shard_cores_on(&host(Some(100))).len(), 62);
    let mut listed = Config::default();
    listed.gateway.cores = Cores::List((0..6).collect());
    assert_eq!(listed.shard_cores_on(&host(Some(2))).len(), 6);
}

/// Shards capped by the CPU quota below the CPU set are not pinned: pinned, a pod limited to 4
/// CPUs on a 64-core node (no static CPU manager) ran its 4 shards on cores 0-3, shared with
/// the interrupts and the other pods, though the quota let them run on any core. When the CPU
/// set itself has no more cores than the quota (the static CPU manager's 4 cores), or no quota
/// is set, or the cores are listed, they are pinned as before.
#[test]
fn shards_capped_by_the_cpu_quota_are_not_pinned() {
    let host = |online: std::ops::Range<usize>, quota| HostCpus {
        online: online.collect(),
        quota,
    };
    let auto = Config::default();
    let shared = auto.shard_plan_on(&host(0..64, Some(4)));
    assert_eq!(shared.cores.len(), 4, "{shared:?}");
    assert!(!shared.pinned, "the quota decided: {shared:?}");
    for (set, quota) in [(0..4, Some(4)), (8..12, Some(6)), (0..64, None)] {
        let plan = auto.shard_plan_on(&host(set.clone(), quota));
        assert_eq!(plan.cores, set.collect::<Vec<_>>());
        assert!(plan.pinned, "the CPU set decided: {plan:?}");
    }
    // The backend's cores taken out first: the quota decides against the rest.
    let mut with_backend = Config::default();
    with_backend.backend.cores = vec![0, 1];
    assert!(with_backend.shard_plan_on(&host(0..6, Some(4))).pinned);
    assert!(!with_backend.shard_plan_on(&host(0..7, Some(4))).pinned);
    let mut listed = Config::default();
    listed.gateway.cores = Cores::List((0..6).collect());
    assert!(listed.shard_plan_on(&host(0..64, Some(2))).pinned);
}

//! Every query the ports make is served by an index: the tables are filled (thousands of rows
//! each, analysed), then every port method is called on a store that EXPLAINs its statements
//! with their real parameters instead of running them, and each plan must reach its table
//! through an index, never by a sequential scan. The statements that run inside a transaction
//! of their own are EXPLAINed from their constants.

use std::sync::Mutex;

use super::tests::open_test_store;
use super::{Params, PgStore, i};
use crate::store::*;

/// Rows put in every table before the plans are taken.
const ROWS: i64 = 20_000;

/// Tables a statement may scan whole: tiny ones, and a bounded clean-up that has to look at
/// every row it may drop.
const WHOLE_TABLE_OK: &[&str] = &[
    "SELECT count(*) FROM (SELECT 1 FROM invites",
    "DELETE FROM invites WHERE uses >= uses_max",
];

/// Statements that must reach their table through a named index: another one (the primary
/// key, in id order) would avoid a sequential scan too, but read rows that it then filters out.
const INDEX_NAMED: &[(&str, &str)] = &[(
    "SELECT id, code_hash, issuer, created_ms, expires_ms, uses_max, uses, note FROM invites \
     WHERE issuer = $1",
    "invites_issuer_id",
)];

impl PgStore {
    /// In a test store that explains ([`PgStore::explained`]), EXPLAINs `sql` with `params`
    /// and keeps the plan; returns whether it did (then the statement is not run).
    pub(super) async fn explain(&self, sql: &str, params: &Params<'_>) -> Result<bool, StoreError> {
        let Some(plans) = &self.explained else {
            return Ok(false);
        };
        let client = self.client().await?;
        let rows = client
            .query(&format!("EXPLAIN (FORMAT TEXT) {sql}"), params)
            .await?;
        let plan: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        plans
            .lock()
            .unwrap()
            .push((sql.to_owned(), plan.join("\n")));
        Ok(true)
    }
}

/// Fills every table with [`ROWS`] rows of plausible keys, and analyses them.
fn fill(store: &PgStore) {
    let sql = format!(
        "INSERT INTO users SELECT 100000000 + g, 'user' || g, 'user' || g, 'h', \
           'u' || g || '@example.com', 'u' || g || '@example.com', g FROM generate_series(1, {ROWS}) g;
         INSERT INTO tokens SELECT decode(lpad(to_hex(g), 64, '0'), 'hex'), 100000000 + g % 1000, \
           'd', 1, 2, 0, 1 FROM generate_series(1, {ROWS}) g;
         INSERT INTO messages SELECT (100000000 + g % 100) * 4294967296 + 100000001 + g % 100, \
           g, g, 1, 2, 'c', 1, 'x', g, 0, 0, NULL FROM generate_series(1, {ROWS}) g;
         INSERT INTO cursor_rows SELECT g % 500, g, 1, 1, '\\x00', '\\x00' FROM generate_series(1, {ROWS}) g;
         INSERT INTO recent SELECT g % 500, g % 24, g FROM generate_series(1, {ROWS}) g;
         INSERT INTO conv_owners SELECT g, 1, 1 FROM generate_series(1, {ROWS}) g;
         INSERT INTO relations SELECT g % 500, 1 + g % 4, g, 1, '' FROM generate_series(1, {ROWS}) g;
         INSERT INTO contact_summaries SELECT g, 0, 0, 0, 0, 0, 0, NULL FROM generate_series(1, {ROWS}) g;
         INSERT INTO profiles SELECT g, '', '', '', NULL, 0, false FROM generate_series(1, {ROWS}) g;
         INSERT INTO groups SELECT 4611686018427387904 + g, 'group ' || g, 'group ' || g, '', '', \
           1, 0, true, false, 1, 0, 0, 0, 0 FROM generate_series(1, {ROWS}) g;
         INSERT INTO group_members SELECT 4611686018427387904 + g % 100, g, 0, 0, 1, 0 FROM generate_series(1, {ROWS}) g;
         INSERT INTO user_groups SELECT g % 500, 4611686018427387904 + g, 1, 0, false FROM generate_series(1, {ROWS}) g;
         INSERT INTO user_group_counts SELECT g, 1 FROM generate_series(1, {ROWS}) g;
         INSERT INTO group_applications SELECT 4611686018427387904 + g % 100, g, '', 0 FROM generate_series(1, {ROWS}) g;
         INSERT INTO mentions SELECT 4611686018427387904 + g % 100, g % 50, g FROM generate_series(1, {ROWS}) g;
         INSERT INTO read_histograms SELECT 4611686018427387904 + g, 0, 0, '\\x00' FROM generate_series(1, {ROWS}) g;
         INSERT INTO audit SELECT g, g, 'system', 'a', '', '', '' FROM generate_series(1, {ROWS}) g;
         INSERT INTO user_flags SELECT 100000000 + g, 0, '', '' FROM generate_series(1, {ROWS}) g;
         INSERT INTO invites SELECT g, decode(lpad(to_hex(g), 64, '0'), 'hex'), 'user:' || g % 500, \
           0, 1, 1, 0, '' \
           FROM generate_series(1, {ROWS}) g;
         INSERT INTO push_tokens SELECT g % 500, 'device' || g, 1, 't', 0 FROM generate_series(1, {ROWS}) g;
         ANALYZE;"
    );
    store
        .block(async {
            let client = store.client().await?;
            Ok(client.batch_execute(&sql).await?)
        })
        .unwrap();
}

/// A commit group with one of every write.
fn everything(conv: ConvId, group: ConvId) -> CommitGroup {
    let (alice, bob) = (USER_ID_FIRST, USER_ID_FIRST + 1);
    let message = MessageRecord {
        conv_id: conv,
        seq: 7,
        msg_id: 9,
        from: alice,
        to: bob,
        client_msg_id: "c".into(),
        content_type: 1,
        content: bytes::Bytes::from_static(b"hi"),
        server_time_ms: 1,
        recalled: false,
        recall_of_seq: 0,
        recall_event_seq: 0,
        mentions: None,
    };
    let member = MemberRecord {
        role: GroupRole::Member,
        joined_ms: 1,
        visible_from_seq: 1,
        muted_until_ms: 0,
    };
    let record = GroupRecord {
        name: "g".into(),
        avatar_url: String::new(),
        intro: String::new(),
        owner: alice,
        join_policy: JoinPolicy::Open,
        history_visible: true,
        mute_all: false,
        member_count: 1,
        admin_count: 0,
        application_count: 0,
        created_ms: 1,
        dissolved_seq: 0,
    };
    let application = ApplicationRecord {
        message: String::new(),
        sent_ms: 1,
        inviter: alice,
    };
    let relation = RelationKey::new(alice, RelationKind::Friend, bob);
    CommitGroup {
        messages: vec![message],
        recalls: vec![(conv, 3, 7)],
        recency: vec![RecencyMove {
            user: alice,
            conv,
            from: Some(1),
            to: 2,
        }],
        cursor_rows: vec![(conv, alice, CursorRow::default())],
        next_msg_id: Some(10),
        contacts: ContactWrites {
            relations: vec![
                (relation, Some(RelationRecord::default())),
                (RelationKey::new(bob, RelationKind::Block, alice), None),
            ],
            summaries: vec![
                SummaryWrite {
                    user: alice,
                    base: None,
                    new: ContactSummary::default(),
                },
                SummaryWrite {
                    user: bob,
                    base: Some(ContactSummary::default()),
                    new: ContactSummary {
                        friends: 1,
                        ..ContactSummary::default()
                    },
                },
            ],
        },
        groups: GroupWrites {
            groups: vec![(group, record)],
            members: vec![(group, alice, Some(member)), (group, bob, None)],
            user_groups: vec![
                (alice, group, Some(UserGroupRecord::default())),
                (bob, group, None),
            ],
            user_group_count_changes: vec![(alice, 1), (bob, -1)],
            applications: vec![(group, alice, Some(application)), (group, bob, None)],
            mentions: vec![(group, alice, 7)],
            mentions_removed: vec![(group, bob, 6)],
            read_histograms: vec![(group, ReadHistogram::default())],
            next_group_id: Some(5),
        },
        fences: vec![(conv, 1)],
    }
}

/// Calls every port method once (the explaining store runs none of them).
fn call_every_port(s: &PgStore) {
    let (alice, bob) = (USER_ID_FIRST + 5, USER_ID_FIRST + 6);
    let conv = ConvId::direct(alice, bob).unwrap();
    let group = ConvId::group(7).unwrap();
    let hash = [3u8; 32];
    let token = TokenRecord {
        user_id: alice,
        device_id: "d".into(),
        issued_at_ms: 1,
        expires_at_ms: 2,
        platform: 0,
        last_seen_ms: 1,
    };
    s.append(&everything(conv, group)).unwrap();
    s.next_msg_id().unwrap();
    s.last_message(conv).unwrap();
    s.last_messages(&[conv, conv]).unwrap();
    s.message(conv, 5).unwrap();
    s.messages_at(&[(conv, 5), (conv, 7)]).unwrap();
    s.messages_after(conv, 5, 50).unwrap();
    s.messages_before(conv, 500, 50).unwrap();
    s.cursor_row(conv, alice).unwrap();
    s.cursor_rows(&[(conv, alice), (conv, bob)]).unwrap();
    s.recent_conversations(alice, 0..=u64::MAX, 50).unwrap();
    s.owner(conv).unwrap();
    s.claim(conv, 1, 0).unwrap();
    s.claim(conv, 1, 3).unwrap();
    s.user_by_id(alice).unwrap();
    s.user_id_by_name("user77").unwrap();
    s.user_id_by_email("u77@example.com").unwrap();
    s.put_token(&hash, &token).ok();
    s.token(&hash).unwrap();
    s.remove_token(&hash).unwrap();
    s.tokens_of_user(alice, 10).unwrap();
    s.touch_tokens(&[(hash, 5)]).unwrap();
    s.user_ids_after(alice, 100).unwrap();
    s.user_count().unwrap();
    s.relation(RelationKey::new(alice, RelationKind::Friend, bob))
        .unwrap();
    s.relations(alice, RelationKind::Friend, 0, 50).unwrap();
    s.relations_at(&[
        RelationKey::new(alice, RelationKind::Block, bob),
        RelationKey::new(bob, RelationKind::Block, alice),
    ])
    .unwrap();
    s.contact_summary(alice).unwrap();
    s.profile(alice).unwrap();
    s.put_profile(alice, &ProfileRecord::default()).unwrap();
    s.put_profile_if(alice, None, &ProfileRecord::default())
        .unwrap();
    s.put_profile_if(
        alice,
        Some(&ProfileRecord::default()),
        &ProfileRecord::default(),
    )
    .unwrap();
    s.usernames_with_prefix("user1", "", 20).unwrap();
    s.usernames_with_prefix("user1", "user15", 20).unwrap();
    s.group(group).unwrap();
    s.group_member(group, alice).unwrap();
    s.group_members(group, 0, 50).unwrap();
    s.user_group(alice, group).unwrap();
    s.groups_of_user(alice, 0, 50).unwrap();
    s.user_group_count(alice).unwrap();
    s.application(group, alice).unwrap();
    s.applications(group, 0, 50).unwrap();
    s.unread_mentions(group, alice, 5, 500, 99).unwrap();
    s.read_histogram(group).unwrap();
    s.next_group_id().unwrap();
    s.groups_after(0, 50).unwrap();
    s.groups_by_name("group 1", None, 20).unwrap();
    s.groups_by_name("group 1", Some(("group 15", group)), 20)
        .unwrap();
    s.user_flags(alice).unwrap();
    s.set_user_flags(alice, None).unwrap();
    let flags = AccountFlags {
        disabled_at_ms: 1,
        disabled_by: "admin:x".into(),
        reason: String::new(),
    };
    s.set_user_flags(alice, Some(&flags)).unwrap();
    s.users_after(alice, 50).unwrap();
    s.take_invite(&hash, 1).unwrap();
    s.return_invite(5).unwrap();
    s.invites_before(500, 50).unwrap();
    s.invites_of_issuer_before("user:7", 500, 50).unwrap();
    s.remove_invite(5).unwrap();
    s.append_audit(30_000, &[]).unwrap();
    let entry = AuditRecord {
        at_ms: 1,
        actor: "system".into(),
        action: "a".into(),
        target: String::new(),
        from: String::new(),
        detail: String::new(),
    };
    s.append_audit(30_000, &[entry]).unwrap();
    s.last_audit_id().unwrap();
    s.audit_page(500, 50).unwrap();
    s.prune_audit(100, 50).unwrap();
    let push = PushTokenRecord {
        provider: 1,
        token: "t".into(),
        updated_ms: 1,
    };
    s.put_push_token(alice, "d", &push).unwrap();
    s.remove_push_token(alice, "d").unwrap();
    s.push_tokens(alice, 10).unwrap();
}

/// The statements run in a transaction of their own, with parameters.
fn explain_transactions(s: &PgStore) {
    let user = i(USER_ID_FIRST + 5);
    let convs = vec![i(ConvId::group(7).unwrap().to_wire())];
    let hashes: Vec<&[u8]> = vec![&[3u8; 32]];
    let held: &[u8] = &[3u8; 32];
    let statements: [(&str, &Params<'_>); 8] = [
        (super::accounts::TAKEN, &[&"user7", &"u7@example.com"]),
        (super::accounts::REVOKE_TOKENS, &[&hashes, &user]),
        (super::accounts::SET_PASSWORD, &[&user, &"h", &Some("g")]),
        (super::accounts::HELD_TOKEN, &[&held, &user]),
        (super::accounts::LOCK_USER_FOR_TOKENS, &[&user]),
        (super::accounts::REVOKE_ALL_TOKENS, &[&user]),
        (super::append::FENCE_LOCK, &[&convs]),
        (
            "SELECT count(*) FROM (SELECT 1 FROM invites LIMIT $1) x",
            &[&10_000i64],
        ),
    ];
    for (sql, params) in statements {
        s.block(s.explain(sql, params)).unwrap();
    }
}

#[test]
fn every_port_query_reaches_its_table_through_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test_store(dir.path()).unwrap();
    fill(&store);
    let mut explaining = open_test_store(dir.path()).unwrap();
    explaining.explained = Some(Mutex::new(Vec::new()));
    call_every_port(&explaining);
    explain_transactions(&explaining);
    let plans = explaining.explained.take().unwrap().into_inner().unwrap();
    assert!(plans.len() >= 60, "{} statements explained", plans.len());
    for (prefix, _) in INDEX_NAMED {
        assert!(
            plans.iter().any(|(sql, _)| sql.starts_with(prefix)),
            "no statement explained starts with {prefix:?}"
        );
    }
    let mut bad = Vec::new();
    for (sql, plan) in &plans {
        if WHOLE_TABLE_OK.iter().any(|ok| sql.starts_with(ok)) {
            continue;
        }
        let seq_scan = plan
            .lines()
            .find(|l| l.contains("Seq Scan on ") && !l.contains("Seq Scan on counters"));
        if let Some(line) = seq_scan {
            bad.push(format!("{sql}\n  {}\n{plan}", line.trim()));
        }
        for (prefix, index) in INDEX_NAMED {
            if sql.starts_with(prefix) && !plan.contains(&format!(" using {index} ")) {
                bad.push(format!("{sql}\n  not through {index}\n{plan}"));
            }
        }
        let reads_a_table = plan.contains(" on ") || plan.contains("Insert on");
        // An insert reads no table (its conflicts are checked in the unique index).
        let pure_insert = sql.starts_with("INSERT");
        if reads_a_table && !pure_insert && !plan.contains("Index") && !plan.contains("counters") {
            bad.push(format!("{sql}\n  no index used\n{plan}"));
        }
    }
    assert!(
        bad.is_empty(),
        "plans without an index:\n\n{}",
        bad.join("\n\n")
    );
}

//! Groups on PostgreSQL, written by `append.rs` from a commit group's groups section: `groups`
//! (with the folded name as an indexed column: the name index), `group_members` and
//! `group_applications` keyed by (group, user), `user_groups` by (user, group),
//! `user_group_counts`, `mentions` (group, user or 0 for everyone, seq) counted by range, and
//! `read_histograms`.

use tokio_postgres::Row;

use super::append::{Batch, boxed};
use super::contacts::prefix_end;
use super::log::seq_bound;
use super::{PgStore, col, decode, encode, i, i32_of, limit, u, u32_col};
use crate::store::{
    ApplicationRecord, ConvId, GroupRecord, GroupRole, GroupStore, GroupWrites, JoinPolicy,
    MENTION_ALL_USER, MemberRecord, ReadHistogram, StoreError, UserGroupRecord, UserId,
    group_name_key,
};

const GROUPS_PUT: &str = "INSERT INTO groups (group_id, name, name_key, avatar_url, intro, \
     owner, join_policy, history_visible, mute_all, member_count, admin_count, \
     application_count, created_ms, dissolved_seq) \
     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::bigint[], $7::smallint[], $8::boolean[], $9::boolean[], $10::integer[], \
     $11::integer[], $12::integer[], $13::bigint[], $14::bigint[]) \
     ON CONFLICT (group_id) DO UPDATE SET name = excluded.name, name_key = excluded.name_key, \
     avatar_url = excluded.avatar_url, intro = excluded.intro, owner = excluded.owner, \
     join_policy = excluded.join_policy, history_visible = excluded.history_visible, \
     mute_all = excluded.mute_all, member_count = excluded.member_count, \
     admin_count = excluded.admin_count, application_count = excluded.application_count, \
     created_ms = excluded.created_ms, dissolved_seq = excluded.dissolved_seq";

const MEMBERS_PUT: &str = "INSERT INTO group_members (group_id, user_id, role, joined_ms, \
     visible_from_seq, muted_until_ms) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::smallint[], $4::bigint[], \
     $5::bigint[], $6::bigint[]) \
     ON CONFLICT (group_id, user_id) DO UPDATE SET role = excluded.role, \
     joined_ms = excluded.joined_ms, visible_from_seq = excluded.visible_from_seq, \
     muted_until_ms = excluded.muted_until_ms";

const MEMBERS_REMOVE: &str = "DELETE FROM group_members t \
     USING UNNEST($1::bigint[], $2::bigint[]) AS d(a, b) \
     WHERE t.group_id = d.a AND t.user_id = d.b";

const USER_GROUPS_PUT: &str = "INSERT INTO user_groups (user_id, group_id, \
     visible_from_seq, left_seq, notify_muted, added) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
     $5::boolean[], $6::boolean[]) \
     ON CONFLICT (user_id, group_id) DO UPDATE SET \
     visible_from_seq = excluded.visible_from_seq, left_seq = excluded.left_seq, \
     notify_muted = excluded.notify_muted, added = excluded.added";

const USER_GROUPS_REMOVE: &str = "DELETE FROM user_groups t \
     USING UNNEST($1::bigint[], $2::bigint[]) AS d(a, b) \
     WHERE t.user_id = d.a AND t.group_id = d.b";

/// Each change added to the count as it is now (another node may have changed it since the
/// sequencer read it), under the row's lock.
const USER_GROUP_COUNTS_ADD: &str = "INSERT INTO user_group_counts (user_id, count) \
     SELECT * FROM UNNEST($1::bigint[], $2::integer[]) \
     ON CONFLICT (user_id) DO UPDATE SET count = user_group_counts.count + excluded.count";

const APPLICATIONS_PUT: &str = "INSERT INTO group_applications (group_id, user_id, message, \
     sent_ms, inviter) SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], \
     $4::bigint[], $5::bigint[]) \
     ON CONFLICT (group_id, user_id) DO UPDATE SET message = excluded.message, \
     sent_ms = excluded.sent_ms, inviter = excluded.inviter";

const APPLICATIONS_REMOVE: &str = "DELETE FROM group_applications t \
     USING UNNEST($1::bigint[], $2::bigint[]) AS d(a, b) \
     WHERE t.group_id = d.a AND t.user_id = d.b";

const MENTIONS_PUT: &str = "INSERT INTO mentions (group_id, user_id, seq) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) ON CONFLICT DO NOTHING";

const MENTIONS_REMOVE: &str = "DELETE FROM mentions t \
     USING UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS d(g, u, s) \
     WHERE t.group_id = d.g AND t.user_id = d.u AND t.seq = d.s";

const HISTOGRAMS_PUT: &str = "INSERT INTO read_histograms (group_id, base_seq, below, counts) \
     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::integer[], $4::bytea[]) \
     ON CONFLICT (group_id) DO UPDATE SET base_seq = excluded.base_seq, \
     below = excluded.below, counts = excluded.counts";

fn policy_code(p: JoinPolicy) -> i16 {
    match p {
        JoinPolicy::Open => 0,
        JoinPolicy::Approval => 1,
        JoinPolicy::InviteOnly => 2,
    }
}

fn role_code(r: GroupRole) -> i16 {
    match r {
        GroupRole::Member => 0,
        GroupRole::Admin => 1,
        GroupRole::Owner => 2,
    }
}

fn corrupt(what: &str, code: i16) -> StoreError {
    StoreError::Corrupt(format!("{what} {code}").into())
}

pub(super) const GROUP_COLUMNS_AFTER_ID: &str = "name, avatar_url, intro, owner, join_policy, \
     history_visible, mute_all, member_count, admin_count, application_count, created_ms, \
     dissolved_seq";

pub(super) fn group_of(row: &Row, at: usize) -> Result<GroupRecord, StoreError> {
    let policy: i16 = col(row, at + 4)?;
    Ok(GroupRecord {
        name: col(row, at)?,
        avatar_url: col(row, at + 1)?,
        intro: col(row, at + 2)?,
        owner: u(row, at + 3)?,
        join_policy: match policy {
            0 => JoinPolicy::Open,
            1 => JoinPolicy::Approval,
            2 => JoinPolicy::InviteOnly,
            other => return Err(corrupt("join_policy", other)),
        },
        history_visible: col(row, at + 5)?,
        mute_all: col(row, at + 6)?,
        member_count: u32_col(row, at + 7)?,
        admin_count: u32_col(row, at + 8)?,
        application_count: u32_col(row, at + 9)?,
        created_ms: u(row, at + 10)?,
        dissolved_seq: u(row, at + 11)?,
    })
}

pub(super) fn member_of(row: &Row, at: usize) -> Result<MemberRecord, StoreError> {
    let role: i16 = col(row, at)?;
    Ok(MemberRecord {
        role: match role {
            0 => GroupRole::Member,
            1 => GroupRole::Admin,
            2 => GroupRole::Owner,
            other => return Err(corrupt("role", other)),
        },
        joined_ms: u(row, at + 1)?,
        visible_from_seq: u(row, at + 2)?,
        muted_until_ms: u(row, at + 3)?,
    })
}

pub(super) fn user_group_of(row: &Row, at: usize) -> Result<UserGroupRecord, StoreError> {
    Ok(UserGroupRecord {
        visible_from_seq: u(row, at)?,
        left_seq: u(row, at + 1)?,
        notify_muted: col(row, at + 2)?,
        added: col(row, at + 3)?,
    })
}

pub(super) fn application_of(row: &Row, at: usize) -> Result<ApplicationRecord, StoreError> {
    Ok(ApplicationRecord {
        message: col(row, at)?,
        sent_ms: u(row, at + 1)?,
        inviter: u(row, at + 2)?,
    })
}

pub(super) fn histogram_of(row: &Row, at: usize) -> Result<ReadHistogram, StoreError> {
    Ok(ReadHistogram {
        base_seq: u(row, at)?,
        below: u32_col(row, at + 1)?,
        counts: decode(col::<&[u8]>(row, at + 2)?)?,
    })
}

/// The (group, user) key of a section's row.
fn by_group<R>(r: &(ConvId, UserId, Option<R>)) -> (i64, i64) {
    (i(r.0.to_wire()), i(r.1))
}

/// `(puts, removes)` of a section's `Option` records.
fn split<K, R>(
    rows: &[(ConvId, UserId, Option<R>)],
    key: fn(&(ConvId, UserId, Option<R>)) -> K,
) -> (Vec<(K, &R)>, Vec<K>) {
    let mut puts = Vec::new();
    let mut removes = Vec::new();
    for r in rows {
        match &r.2 {
            Some(record) => puts.push((key(r), record)),
            None => removes.push(key(r)),
        }
    }
    (puts, removes)
}

fn pair_params(
    keys: impl Iterator<Item = (i64, i64)> + Clone,
) -> Vec<Box<dyn tokio_postgres::types::ToSql + Sync>> {
    vec![
        boxed(keys.clone().map(|k| k.0).collect::<Vec<_>>()),
        boxed(keys.map(|k| k.1).collect::<Vec<_>>()),
    ]
}

impl PgStore {
    /// Adds a commit group's groups section to its statements.
    pub(super) fn group_statements(&self, batch: &mut Batch, w: &GroupWrites) {
        let g = &w.groups;
        if !g.is_empty() {
            let text = |f: fn(&GroupRecord) -> String| {
                boxed(g.iter().map(|(_, r)| f(r)).collect::<Vec<_>>())
            };
            let int = |f: fn(&GroupRecord) -> u32| {
                boxed(g.iter().map(|(_, r)| i32_of(f(r))).collect::<Vec<_>>())
            };
            batch.push(
                GROUPS_PUT,
                vec![
                    boxed(g.iter().map(|(id, _)| i(id.to_wire())).collect::<Vec<_>>()),
                    text(|r| r.name.clone()),
                    text(|r| group_name_key(&r.name)),
                    text(|r| r.avatar_url.clone()),
                    text(|r| r.intro.clone()),
                    boxed(g.iter().map(|(_, r)| i(r.owner)).collect::<Vec<_>>()),
                    boxed(
                        g.iter()
                            .map(|(_, r)| policy_code(r.join_policy))
                            .collect::<Vec<_>>(),
                    ),
                    boxed(g.iter().map(|(_, r)| r.history_visible).collect::<Vec<_>>()),
                    boxed(g.iter().map(|(_, r)| r.mute_all).collect::<Vec<_>>()),
                    int(|r| r.member_count),
                    int(|r| r.admin_count),
                    int(|r| r.application_count),
                    boxed(g.iter().map(|(_, r)| i(r.created_ms)).collect::<Vec<_>>()),
                    boxed(
                        g.iter()
                            .map(|(_, r)| i(r.dissolved_seq))
                            .collect::<Vec<_>>(),
                    ),
                ],
            );
        }
        let (puts, removes) = split(&w.members, by_group);
        if !puts.is_empty() {
            let mut params = pair_params(puts.iter().map(|p| p.0));
            params.push(boxed(
                puts.iter().map(|p| role_code(p.1.role)).collect::<Vec<_>>(),
            ));
            params.push(boxed(
                puts.iter().map(|p| i(p.1.joined_ms)).collect::<Vec<_>>(),
            ));
            params.push(boxed(
                puts.iter()
                    .map(|p| i(p.1.visible_from_seq))
                    .collect::<Vec<_>>(),
            ));
            params.push(boxed(
                puts.iter()
                    .map(|p| i(p.1.muted_until_ms))
                    .collect::<Vec<_>>(),
            ));
            batch.push(MEMBERS_PUT, params);
        }
        if !removes.is_empty() {
            batch.push(MEMBERS_REMOVE, pair_params(removes.into_iter()));
        }
        let mut puts = Vec::new();
        let mut removes = Vec::new();
        for (user, group, record) in &w.user_groups {
            let key = (i(*user), i(group.to_wire()));
            match record {
                Some(r) => puts.push((key, r)),
                None => removes.push(key),
            }
        }
        if !puts.is_empty() {
            let mut params = pair_params(puts.iter().map(|p| p.0));
            params.push(boxed(
                puts.iter()
                    .map(|p| i(p.1.visible_from_seq))
                    .collect::<Vec<_>>(),
            ));
            params.push(boxed(
                puts.iter().map(|p| i(p.1.left_seq)).collect::<Vec<_>>(),
            ));
            params.push(boxed(
                puts.iter().map(|p| p.1.notify_muted).collect::<Vec<_>>(),
            ));
            params.push(boxed(puts.iter().map(|p| p.1.added).collect::<Vec<_>>()));
            batch.push(USER_GROUPS_PUT, params);
        }
        if !removes.is_empty() {
            batch.push(USER_GROUPS_REMOVE, pair_params(removes.into_iter()));
        }
        if !w.user_group_count_changes.is_empty() {
            let mut c = w.user_group_count_changes.clone();
            // Rows locked in one order by every writer.
            c.sort_unstable_by_key(|x| x.0);
            batch.push(
                USER_GROUP_COUNTS_ADD,
                vec![
                    boxed(c.iter().map(|x| i(x.0)).collect::<Vec<_>>()),
                    boxed(c.iter().map(|x| x.1).collect::<Vec<_>>()),
                ],
            );
        }
        let (puts, removes) = split(&w.applications, by_group);
        if !puts.is_empty() {
            let mut params = pair_params(puts.iter().map(|p| p.0));
            params.push(boxed(
                puts.iter().map(|p| p.1.message.clone()).collect::<Vec<_>>(),
            ));
            params.push(boxed(
                puts.iter().map(|p| i(p.1.sent_ms)).collect::<Vec<_>>(),
            ));
            params.push(boxed(
                puts.iter().map(|p| i(p.1.inviter)).collect::<Vec<_>>(),
            ));
            batch.push(APPLICATIONS_PUT, params);
        }
        if !removes.is_empty() {
            batch.push(APPLICATIONS_REMOVE, pair_params(removes.into_iter()));
        }
        let m = &w.mentions;
        if !m.is_empty() {
            let mut params = pair_params(m.iter().map(|x| (i(x.0.to_wire()), i(x.1))));
            params.push(boxed(m.iter().map(|x| i(x.2)).collect::<Vec<_>>()));
            batch.push(MENTIONS_PUT, params);
        }
        let m = &w.mentions_removed;
        if !m.is_empty() {
            let mut params = pair_params(m.iter().map(|x| (i(x.0.to_wire()), i(x.1))));
            params.push(boxed(m.iter().map(|x| i(x.2)).collect::<Vec<_>>()));
            batch.push(MENTIONS_REMOVE, params);
        }
        let h = &w.read_histograms;
        if !h.is_empty() {
            batch.push(
                HISTOGRAMS_PUT,
                vec![
                    boxed(h.iter().map(|x| i(x.0.to_wire())).collect::<Vec<_>>()),
                    boxed(h.iter().map(|x| i(x.1.base_seq)).collect::<Vec<_>>()),
                    boxed(h.iter().map(|x| i32_of(x.1.below)).collect::<Vec<_>>()),
                    boxed(h.iter().map(|x| encode(&x.1.counts)).collect::<Vec<_>>()),
                ],
            );
        }
    }
}

/// An id bound (`after`) as SQL's bigint; `None`: nothing can come after it.
fn after_bound(after: u64) -> Option<i64> {
    i64::try_from(after).ok().filter(|a| *a < i64::MAX)
}

impl GroupStore for PgStore {
    fn group(&self, group: ConvId) -> Result<Option<GroupRecord>, StoreError> {
        let sql = format!("SELECT {GROUP_COLUMNS_AFTER_ID} FROM groups WHERE group_id = $1");
        self.row(&sql, &[&i(group.to_wire())])?
            .map(|row| group_of(&row, 0))
            .transpose()
    }

    fn group_member(
        &self,
        group: ConvId,
        user: UserId,
    ) -> Result<Option<MemberRecord>, StoreError> {
        self.row(
            "SELECT role, joined_ms, visible_from_seq, muted_until_ms FROM group_members \
             WHERE group_id = $1 AND user_id = $2",
            &[&i(group.to_wire()), &i(user)],
        )?
        .map(|row| member_of(&row, 0))
        .transpose()
    }

    fn group_members(
        &self,
        group: ConvId,
        after: UserId,
        n: usize,
    ) -> Result<Vec<(UserId, MemberRecord)>, StoreError> {
        let Some(after) = after_bound(after).filter(|_| n > 0) else {
            return Ok(Vec::new());
        };
        self.rows(
            "SELECT user_id, role, joined_ms, visible_from_seq, muted_until_ms \
             FROM group_members WHERE group_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
            &[&i(group.to_wire()), &after, &limit(n)],
        )?
        .iter()
        .map(|row| Ok((u(row, 0)?, member_of(row, 1)?)))
        .collect()
    }

    fn user_group(
        &self,
        user: UserId,
        group: ConvId,
    ) -> Result<Option<UserGroupRecord>, StoreError> {
        self.row(
            "SELECT visible_from_seq, left_seq, notify_muted, added FROM user_groups \
             WHERE user_id = $1 AND group_id = $2",
            &[&i(user), &i(group.to_wire())],
        )?
        .map(|row| user_group_of(&row, 0))
        .transpose()
    }

    fn groups_of_user(
        &self,
        user: UserId,
        after: u64,
        n: usize,
    ) -> Result<Vec<(ConvId, UserGroupRecord)>, StoreError> {
        let Some(after) = after_bound(after).filter(|_| n > 0) else {
            return Ok(Vec::new());
        };
        self.rows(
            "SELECT group_id, visible_from_seq, left_seq, notify_muted, added FROM user_groups \
             WHERE user_id = $1 AND group_id > $2 ORDER BY group_id LIMIT $3",
            &[&i(user), &after, &limit(n)],
        )?
        .iter()
        .map(|row| Ok((ConvId::from_stored(u(row, 0)?), user_group_of(row, 1)?)))
        .collect()
    }

    fn user_group_count(&self, user: UserId) -> Result<u32, StoreError> {
        match self.row(
            "SELECT GREATEST(count, 0) FROM user_group_counts WHERE user_id = $1",
            &[&i(user)],
        )? {
            Some(row) => u32_col(&row, 0),
            None => Ok(0),
        }
    }

    fn application(
        &self,
        group: ConvId,
        user: UserId,
    ) -> Result<Option<ApplicationRecord>, StoreError> {
        self.row(
            "SELECT message, sent_ms, inviter FROM group_applications \
             WHERE group_id = $1 AND user_id = $2",
            &[&i(group.to_wire()), &i(user)],
        )?
        .map(|row| application_of(&row, 0))
        .transpose()
    }

    fn applications(
        &self,
        group: ConvId,
        after: UserId,
        n: usize,
    ) -> Result<Vec<(UserId, ApplicationRecord)>, StoreError> {
        let Some(after) = after_bound(after).filter(|_| n > 0) else {
            return Ok(Vec::new());
        };
        self.rows(
            "SELECT user_id, message, sent_ms, inviter FROM group_applications \
             WHERE group_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
            &[&i(group.to_wire()), &after, &limit(n)],
        )?
        .iter()
        .map(|row| Ok((u(row, 0)?, application_of(row, 1)?)))
        .collect()
    }

    fn unread_mentions(
        &self,
        group: ConvId,
        user: UserId,
        after_seq: u64,
        last_seq: u64,
        cap: u32,
    ) -> Result<u32, StoreError> {
        if cap == 0 || after_seq >= last_seq {
            return Ok(0);
        }
        let users: Vec<i64> = if user == MENTION_ALL_USER {
            vec![i(MENTION_ALL_USER)]
        } else {
            vec![i(user), i(MENTION_ALL_USER)]
        };
        // A message that names the user and everyone counts once.
        let row = self.row(
            "SELECT count(*) FROM (SELECT DISTINCT seq FROM mentions \
             WHERE group_id = $1 AND user_id = ANY($2) AND seq > $3 AND seq <= $4 \
             ORDER BY seq LIMIT $5) m",
            &[
                &i(group.to_wire()),
                &users,
                &seq_bound(after_seq),
                &seq_bound(last_seq),
                &i64::from(cap),
            ],
        )?;
        let count = match row {
            Some(row) => u(&row, 0)?,
            None => 0,
        };
        Ok(u32::try_from(count).unwrap_or(cap).min(cap))
    }

    fn read_histogram(&self, group: ConvId) -> Result<Option<ReadHistogram>, StoreError> {
        self.row(
            "SELECT base_seq, below, counts FROM read_histograms WHERE group_id = $1",
            &[&i(group.to_wire())],
        )?
        .map(|row| histogram_of(&row, 0))
        .transpose()
    }

    fn next_group_id(&self) -> Result<u64, StoreError> {
        self.counter("next_group_id", 1)
    }

    fn groups_after(&self, after: u64, n: usize) -> Result<Vec<(ConvId, GroupRecord)>, StoreError> {
        let Some(after) = after_bound(after).filter(|_| n > 0) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT group_id, {GROUP_COLUMNS_AFTER_ID} FROM groups WHERE group_id > $1 \
             ORDER BY group_id LIMIT $2"
        );
        self.rows(&sql, &[&after, &limit(n)])?
            .iter()
            .map(|row| {
                let group = ConvId::from_wire(u(row, 0)?)
                    .ok_or_else(|| StoreError::Corrupt("group id".into()))?;
                Ok((group, group_of(row, 1)?))
            })
            .collect()
    }

    fn groups_by_name(
        &self,
        prefix: &str,
        after: Option<(&str, ConvId)>,
        n: usize,
    ) -> Result<Vec<(String, ConvId)>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // Past (name, group) in the index's order; from the prefix when no entry is given.
        let (after_name, after_group) = match after {
            Some((name, group)) => (name, i(group.to_wire())),
            None => (prefix, i64::MIN),
        };
        let rows = match prefix_end(prefix) {
            Some(end) => self.rows(
                "SELECT name_key, group_id FROM groups WHERE name_key >= $1 \
                 AND name_key < $2 AND (name_key, group_id) > ($3, $4) \
                 ORDER BY name_key, group_id LIMIT $5",
                &[&prefix, &end, &after_name, &after_group, &limit(n)],
            )?,
            None => self.rows(
                "SELECT name_key, group_id FROM groups WHERE name_key >= $1 \
                 AND (name_key, group_id) > ($2, $3) ORDER BY name_key, group_id LIMIT $4",
                &[&prefix, &after_name, &after_group, &limit(n)],
            )?,
        };
        rows.iter()
            .map(|row| {
                let group = ConvId::from_wire(u(row, 1)?)
                    .ok_or_else(|| StoreError::Corrupt("group id".into()))?;
                Ok((col(row, 0)?, group))
            })
            .collect()
    }
}

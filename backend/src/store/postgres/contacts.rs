//! Contacts on PostgreSQL: `relations` (keyed by owner, kind, other, so one owner's relations
//! of one kind are one index range) and `contact_summaries`, written by `append.rs` from a
//! commit group's contacts section; `profiles` on their own. Search reads `users` by the
//! prefix of its (byte-ordered) username key.

use tokio_postgres::Row;

use super::append::{Batch, boxed};
use super::{PgStore, col, i, i32_of, limit, placed, u, u32_col};
use crate::store::{
    ContactStore, ContactSummary, ContactWrites, DmPolicy, ProfileRecord, RelationKey,
    RelationKind, RelationRecord, StoreError, SummaryDelta, SummaryWrite, UserId, in_batches,
};

const RELATIONS_PUT: &str = "INSERT INTO relations (owner, kind, other, since_ms, message) \
     SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[], $5::text[]) \
     ON CONFLICT (owner, kind, other) DO UPDATE SET since_ms = excluded.since_ms, \
     message = excluded.message";

const RELATIONS_REMOVE: &str = "DELETE FROM relations r \
     USING UNNEST($1::bigint[], $2::smallint[], $3::bigint[]) AS d(o, k, x) \
     WHERE r.owner = d.o AND r.kind = d.k AND r.other = d.x";

const SUMMARIES_PUT: &str = "INSERT INTO contact_summaries (user_id, friends, requests_out, \
     requests_in, blocks, request_day, requests_today, dm_policy) \
     SELECT * FROM UNNEST($1::bigint[], $2::integer[], $3::integer[], $4::integer[], \
     $5::integer[], $6::bigint[], $7::integer[], $8::smallint[]) \
     ON CONFLICT (user_id) DO UPDATE SET friends = excluded.friends, \
     requests_out = excluded.requests_out, requests_in = excluded.requests_in, \
     blocks = excluded.blocks, request_day = excluded.request_day, \
     requests_today = excluded.requests_today, dm_policy = excluded.dm_policy";

/// The rows a change applies to, made (empty) if missing: the change is then one UPDATE.
const SUMMARIES_ENSURE: &str = "INSERT INTO contact_summaries (user_id, friends, requests_out, \
     requests_in, blocks, request_day, requests_today, dm_policy) \
     SELECT u, 0, 0, 0, 0, 0, 0, NULL FROM UNNEST($1::bigint[]) AS u \
     ON CONFLICT (user_id) DO NOTHING";

/// `SummaryWrite::onto` in SQL, over the row as it is now (another node may have changed it
/// since the sequencer read it): counts move by the group's change, a day's request count
/// follows the later day, the policy is the group's only if it set one.
const SUMMARIES_CHANGE: &str = "UPDATE contact_summaries s SET \
     friends = GREATEST(0, s.friends + d.friends), \
     requests_out = GREATEST(0, s.requests_out + d.ro), \
     requests_in = GREATEST(0, s.requests_in + d.ri), \
     blocks = GREATEST(0, s.blocks + d.b), \
     request_day = GREATEST(s.request_day, d.day), \
     requests_today = CASE WHEN s.request_day = d.day THEN GREATEST(0, s.requests_today + d.today) \
     WHEN s.request_day > d.day THEN s.requests_today ELSE GREATEST(0, d.today) END, \
     dm_policy = CASE WHEN d.set_policy THEN d.policy ELSE s.dm_policy END \
     FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
     $6::bigint[], $7::bigint[], $8::boolean[], $9::smallint[]) \
     AS d(u, friends, ro, ri, b, day, today, set_policy, policy) \
     WHERE s.user_id = d.u";

pub(super) fn policy_code(p: Option<DmPolicy>) -> Option<i16> {
    p.map(|p| match p {
        DmPolicy::Everyone => 1,
        DmPolicy::FriendsOnly => 2,
    })
}

fn policy_of(code: Option<i16>) -> Result<Option<DmPolicy>, StoreError> {
    match code {
        None => Ok(None),
        Some(1) => Ok(Some(DmPolicy::Everyone)),
        Some(2) => Ok(Some(DmPolicy::FriendsOnly)),
        Some(other) => Err(StoreError::Corrupt(format!("dm_policy {other}").into())),
    }
}

pub(super) fn relation_of(row: &Row, at: usize) -> Result<RelationRecord, StoreError> {
    Ok(RelationRecord {
        since_ms: u(row, at)?,
        message: col(row, at + 1)?,
    })
}

pub(super) fn summary_of(row: &Row, at: usize) -> Result<ContactSummary, StoreError> {
    Ok(ContactSummary {
        friends: u32_col(row, at)?,
        requests_out: u32_col(row, at + 1)?,
        requests_in: u32_col(row, at + 2)?,
        blocks: u32_col(row, at + 3)?,
        request_day: u(row, at + 4)?,
        requests_today: u32_col(row, at + 5)?,
        dm_policy: policy_of(col(row, at + 6)?)?,
    })
}

pub(super) fn profile_of(row: &Row, at: usize) -> Result<ProfileRecord, StoreError> {
    Ok(ProfileRecord {
        nickname: col(row, at)?,
        avatar_url: col(row, at + 1)?,
        bio: col(row, at + 2)?,
        searchable: col(row, at + 3)?,
        updated_ms: u(row, at + 4)?,
        hide_last_seen: col(row, at + 5)?,
    })
}

/// The smallest string after every string that starts with `prefix` (`None`: there is none,
/// the range is unbounded above): the upper bound of a prefix range in byte order.
pub(super) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

impl PgStore {
    /// Adds a commit group's contacts section to its statements.
    pub(super) fn contact_statements(&self, batch: &mut Batch, writes: &ContactWrites) {
        let puts: Vec<_> = writes
            .relations
            .iter()
            .filter_map(|(k, r)| r.as_ref().map(|r| (k, r)))
            .collect();
        if !puts.is_empty() {
            batch.push(
                RELATIONS_PUT,
                vec![
                    boxed(puts.iter().map(|(k, _)| i(k.owner)).collect::<Vec<_>>()),
                    boxed(puts.iter().map(|(k, _)| k.kind as i16).collect::<Vec<_>>()),
                    boxed(puts.iter().map(|(k, _)| i(k.other)).collect::<Vec<_>>()),
                    boxed(puts.iter().map(|(_, r)| i(r.since_ms)).collect::<Vec<_>>()),
                    boxed(
                        puts.iter()
                            .map(|(_, r)| r.message.clone())
                            .collect::<Vec<_>>(),
                    ),
                ],
            );
        }
        let removes: Vec<_> = writes
            .relations
            .iter()
            .filter(|(_, r)| r.is_none())
            .map(|(k, _)| k)
            .collect();
        if !removes.is_empty() {
            batch.push(
                RELATIONS_REMOVE,
                vec![
                    boxed(removes.iter().map(|k| i(k.owner)).collect::<Vec<_>>()),
                    boxed(removes.iter().map(|k| k.kind as i16).collect::<Vec<_>>()),
                    boxed(removes.iter().map(|k| i(k.other)).collect::<Vec<_>>()),
                ],
            );
        }
        let (mut whole, mut changes): (Vec<&SummaryWrite>, Vec<&SummaryWrite>) =
            writes.summaries.iter().partition(|w| w.base.is_none());
        if !whole.is_empty() {
            whole.sort_unstable_by_key(|w| w.user);
            let int = |f: fn(&ContactSummary) -> u32| {
                boxed(whole.iter().map(|w| i32_of(f(&w.new))).collect::<Vec<_>>())
            };
            batch.push(
                SUMMARIES_PUT,
                vec![
                    boxed(whole.iter().map(|w| i(w.user)).collect::<Vec<_>>()),
                    int(|x| x.friends),
                    int(|x| x.requests_out),
                    int(|x| x.requests_in),
                    int(|x| x.blocks),
                    boxed(
                        whole
                            .iter()
                            .map(|w| i(w.new.request_day))
                            .collect::<Vec<_>>(),
                    ),
                    int(|x| x.requests_today),
                    boxed(
                        whole
                            .iter()
                            .map(|w| policy_code(w.new.dm_policy))
                            .collect::<Vec<_>>(),
                    ),
                ],
            );
        }
        if !changes.is_empty() {
            // Rows locked in one order by every writer.
            changes.sort_unstable_by_key(|w| w.user);
            let users: Vec<i64> = changes.iter().map(|w| i(w.user)).collect();
            batch.push(SUMMARIES_ENSURE, vec![boxed(users.clone())]);
            let deltas: Vec<SummaryDelta> = changes.iter().filter_map(|w| w.delta()).collect();
            let col =
                |f: fn(&SummaryDelta) -> i64| boxed(deltas.iter().map(f).collect::<Vec<i64>>());
            batch.push(
                SUMMARIES_CHANGE,
                vec![
                    boxed(users),
                    col(|d| d.friends),
                    col(|d| d.requests_out),
                    col(|d| d.requests_in),
                    col(|d| d.blocks),
                    col(|d| i(d.request_day)),
                    col(|d| d.requests_today),
                    boxed(
                        deltas
                            .iter()
                            .map(|d| d.dm_policy.is_some())
                            .collect::<Vec<bool>>(),
                    ),
                    boxed(
                        deltas
                            .iter()
                            .map(|d| policy_code(d.dm_policy.flatten()))
                            .collect::<Vec<_>>(),
                    ),
                ],
            );
        }
    }
}

impl ContactStore for PgStore {
    fn relation(&self, key: RelationKey) -> Result<Option<RelationRecord>, StoreError> {
        self.row(
            "SELECT since_ms, message FROM relations \
             WHERE owner = $1 AND kind = $2 AND other = $3",
            &[&i(key.owner), &(key.kind as i16), &i(key.other)],
        )?
        .map(|row| relation_of(&row, 0))
        .transpose()
    }

    fn relations_at(
        &self,
        keys: &[RelationKey],
    ) -> Result<Vec<Option<RelationRecord>>, StoreError> {
        in_batches(keys, |batch| {
            let owners: Vec<i64> = batch.iter().map(|k| i(k.owner)).collect();
            let kinds: Vec<i16> = batch.iter().map(|k| k.kind as i16).collect();
            let others: Vec<i64> = batch.iter().map(|k| i(k.other)).collect();
            // One statement for the batch: each key a primary-key lookup, found rows by place.
            let rows = self.rows(
                "SELECT k.n, r.since_ms, r.message \
                 FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[]) WITH ORDINALITY \
                 AS k(o, kd, x, n) \
                 JOIN relations r ON r.owner = k.o AND r.kind = k.kd AND r.other = k.x",
                &[&owners, &kinds, &others],
            )?;
            let mut out = vec![None; batch.len()];
            for row in &rows {
                out[placed(row, batch.len())?] = Some(relation_of(row, 1)?);
            }
            Ok(out)
        })
    }

    fn relations(
        &self,
        owner: UserId,
        kind: RelationKind,
        after: UserId,
        n: usize,
    ) -> Result<Vec<(UserId, RelationRecord)>, StoreError> {
        if n == 0 || after >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        self.rows(
            "SELECT other, since_ms, message FROM relations \
             WHERE owner = $1 AND kind = $2 AND other > $3 ORDER BY other LIMIT $4",
            &[&i(owner), &(kind as i16), &i(after), &limit(n)],
        )?
        .iter()
        .map(|row| Ok((u(row, 0)?, relation_of(row, 1)?)))
        .collect()
    }

    fn contact_summary(&self, user: UserId) -> Result<Option<ContactSummary>, StoreError> {
        self.row(
            "SELECT friends, requests_out, requests_in, blocks, request_day, requests_today, \
             dm_policy FROM contact_summaries WHERE user_id = $1",
            &[&i(user)],
        )?
        .map(|row| summary_of(&row, 0))
        .transpose()
    }

    fn profile(&self, user: UserId) -> Result<Option<ProfileRecord>, StoreError> {
        self.row(
            "SELECT nickname, avatar_url, bio, searchable, updated_ms, hide_last_seen \
             FROM profiles WHERE user_id = $1",
            &[&i(user)],
        )?
        .map(|row| profile_of(&row, 0))
        .transpose()
    }

    fn put_profile(&self, user: UserId, p: &ProfileRecord) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO profiles (user_id, nickname, avatar_url, bio, searchable, updated_ms, \
             hide_last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (user_id) DO UPDATE SET nickname = excluded.nickname, \
             avatar_url = excluded.avatar_url, bio = excluded.bio, \
             searchable = excluded.searchable, updated_ms = excluded.updated_ms, \
             hide_last_seen = excluded.hide_last_seen",
            &[
                &i(user),
                &p.nickname,
                &p.avatar_url,
                &p.bio,
                &p.searchable,
                &i(p.updated_ms),
                &p.hide_last_seen,
            ],
        )?;
        Ok(())
    }

    /// One statement: an insert that does nothing over a stored row, or an UPDATE whose
    /// WHERE is the whole expected row (the row lock orders it after a concurrent one, which
    /// it then no longer matches).
    fn put_profile_if(
        &self,
        user: UserId,
        expected: Option<&ProfileRecord>,
        p: &ProfileRecord,
    ) -> Result<bool, StoreError> {
        let changed = match expected {
            None => self.execute(
                "INSERT INTO profiles (user_id, nickname, avatar_url, bio, searchable, \
                 updated_ms, hide_last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (user_id) DO NOTHING",
                &[
                    &i(user),
                    &p.nickname,
                    &p.avatar_url,
                    &p.bio,
                    &p.searchable,
                    &i(p.updated_ms),
                    &p.hide_last_seen,
                ],
            )?,
            Some(e) => self.execute(
                "UPDATE profiles SET nickname = $2, avatar_url = $3, bio = $4, searchable = $5, \
                 updated_ms = $6, hide_last_seen = $7 WHERE user_id = $1 AND nickname = $8 \
                 AND avatar_url = $9 AND bio = $10 AND searchable IS NOT DISTINCT FROM $11 \
                 AND updated_ms = $12 AND hide_last_seen = $13",
                &[
                    &i(user),
                    &p.nickname,
                    &p.avatar_url,
                    &p.bio,
                    &p.searchable,
                    &i(p.updated_ms),
                    &p.hide_last_seen,
                    &e.nickname,
                    &e.avatar_url,
                    &e.bio,
                    &e.searchable,
                    &i(e.updated_ms),
                    &e.hide_last_seen,
                ],
            )?,
        };
        Ok(changed == 1)
    }

    fn usernames_with_prefix(
        &self,
        prefix: &str,
        after: &str,
        n: usize,
    ) -> Result<Vec<(String, UserId)>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // [prefix, prefix_end) in byte order, and past `after`: one index range.
        let (from, inclusive) = if after >= prefix {
            (after, false)
        } else {
            (prefix, true)
        };
        // `$2`: whether `$1` itself is in; the bounds are the index range's.
        let rows = match prefix_end(prefix) {
            Some(end) => self.rows(
                "SELECT username_key, user_id FROM users \
                 WHERE username_key >= $1 AND username_key < $3 AND ($2 OR username_key <> $1) \
                 ORDER BY username_key LIMIT $4",
                &[&from, &inclusive, &end, &limit(n)],
            )?,
            None => self.rows(
                "SELECT username_key, user_id FROM users \
                 WHERE username_key >= $1 AND ($2 OR username_key <> $1) \
                 ORDER BY username_key LIMIT $3",
                &[&from, &inclusive, &limit(n)],
            )?,
        };
        rows.iter()
            .map(|row| Ok((col(row, 0)?, u(row, 1)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_range_ends_after_every_string_with_the_prefix() {
        assert_eq!(prefix_end("ann").as_deref(), Some("ano"));
        assert_eq!(prefix_end("").as_deref(), None);
        assert_eq!(prefix_end("a\u{10ffff}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{d7ff}").as_deref(), Some("\u{e000}"));
    }
}

//! Conversation ownership (`store/owners.rs`) on PostgreSQL: `conv_owners`. A claim is one
//! conditional statement (the epoch advances only from the one the claimant saw), so of two
//! claims that saw the same epoch exactly one wins; the fence is checked in `append.rs`.
//! Many claims are one transaction: the rows locked in conversation order, then one statement
//! over UNNEST; an id lease is one `UPDATE … RETURNING` of its
//! counter in `counters` (the row one box's commit groups write).

use std::ops::Range;

use super::{PgStore, i, u};
use crate::store::{Claim, ConvId, IdKind, OwnerRecord, OwnerStore, StoreError};

/// Claims of never-claimed conversations take their epoch-0 placeholder (put and locked just
/// before, in the same transaction); the others advance from the epoch seen. Disjoint rows.
const CLAIM_MANY: &str = "WITH c AS (SELECT * FROM UNNEST($1::bigint[], $2::bigint[]) AS c(conv_id, seen)), \
     fresh AS (INSERT INTO conv_owners (conv_id, epoch, node) \
       SELECT conv_id, 1, $3 FROM c WHERE seen = 0 \
       ON CONFLICT (conv_id) DO UPDATE SET epoch = 1, node = excluded.node \
       WHERE conv_owners.epoch = 0 RETURNING conv_id, epoch), \
     moved AS (UPDATE conv_owners o SET epoch = o.epoch + 1, node = $3 FROM c \
       WHERE o.conv_id = c.conv_id AND c.seen > 0 AND o.epoch = c.seen \
       RETURNING o.conv_id, o.epoch) \
     SELECT conv_id, epoch FROM fresh UNION ALL SELECT conv_id, epoch FROM moved";

const LEASE_IDS: &str = "INSERT INTO counters (name, value) VALUES ($1, 1 + $2::bigint) \
     ON CONFLICT (name) DO UPDATE SET value = counters.value + $2::bigint RETURNING value";

impl OwnerStore for PgStore {
    fn owner(&self, conv: ConvId) -> Result<Option<OwnerRecord>, StoreError> {
        // Epoch 0 is a placeholder a fenced group locked: nobody owns it yet.
        self.row(
            "SELECT epoch, node FROM conv_owners WHERE conv_id = $1 AND epoch > 0",
            &[&i(conv.to_wire())],
        )?
        .map(|row| {
            Ok(OwnerRecord {
                epoch: u(&row, 0)?,
                node: u(&row, 1)?,
            })
        })
        .transpose()
    }

    fn claim(&self, conv: ConvId, node: u64, seen_epoch: u64) -> Result<Claim, StoreError> {
        let c = i(conv.to_wire());
        let won = if seen_epoch == 0 {
            self.row(
                "INSERT INTO conv_owners (conv_id, epoch, node) VALUES ($1, 1, $2) \
                 ON CONFLICT (conv_id) DO UPDATE SET epoch = 1, node = excluded.node \
                 WHERE conv_owners.epoch = 0 RETURNING epoch",
                &[&c, &i(node)],
            )?
        } else {
            self.row(
                "UPDATE conv_owners SET epoch = epoch + 1, node = $2 \
                 WHERE conv_id = $1 AND epoch = $3 RETURNING epoch",
                &[&c, &i(node), &i(seen_epoch)],
            )?
        };
        match won {
            Some(row) => Ok(Claim::Won(u(&row, 0)?)),
            None => Ok(Claim::Lost(
                self.owner(conv)?
                    .unwrap_or(OwnerRecord { epoch: 0, node: 0 }),
            )),
        }
    }
    fn owners(&self, convs: &[ConvId]) -> Result<Vec<Option<OwnerRecord>>, StoreError> {
        if convs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = convs.iter().map(|c| i(c.to_wire())).collect();
        let mut found = std::collections::HashMap::with_capacity(convs.len());
        for row in self.rows(
            "SELECT conv_id, epoch, node FROM conv_owners \
             WHERE conv_id = ANY($1::bigint[]) AND epoch > 0",
            &[&ids],
        )? {
            let record = OwnerRecord {
                epoch: u(&row, 1)?,
                node: u(&row, 2)?,
            };
            found.insert(u(&row, 0)?, record);
        }
        Ok(convs
            .iter()
            .map(|c| found.get(&c.to_wire()).copied())
            .collect())
    }

    /// One statement; a second round trip only to name the owners of lost claims. Callers
    /// pass distinct conversations (two claims of one row in one statement is an error).
    fn claim_many(&self, node: u64, claims: &[(ConvId, u64)]) -> Result<Vec<Claim>, StoreError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let convs: Vec<i64> = claims.iter().map(|(c, _)| i(c.to_wire())).collect();
        let seen: Vec<i64> = claims.iter().map(|(_, e)| i(*e)).collect();
        let unowned: Vec<i64> = claims
            .iter()
            .filter(|(_, e)| *e == 0)
            .map(|(c, _)| i(c.to_wire()))
            .collect();
        // The rows are locked first, in conversation order (`lock_owner_rows`), as a commit
        // group's fences lock them: an UPDATE over UNNEST would lock them in plan order and
        // could deadlock with a group fencing two of the same conversations.
        let rows = self.block(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            Self::lock_owner_rows(&tx, unowned, &convs).await?;
            let st = tx.prepare_cached(CLAIM_MANY).await?;
            let rows = tx.query(&st, &[&convs, &seen, &i(node)]).await?;
            tx.commit().await?;
            Ok(rows)
        })?;
        let mut won = std::collections::HashMap::with_capacity(claims.len());
        for row in rows {
            won.insert(u(&row, 0)?, u(&row, 1)?);
        }
        let lost: Vec<ConvId> = claims
            .iter()
            .filter(|(c, _)| !won.contains_key(&c.to_wire()))
            .map(|(c, _)| *c)
            .collect();
        let mut owners = self.owners(&lost)?.into_iter();
        Ok(claims
            .iter()
            .map(|(c, _)| match won.get(&c.to_wire()) {
                Some(epoch) => Claim::Won(*epoch),
                None => Claim::Lost(
                    owners
                        .next()
                        .flatten()
                        .unwrap_or(OwnerRecord { epoch: 0, node: 0 }),
                ),
            })
            .collect())
    }

    fn lease_ids(&self, kind: IdKind, count: u64) -> Result<Range<u64>, StoreError> {
        assert!(count > 0, "an empty lease");
        let name = match kind {
            IdKind::Message => "next_msg_id",
            IdKind::Group => "next_group_id",
        };
        let row = self
            .row(LEASE_IDS, &[&name, &i(count)])?
            .ok_or_else(|| StoreError::Corrupt("a counter upsert returned no row".into()))?;
        let end = u(&row, 0)?;
        let start = end
            .checked_sub(count)
            .ok_or_else(|| StoreError::Corrupt(format!("counter {name} is {end}").into()))?;
        Ok(start..end)
    }
}

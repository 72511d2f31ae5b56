//! The group name index: `group_names` (folded name ([`group_name_key`]), 0, group id
//! big-endian) → nothing, so that operators find groups by name prefix with one range read.
//! Kept by `append` (`write_names`: a group record whose name changed moves its entry), and
//! built once at open for a store written before it existed (idempotent, like
//! `account_index.rs`).

use fjall::{OwnedWriteBatch, Readable};

use super::rebuild::DerivedIndex;
use super::{FjallStore, be_u64, decode};
use crate::store::{ConvId, GroupRecord, StoreError, group_name_key};

const META_GROUP_NAMES: &[u8] = b"group_names_index";
const GROUP_NAMES_CURRENT: u64 = 1;

/// Key of a group's entry: the folded name, a 0 byte, the group's wire id.
pub(super) fn name_key(folded: &str, group: ConvId) -> Vec<u8> {
    let mut key = Vec::with_capacity(folded.len() + 9);
    key.extend_from_slice(folded.as_bytes());
    key.push(0);
    key.extend_from_slice(&group.to_wire().to_be_bytes());
    key
}

/// The (folded name, group) of an entry's key.
pub(super) fn parse_name_key(key: &[u8]) -> Result<(String, ConvId), StoreError> {
    let corrupt = || StoreError::Corrupt("group_names key".into());
    let split = key.len().checked_sub(9).ok_or_else(corrupt)?;
    let name = std::str::from_utf8(&key[..split]).map_err(|_| corrupt())?;
    let id = be_u64(&key[split + 1..])?;
    let group = ConvId::from_wire(id).ok_or_else(corrupt)?;
    Ok((name.to_owned(), group))
}

impl FjallStore {
    /// Moves the name index entries of the groups a commit group writes: one point read per
    /// group record written (group writes only, never a message), and index writes only when a
    /// name changed. Called under the write lock, so the published view is the latest state;
    /// `written` holds the names set earlier in this batch.
    pub(super) fn write_names(
        &self,
        batch: &mut OwnedWriteBatch,
        groups: &[(ConvId, GroupRecord)],
    ) -> Result<(), StoreError> {
        let mut written: Vec<(ConvId, String)> = Vec::new();
        let view = self.view();
        for (group, record) in groups {
            let new = group_name_key(&record.name);
            let old = match written.iter().rev().find(|(g, _)| g == group) {
                Some((_, name)) => Some(name.clone()),
                None => view
                    .get(&self.groups, group.to_wire().to_be_bytes())?
                    .map(|v| decode::<GroupRecord>(&v).map(|r| group_name_key(&r.name)))
                    .transpose()?,
            };
            if old.as_deref() == Some(new.as_str()) {
                continue;
            }
            if let Some(old) = old {
                batch.remove(&self.group_names, name_key(&old, *group));
            }
            batch.insert(&self.group_names, name_key(&new, *group), []);
            written.push((*group, new));
        }
        Ok(())
    }
}

pub(super) fn build(store: &FjallStore) -> Result<(), StoreError> {
    let index = DerivedIndex {
        mark: META_GROUP_NAMES,
        version: GROUP_NAMES_CURRENT,
        source: &store.groups,
        index: &store.group_names,
        what: "groups",
    };
    index.build(store, |key, value| {
        let group = ConvId::from_wire(be_u64(key)?)
            .ok_or_else(|| StoreError::Corrupt("group key".into()))?;
        let record: GroupRecord = decode(value)?;
        Ok(name_key(&group_name_key(&record.name), group))
    })
}

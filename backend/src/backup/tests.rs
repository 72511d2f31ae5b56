//! Export, import, copy, backup and restore of a store with every part filled, on fjall.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;

use super::archive::{self, Archive};
use super::copy;
use super::verify;
use crate::config::Durability;
use crate::store::dump::{DumpStore, Part, tally_all};
use crate::store::*;

pub(crate) fn message(conv: ConvId, seq: u64, from: UserId, to: UserId) -> MessageRecord {
    MessageRecord {
        conv_id: conv,
        seq,
        msg_id: seq,
        from,
        to,
        client_msg_id: format!("c{seq}"),
        content_type: 1,
        content: Bytes::from(format!("message {seq}")),
        server_time_ms: 1_000 + seq,
        recalled: false,
        recall_of_seq: 0,
        recall_event_seq: 0,
        mentions: None,
    }
}

/// A store with at least one record in every part (also the PostgreSQL dump tests' source).
pub(crate) fn filled(dir: &Path) -> FjallStore {
    let store = FjallStore::open(dir, Durability::None).unwrap();
    let a = store
        .create_user("alice", "h", "alice@example.com", 1)
        .unwrap()
        .user_id;
    let b = store.create_user("bob", "h", "", 2).unwrap().user_id;
    let token = TokenRecord {
        user_id: a,
        device_id: "phone".into(),
        issued_at_ms: 1,
        expires_at_ms: 9,
        platform: 1,
        last_seen_ms: 3,
    };
    store.put_token(&[7; 32], &token).unwrap();
    let flags = AccountFlags {
        disabled_at_ms: 5,
        disabled_by: "admin:x".into(),
        reason: "spam".into(),
    };
    store.set_user_flags(b, Some(&flags)).unwrap();
    let invite = InviteRecord {
        id: 0,
        code_hash: [3; 32],
        issuer: "admin:x".into(),
        created_ms: 1,
        expires_ms: 99,
        uses_max: 2,
        uses: 0,
        note: String::new(),
    };
    store.put_invite(&invite, 10, 1).unwrap();
    store
        .put_profile(
            a,
            &ProfileRecord {
                nickname: "Al".into(),
                ..Default::default()
            },
        )
        .unwrap();
    store
        .put_push_token(
            a,
            "phone",
            &PushTokenRecord {
                provider: 1,
                token: "t".into(),
                updated_ms: 1,
            },
        )
        .unwrap();
    store
        .append_audit(
            1,
            &[AuditRecord {
                at_ms: 1,
                actor: "system".into(),
                action: "x.y".into(),
                target: String::new(),
                from: String::new(),
                detail: String::new(),
            }],
        )
        .unwrap();
    let direct = ConvId::direct(a, b).unwrap();
    let group = ConvId::group(1).unwrap();
    store.claim(direct, 1, 0).unwrap();
    let mut g = CommitGroup {
        messages: (1..=5).map(|s| message(direct, s, a, b)).collect(),
        recalls: vec![(direct, 2, 5)],
        recency: vec![RecencyMove {
            user: a,
            conv: direct,
            from: None,
            to: 3,
        }],
        cursor_rows: vec![(direct, a, CursorRow::default())],
        next_msg_id: Some(6),
        ..Default::default()
    };
    g.messages.push(MessageRecord {
        mentions: Some(Box::new(Mentions {
            user_ids: vec![b],
            all: false,
        })),
        ..message(group, 1, a, 0)
    });
    g.contacts.relations.push((
        RelationKey {
            owner: a,
            kind: RelationKind::Friend,
            other: b,
        },
        Some(RelationRecord {
            since_ms: 1,
            message: String::new(),
        }),
    ));
    g.contacts.summaries.push(SummaryWrite {
        user: a,
        base: None,
        new: ContactSummary {
            friends: 1,
            ..Default::default()
        },
    });
    g.groups.groups.push((
        group,
        GroupRecord {
            name: "Team".into(),
            avatar_url: String::new(),
            intro: String::new(),
            owner: a,
            join_policy: JoinPolicy::Open,
            history_visible: true,
            mute_all: false,
            member_count: 1,
            admin_count: 0,
            application_count: 1,
            created_ms: 1,
            dissolved_seq: 0,
        },
    ));
    g.groups.members.push((
        group,
        a,
        Some(MemberRecord {
            role: GroupRole::Owner,
            joined_ms: 1,
            visible_from_seq: 1,
            muted_until_ms: 0,
        }),
    ));
    g.groups.user_groups.push((
        a,
        group,
        Some(UserGroupRecord {
            visible_from_seq: 1,
            left_seq: 0,
            notify_muted: false,
            added: false,
        }),
    ));
    g.groups.user_group_count_changes.push((a, 1));
    g.groups.applications.push((
        group,
        b,
        Some(ApplicationRecord {
            message: "hi".into(),
            sent_ms: 1,
            inviter: a,
        }),
    ));
    g.groups.mentions.push((group, b, 1));
    g.groups.read_histograms.push((
        group,
        ReadHistogram {
            base_seq: 0,
            below: 0,
            counts: BTreeMap::from([(1, 1)]),
        },
    ));
    g.groups.next_group_id = Some(2);
    store.append(&g).unwrap();
    store.persist().unwrap();
    store
}

#[test]
fn every_part_round_trips_through_a_copy_in_small_pages_and_import_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let source = filled(&tmp.path().join("a"));
    let expected = tally_all(source.dump_view().unwrap().as_ref(), 1).unwrap();
    for (part, tally) in &expected {
        assert!(tally.records > 0, "{} is exported", part.name());
    }
    let dest = FjallStore::open(&tmp.path().join("b"), Durability::None).unwrap();
    assert!(dest.is_empty().unwrap());
    let checkpoint = tmp.path().join("b").join(copy::CHECKPOINT_FILE);
    let view = source.dump_view().unwrap();
    copy::copy(view.as_ref(), "a", &dest, &checkpoint, 2, &mut |_| {}).unwrap();
    let found = tally_all(dest.dump_view().unwrap().as_ref(), 3).unwrap();
    verify::check(&verify::compare(&expected, &found)).unwrap();

    // The same batches again (what a resumed copy does): the same store.
    for part in Part::ALL {
        let page = view.export(part, None, usize::MAX).unwrap();
        dest.import(&page.items).unwrap();
    }
    dest.finish_import().unwrap();
    let again = tally_all(dest.dump_view().unwrap().as_ref(), 1000).unwrap();
    assert_eq!(again, found);

    // The indexes came along: by name, by e-mail, a user's tokens, groups by name.
    let alice = dest.user_id_by_name("ALICE").unwrap().unwrap();
    assert_eq!(
        dest.user_id_by_email("alice@example.com").unwrap(),
        Some(alice)
    );
    assert_eq!(dest.tokens_of_user(alice, 10).unwrap().len(), 1);
    assert_eq!(dest.groups_by_name("team", None, 10).unwrap().len(), 1);
    // Counted by finish_import, in the form the store reads (and adds changes to).
    assert_eq!(dest.user_group_count(alice).unwrap(), 1);
    let m = dest
        .message(ConvId::direct(alice, alice + 1).unwrap(), 2)
        .unwrap()
        .unwrap();
    assert!(m.recalled, "recalls apply to copied runs");
    assert_eq!(dest.next_msg_id().unwrap(), 6);
    assert!(!dest.is_empty().unwrap());
}

#[test]
fn a_backup_reads_back_as_its_manifest_says_and_a_flipped_byte_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let source = filled(&tmp.path().join("a"));
    let dir = tmp
        .path()
        .join("backups")
        .join(archive::backup_name(std::time::SystemTime::now()));
    let manifest = archive::write(
        || Ok(source.dump_view()?),
        &dir,
        "embedded:a",
        2,
        None,
        None,
    )
    .unwrap();
    let expected = tally_all(source.dump_view().unwrap().as_ref(), 7).unwrap();
    assert_eq!(manifest.tallies(), expected);
    let archive = Archive::open(&dir).unwrap();
    archive.check_files().unwrap();
    assert_eq!(tally_all(&archive, 1).unwrap(), expected);
    assert_eq!(archive::list(dir.parent().unwrap()).unwrap().len(), 1);

    let file = dir.join("users.dump");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let err = Archive::open(&dir)
        .unwrap()
        .check_files()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("backup part users") && err.contains("is corrupt"),
        "{err}"
    );
}

#[test]
fn verify_and_restore_check_the_files_part_and_restore_writes_nothing_from_a_bad_backup() {
    use super::commands;
    use super::files::{FILES_DIR, FilesSource};
    let tmp = tempfile::tempdir().unwrap();
    let source = filled(&tmp.path().join("a"));
    let root = tmp.path().join("files");
    std::fs::create_dir_all(root.join("files/f1")).unwrap();
    std::fs::write(root.join("files/f1/meta.json"), b"{}").unwrap();
    let dir = tmp.path().join("backup");
    let files = FilesSource {
        root,
        previous: None,
    };
    archive::write(
        || Ok(source.dump_view()?),
        &dir,
        "embedded:a",
        2,
        Some(&files),
        None,
    )
    .unwrap();
    let check = commands::verify_backup(&dir).unwrap();
    assert_eq!(check.files.unwrap().objects, 1);

    // The backup's one file record is lost: verify says so, and restore refuses before it
    // writes the store (or any file).
    std::fs::remove_file(dir.join(FILES_DIR).join("files/f1/meta.json")).unwrap();
    let err = commands::verify_backup(&dir).err().unwrap();
    assert!(err.to_string().contains("are damaged"), "{err}");
    let (data, restored_files) = (tmp.path().join("data"), tmp.path().join("restored-files"));
    let err = commands::restore(&dir, &data, Some(&restored_files), 3, &mut |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("are damaged"), "{err}");
    assert!(!data.exists(), "no store written from a bad backup");
    assert!(
        !restored_files.exists(),
        "no file written from a bad backup"
    );
}

/// `CursorRow` as rows written before 2026-12-05 hold it (the dedup window unpacked).
#[derive(serde::Serialize)]
struct OldCursorRow {
    cursor: CursorRecord,
    recent_sends: Vec<(u64, u64)>,
    devices: Vec<DeviceCursor>,
}

/// `ApplicationRecord` as records written before 2026-12-06 hold it (no inviter).
#[derive(serde::Serialize)]
struct OldApplication {
    message: String,
    sent_ms: u64,
}

/// `UserGroupRecord` as rows written before 2026-12-07 hold it (no `added`).
#[derive(serde::Serialize)]
struct OldUserGroup {
    visible_from_seq: u64,
    left_seq: u64,
    notify_muted: bool,
}

/// The bytes of `item`'s variant tag, then `fields`: a `DumpItem` frame whose record an older
/// build wrote.
fn old_frame(item: &crate::store::dump::DumpItem, fields: &impl serde::Serialize) -> Vec<u8> {
    let new = postcard::to_stdvec(item).unwrap();
    let (tag, _) = postcard::take_from_bytes::<u32>(&new).unwrap();
    let mut out = postcard::to_stdvec(&tag).unwrap();
    out.extend(postcard::to_stdvec(fields).unwrap());
    out
}

/// Writes `frames` as the part's whole dump file and makes the manifest say so, the way the
/// build that wrote those frames did: its checksum over the frames' bytes.
fn rewrite_part(dir: &Path, part: Part, frames: &[Vec<u8>]) {
    let manifest_path = dir.join(archive::MANIFEST);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let entry = manifest["parts"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["file"] == format!("{}.dump", part.name()))
        .unwrap();
    let mut file = Vec::new();
    let mut checksum = 0u64;
    for body in frames {
        file.extend((body.len() as u32).to_le_bytes());
        file.extend(body);
        checksum = checksum.wrapping_add(xxhash_rust::xxh3::xxh3_64(body));
    }
    std::fs::write(dir.join(format!("{}.dump", part.name())), &file).unwrap();
    entry["records"] = frames.len().into();
    entry["checksum"] = format!("{checksum:016x}").into();
    entry["bytes"] = file.len().into();
    entry["file_xxh3"] = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&file)).into();
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_backup_an_older_build_wrote_in_older_record_forms_verifies_and_restores() {
    use super::commands;
    use crate::store::dump::DumpItem;
    let tmp = tempfile::tempdir().unwrap();
    let source = filled(&tmp.path().join("a"));
    let dir = tmp.path().join("backup");
    archive::write(
        || Ok(source.dump_view()?),
        &dir,
        "embedded:a",
        2,
        None,
        None,
    )
    .unwrap();
    let view = source.dump_view().unwrap();
    let first = |part| view.export(part, None, 1).unwrap().items.remove(0);

    // The cursor row with its dedup window in the unpacked form of before 2026-12-05.
    let row = first(Part::CursorRows);
    let DumpItem::CursorRow { conv, user, .. } = row else {
        panic!("{row:?}")
    };
    let old_row = OldCursorRow {
        cursor: CursorRecord {
            delivered_seq: 5,
            read_seq: 4,
        },
        // FNV-1a 64 of "a" (the first rows), then a 32-bit folded hash (until 2026-12-05).
        recent_sends: vec![(0xaf63_dc4c_8601_ec8c, 3), (0xaf63_dc4c ^ 0x8601_ec8c, 4)],
        devices: Vec::new(),
    };
    rewrite_part(
        &dir,
        Part::CursorRows,
        &[old_frame(&row, &(conv, user, &old_row))],
    );
    // The application without the inviter it gained on 2026-12-06.
    let app = first(Part::Applications);
    let DumpItem::Application {
        group,
        user: applicant,
        ..
    } = app
    else {
        panic!("{app:?}")
    };
    let old_app = OldApplication {
        message: "let me in".into(),
        sent_ms: 7,
    };
    rewrite_part(
        &dir,
        Part::Applications,
        &[old_frame(&app, &(group, applicant, &old_app))],
    );
    // The user's group row without the `added` it gained on 2026-12-07.
    let listed = first(Part::UserGroups);
    let DumpItem::UserGroup {
        user: lister,
        group: listed_group,
        ..
    } = listed
    else {
        panic!("{listed:?}")
    };
    let old_listed = OldUserGroup {
        visible_from_seq: 1,
        left_seq: 3,
        notify_muted: true,
    };
    rewrite_part(
        &dir,
        Part::UserGroups,
        &[old_frame(&listed, &(lister, listed_group, &old_listed))],
    );

    let check = commands::verify_backup(&dir).unwrap();
    assert!(check.comparisons.iter().all(verify::Comparison::matches));
    let data = tmp.path().join("data");
    commands::restore(&dir, &data, None, 3, &mut |_| {}).unwrap();

    // Restored in today's forms, meaning what they meant.
    let store = FjallStore::open(&data, Durability::None).unwrap();
    let restored = store.cursor_row(conv, user).unwrap().unwrap();
    assert_eq!(restored.cursor.read_seq, 4);
    assert_eq!(restored.maybe_sent("a").collect::<Vec<_>>(), [4, 3]);
    let restored = store.application(group, applicant).unwrap().unwrap();
    assert_eq!(
        restored,
        ApplicationRecord {
            message: "let me in".into(),
            sent_ms: 7,
            inviter: 0,
        }
    );
    let restored = store.user_group(lister, listed_group).unwrap().unwrap();
    assert_eq!(
        restored,
        UserGroupRecord {
            visible_from_seq: 1,
            left_seq: 3,
            notify_muted: true,
            added: false,
        }
    );
}

/// The server's state is copied before the store's snapshot is opened: an admin CLI audit
/// entry the server moves from the state into the store meanwhile is in one or the other.
#[test]
fn the_state_is_copied_before_the_stores_snapshot_is_taken() {
    let tmp = tempfile::tempdir().unwrap();
    let source = filled(&tmp.path().join("a"));
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("admin")).unwrap();
    std::fs::write(data.join("admin/cli-audit.jsonl"), b"{}\n").unwrap();
    let dir = tmp.path().join("backup");
    let state_copied = dir
        .with_extension("partial")
        .join(super::state::STATE_DIR)
        .join("admin/cli-audit.jsonl");
    let manifest = archive::write(
        || {
            assert!(
                state_copied.exists(),
                "the snapshot is taken before the state is copied"
            );
            // The server imports the queue into the store now: the copy holds it.
            std::fs::remove_file(data.join("admin/cli-audit.jsonl")).unwrap();
            Ok(source.dump_view()?)
        },
        &dir,
        "embedded:a",
        2,
        None,
        Some(&data),
    )
    .unwrap();
    assert_eq!(manifest.state.unwrap().files.len(), 1);
}

/// A backup that fails after its `NAME.partial` was made removes it: the next attempt has a
/// new name, so nothing else would, and a backup that failed for want of space kept it full.
#[test]
fn a_failed_backup_removes_its_partial_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("admin")).unwrap();
    std::fs::write(data.join("admin/cli-audit.jsonl"), b"{}\n").unwrap();
    let dir = tmp.path().join("backup");
    let partial = dir.with_extension("partial");
    let failed = archive::write(
        || {
            assert!(
                partial.join(super::state::STATE_DIR).is_dir(),
                "state copied"
            );
            Err(super::BackupError::Spec(
                "the snapshot could not be read".into(),
            ))
        },
        &dir,
        "embedded:a",
        2,
        None,
        Some(&data),
    );
    assert!(failed.is_err());
    assert!(!partial.exists(), "the partial directory is removed");
    assert!(!dir.exists());
}

//! The server's state in a backup: copied out, checked, restored with its modes, and a
//! manifest cannot make a restore write anywhere else.

use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn put(path: &Path, bytes: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_state_is_backed_up_checked_and_restored_with_its_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    put(
        &data.join("config.overrides.toml"),
        b"[security]\ndeny = [\"203.0.113.7\"]\n",
        0o644,
    );
    put(
        &data.join("admin/credentials.json"),
        b"{\"users\":[],\"keys\":[]}",
        0o600,
    );
    put(&data.join("admin/credentials.lock"), b"", 0o644);
    put(&data.join("admin/cli-audit.jsonl"), b"{}\n", 0o600);
    put(&data.join("activity/day-20000.bin"), b"day one", 0o644);
    put(&data.join("activity/day-20001.bin"), b"day two", 0o644);
    put(&data.join("journals/0"), b"the store's", 0o644);

    let backup = tmp.path().join("backup");
    let copy = copy_out(&data, &backup).unwrap();
    let paths: Vec<&str> = copy.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "config.overrides.toml",
            "admin/credentials.json",
            "admin/cli-audit.jsonl",
            "activity/day-20000.bin",
            "activity/day-20001.bin",
        ]
    );
    check(&backup, &copy).unwrap();

    let restored = tmp.path().join("restored");
    copy_in(&backup, &restored, &copy).unwrap();
    for file in &copy.files {
        assert_eq!(
            fs::read(restored.join(&file.path)).unwrap(),
            fs::read(data.join(&file.path)).unwrap(),
            "{}",
            file.path
        );
    }
    assert_eq!(mode(&restored.join("admin/credentials.json")), 0o600);
    assert_eq!(mode(&restored.join("config.overrides.toml")), 0o644);
    assert!(!restored.join("admin/credentials.lock").exists());
    assert!(!restored.join("journals").exists());

    // A changed byte is found.
    put(
        &backup.join(STATE_DIR).join("activity/day-20001.bin"),
        b"day 2!!",
        0o600,
    );
    let err = check(&backup, &copy).unwrap_err().to_string();
    assert!(err.contains("is damaged"), "{err}");

    // A manifest naming anything else is refused before a byte is written.
    for path in [
        "../outside",
        "activity/../../outside",
        "admin/credentials.lock",
        "activity/",
        "journals/0",
    ] {
        let mut evil = copy.clone();
        evil.files[0].path = path.to_owned();
        let err = check(&backup, &evil).unwrap_err().to_string();
        assert!(err.contains("not a file a backup keeps"), "{path}: {err}");
    }
}

/// The CLI appends its audit queue in place: a copy made while a line is half written keeps
/// the whole lines only, and what it keeps checks against the manifest.
#[test]
fn the_cli_audit_queue_is_copied_in_whole_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    put(
        &data.join("admin/cli-audit.jsonl"),
        b"{\"action\":\"one\"}\n{\"action\":\"tw",
        0o600,
    );
    let backup = tmp.path().join("backup");
    let copy = copy_out(&data, &backup).unwrap();
    let copied = fs::read(backup.join(STATE_DIR).join("admin/cli-audit.jsonl")).unwrap();
    assert_eq!(copied, b"{\"action\":\"one\"}\n");
    assert_eq!(copy.files[0].bytes, copied.len() as u64);
    check(&backup, &copy).unwrap();
}

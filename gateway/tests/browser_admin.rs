//! The admin dashboard in a real browser (headless Chromium through `web-tests/`), against the
//! admin listener of a real server. Screenshots go to `target/test-artifacts/`.

mod common;

use common::browser::{Target, run_e2e_on};

#[test]
fn dashboard_login_audit_keys_and_a_viewer_refused() {
    run_e2e_on(
        "admin.e2e.mjs",
        &[],
        &["admin-login-refused", "admin-keys", "admin-viewer-refused"],
        Target::Admin,
    );
}

#[test]
fn dashboard_config_page_changes_a_live_key_and_a_viewer_is_refused() {
    run_e2e_on(
        "admin-config.e2e.mjs",
        &[],
        &[
            "admin-config-refused",
            "admin-config-changed",
            "admin-config-ip-rules",
            "admin-config-viewer",
        ],
        Target::Admin,
    );
}

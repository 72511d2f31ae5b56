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
fn dashboard_overview_charts_move_under_load_and_activity_shows_the_heaviest_sender() {
    run_e2e_on(
        "admin-overview.e2e.mjs",
        &[],
        &[
            "admin-overview-load",
            "admin-overview-activity",
            "admin-overview-phone",
        ],
        Target::Admin,
    );
}

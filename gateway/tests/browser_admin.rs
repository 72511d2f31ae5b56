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
fn dashboard_logs_tail_filter_pause_search_and_export() {
    run_e2e_on(
        "admin-logs.e2e.mjs",
        &[("LOGIN__FAILURES_FREE", "100")],
        &[
            "admin-logs-tail",
            "admin-logs-filtered",
            "admin-logs-search",
            "admin-logs-viewer",
            "admin-logs-left-early",
        ],
        Target::AdminWithOperators(&[
            "browsermark1",
            "browsermark2",
            "othermark",
            "othermark-paused",
        ]),
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

#[test]
fn dashboard_users_disable_kicks_the_chat_page_enable_and_a_group_dissolved() {
    run_e2e_on(
        "admin-users.e2e.mjs",
        &[],
        &[
            "admin-users-view",
            "admin-users-disabled",
            "admin-users-chat-kicked",
            "admin-users-enabled",
            "admin-groups-dissolved",
        ],
        Target::Admin,
    );
}

#[test]
fn dashboard_sends_a_notification_to_everyone_and_to_a_group() {
    run_e2e_on(
        "admin-notify.e2e.mjs",
        &[],
        &[
            "admin-notify-sent",
            "admin-notify-group",
            "admin-notify-viewer",
        ],
        Target::Admin,
    );
}

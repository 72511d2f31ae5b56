//! The chat page in a real browser: starts the server and runs a script of `web-tests/`
//! (Playwright driving headless Chromium). `chat.e2e.mjs`: a desktop page and a phone-sized
//! page chat, a send fails and is retried, the connection is cut and recovers, the server
//! restarts under it (asked for by the script on its stdout); after it the catch-up goes past
//! groups that answer NOT_FOUND and a recall, a conversation keeps a bounded number of
//! messages, and log out ends the token on the server (online and offline).
//! `chat-logout.e2e.mjs`: a logout the server puts off (its Logout answered UNAVAILABLE, the
//! pending logout's Login SERVER_FULL, through a Playwright WebSocket route) stays pending and is
//! sent again until the token is ended on the server; one whose Login is answered RATE_LIMITED
//! every time (a shared address's unknown tokens' count) is given up after three, and the
//! login form shown. `contacts.e2e.mjs`: search,
//! friend requests, presence, profiles and blocks through the Contacts view. `groups.e2e.mjs`:
//! three users create a group, chat, mention, read, invite and leave; a member removed while
//! offline sees it once back. `chat-system.e2e.mjs`:
//! operators' notifications (posted by the admin API on the script's `@notify`) show under
//! "System notices", read-only, live and after Sync. Screenshots of both
//! widths go to `target/test-artifacts/`.
//! Needs `/usr/bin/chromium` and `npm ci --prefix web-tests`; `.ci/run` installs both. Missing
//! either is a failure that says what to install, never a silent skip.

mod common;

use common::browser::run_e2e;

#[test]
fn two_browser_pages_chat_through_the_websocket_listener() {
    run_e2e(
        "chat.e2e.mjs",
        &[],
        &[
            "desktop-chat",
            "desktop-failed-send",
            "desktop-connection-lost",
            "phone-login",
            "phone-list",
            "phone-chat",
        ],
    );
}

#[test]
fn a_logout_the_server_puts_off_stays_pending_until_the_token_is_ended() {
    run_e2e(
        "chat-logout.e2e.mjs",
        &[],
        &["desktop-logout-put-off", "desktop-logout-rate-limited"],
    );
}

#[test]
fn contacts_view_in_browser_pages_search_request_presence_profile_block() {
    run_e2e(
        "contacts.e2e.mjs",
        // Presence drops (away, invisible) show after the quiet period: short here.
        &[("PRESENCE__QUIET_PERIOD_MS", "200")],
        &[
            "desktop-contacts",
            "desktop-blocked-chat",
            "desktop-presence-menu",
            "desktop-profile",
            "phone-contacts",
            "phone-contacts-request",
            "phone-profile",
            "phone-send-refused",
        ],
    );
}

#[test]
fn groups_in_browser_pages_create_chat_mention_read_count_invite_leave() {
    run_e2e(
        "groups.e2e.mjs",
        &[],
        &[
            "desktop-group-info",
            "desktop-group-chat",
            "phone-group-list",
            "phone-group-chat",
            "phone-group-info",
        ],
    );
}

#[test]
fn system_notices_in_browser_pages_read_only_live_and_after_sync() {
    run_e2e(
        "chat-system.e2e.mjs",
        &[],
        &["desktop-system", "phone-system"],
    );
}

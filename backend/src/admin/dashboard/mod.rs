//! The dashboard: plain files compiled into the binary (no build step), served at `/`. It talks
//! to the same `/api/` as scripts do, with the session cookie and the CSRF token.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::get;

use super::Admin;

/// Every file: its path, content type and content. A page is a module under `pages/`,
/// imported by `app.js`.
const FILES: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("index.html")),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_str!("app.css"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("app.js"),
    ),
    (
        "/ui.js",
        "text/javascript; charset=utf-8",
        include_str!("ui.js"),
    ),
    (
        "/pages/audit.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/audit.js"),
    ),
    (
        "/pages/keys.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/keys.js"),
    ),
    (
        "/pages/logs.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/logs.js"),
    ),
    (
        "/pages/logs.css",
        "text/css; charset=utf-8",
        include_str!("pages/logs.css"),
    ),
    (
        "/pages/users.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/users.js"),
    ),
    (
        "/pages/groups.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/groups.js"),
    ),
    (
        "/pages/notifications.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/notifications.js"),
    ),
    (
        "/pages/config.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/config.js"),
    ),
    (
        "/chart.js",
        "text/javascript; charset=utf-8",
        include_str!("chart.js"),
    ),
    (
        "/pages/overview.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/overview.js"),
    ),
    (
        "/pages/activity.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/activity.js"),
    ),
];

pub fn routes() -> Router<Arc<Admin>> {
    let mut router = Router::new();
    for &(path, content_type, body) in FILES {
        router = router.route(
            path,
            get(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                    ],
                    body,
                )
            }),
        );
    }
    router
}

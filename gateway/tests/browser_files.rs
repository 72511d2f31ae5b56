//! Files in the chat page, in a real browser (`web-tests/files.e2e.mjs`, Playwright driving
//! headless Chromium) against the real server: attach an image and a text file (progress to
//! 100 %), the image inline on the other side (a thumbnail from a blob URL) and the full
//! image, a download whose bytes hash to the original's, refusals and failures in words (413,
//! 409, 429, no network, then Retry), a chunk lost twice sent again, and an upload
//! interrupted by a reload and resumed (only the missing chunks sent).
//! Needs `/usr/bin/chromium` and `npm ci --prefix web-tests`, like `browser.rs`.

mod common;

use common::browser::run_e2e;

#[test]
fn files_in_browser_pages_attach_progress_inline_image_download_and_resume_after_reload() {
    run_e2e(
        "files.e2e.mjs",
        // Small chunks: a 4-chunk file is 197 KiB. Small limits: a too-large file is quick, and
        // a second unfinished upload is refused.
        &[
            ("FILES__CHUNK_BYTES", "65536"),
            ("FILES__FILE_BYTES_MAX", "1048576"),
            ("FILES__UPLOADS_IN_PROGRESS_MAX", "1"),
        ],
        &[
            "phone-files",
            "phone-image-viewer",
            "desktop-upload-resume",
            "desktop-files",
        ],
    );
}

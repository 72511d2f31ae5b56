//! Cluster mode with files on S3 (`files.storage = "s3"`): every node serves every file, an
//! upload may move between nodes mid-way (a client reconnecting elsewhere resumes it), a media
//! message sent on one node gives its recipients on another node the file and its thumbnail, and
//! a recall on one node hides the file on all; a user's limits hold across nodes. Real `ringchat` nodes on one PostgreSQL database,
//! Redis and an S3-compatible server: the servers `scripts/test.sh` starts
//! (RINGCHAT_TEST_POSTGRES_URL, RINGCHAT_TEST_REDIS_URL, RINGCHAT_TEST_S3_URL).

mod common;

use std::io::Cursor;
use std::net::SocketAddr;

use common::TestServer;
use common::cluster::{acked, redis_url, start_nodes_with, unique, wait_for_views};
use common::files::{download_at, file_ref, hex, media, message_at, upload_via};
use prost::Message as _;
use ringchat_bench::client::conversation_id;
use ringchat_proto::v1::{self, ContentType};
use sha2::{Digest, Sha256};

/// `[files]` on S3 for every node of one test: the test bucket under a key prefix of its own.
fn s3_settings(prefix: &str) -> Vec<(&'static str, String)> {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: this test needs an S3-compatible server (`bash \
                 scripts/test.sh` starts one; scripts/s3-test-server.sh)"
            )
        })
    };
    vec![
        ("FILES__ENABLED", "true".to_owned()),
        ("FILES__STORAGE", "s3".to_owned()),
        ("FILES__S3__ENDPOINT", var("RINGCHAT_TEST_S3_URL")),
        ("FILES__S3__REGION", var("RINGCHAT_TEST_S3_REGION")),
        ("FILES__S3__BUCKET", var("RINGCHAT_TEST_S3_BUCKET")),
        ("FILES__S3__KEY_PREFIX", prefix.to_owned()),
        (
            "FILES__S3__ACCESS_KEY_ID",
            var("RINGCHAT_TEST_S3_ACCESS_KEY_ID"),
        ),
        (
            "FILES__S3__SECRET_ACCESS_KEY",
            var("RINGCHAT_TEST_S3_SECRET_ACCESS_KEY"),
        ),
        ("FILES__S3__ALLOW_HTTP", "true".to_owned()),
        // The smallest chunks, so that a small file still has several to spread over nodes.
        ("FILES__CHUNK_BYTES", "65536".to_owned()),
    ]
}

fn two_nodes() -> Vec<TestServer> {
    two_nodes_with(&[])
}

/// [`two_nodes`] with `more` settings on both.
fn two_nodes_with(more: &[(&str, &str)]) -> Vec<TestServer> {
    let db = common::store::fresh_database();
    let prefix = format!("rc_files_{}", unique());
    let settings = s3_settings(&prefix);
    let mut extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.extend_from_slice(more);
    let nodes: Vec<TestServer> =
        start_nodes_with(&db, &redis_url(), &prefix, &["f1", "f2"], &extra)
            .into_iter()
            .map(|(_, server)| server)
            .collect();
    wait_for_views(&nodes, 2);
    nodes
}

/// A `width`×`height` PNG with a gradient (so that its thumbnail has something to scale).
fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Bytes that do not compress, `len` of them.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_on_s3_are_served_by_every_node_and_a_recall_hides_them_everywhere() {
    let nodes = two_nodes();
    let ws: Vec<SocketAddr> = nodes.iter().map(|n| n.ws).collect();
    let (mut alice, a) = nodes[0].user("alice").await;
    let (mut bob, b) = nodes[1].user("bob").await;

    // A document whose chunks go to alternate nodes, completed on the second; and an image.
    let doc = noise(300 * 1024);
    let doc_id = upload_via(&ws, &a.token, "data.bin", "application/octet-stream", &doc);
    let picture = png(640, 480);
    let rev: Vec<SocketAddr> = ws.iter().rev().copied().collect();
    let img_id = upload_via(&rev, &a.token, "photo.png", "image/png", &picture);

    // Sent on the first node; the recipient on the second sees the stored facts.
    let doc_ack = acked(
        &mut alice,
        media("d1", b.user_id, 0, ContentType::File, &file_ref(&doc_id)),
    )
    .await;
    let img_ack = acked(
        &mut alice,
        media("i1", b.user_id, 0, ContentType::Image, &file_ref(&img_id)),
    )
    .await;
    let ab = conversation_id(a.user_id, b.user_id);
    assert_eq!(img_ack.conversation_id, ab);
    let got = message_at(&mut bob, ab, img_ack.seq).await;
    let stored = v1::FileRef::decode(got.content.as_ref()).unwrap();
    assert_eq!(stored.sha256, hex(&Sha256::digest(&picture)));
    assert!(
        stored.thumb_width > 0 && stored.thumb_height > 0,
        "an image has a thumbnail: {stored:?}"
    );

    // Every node serves both files to the recipient through the message, and the thumbnail.
    for (n, at) in ws.iter().enumerate() {
        let (status, body) = download_at(*at, &b.token, &doc_id, "", Some((ab, doc_ack.seq)));
        assert_eq!(status, 200, "document on node {n}");
        assert!(body == doc, "the document's bytes on node {n}");
        let (status, body) = download_at(*at, &b.token, &img_id, "", Some((ab, img_ack.seq)));
        assert_eq!((status, body == picture), (200, true), "image on node {n}");
        let (status, thumb) = download_at(
            *at,
            &b.token,
            &img_id,
            "/thumbnail",
            Some((ab, img_ack.seq)),
        );
        assert_eq!(status, 200, "thumbnail on node {n}");
        let thumb = image::load_from_memory(&thumb).expect("the thumbnail is an image");
        assert_eq!(
            (thumb.width(), thumb.height()),
            (stored.thumb_width, stored.thumb_height),
            "the thumbnail has the dimensions the message announced"
        );
    }

    // A recall on the first node hides the image from the recipient on both nodes; the other
    // message still gives its file, and the uploader keeps both.
    alice
        .recall(ab, img_ack.seq)
        .await
        .unwrap()
        .expect("recalled");
    for at in &ws {
        let via = Some((ab, img_ack.seq));
        assert_eq!(download_at(*at, &b.token, &img_id, "", via).0, 404);
        assert_eq!(
            download_at(*at, &b.token, &img_id, "/thumbnail", via).0,
            404
        );
        let via = Some((ab, doc_ack.seq));
        assert_eq!(download_at(*at, &b.token, &doc_id, "", via).0, 200);
        assert_eq!(download_at(*at, &a.token, &img_id, "", None).0, 200);
    }
}

/// A user's file limits hold for the cluster: creates of one user on two nodes at once take
/// turns (a lease in Redis), so with one upload in progress allowed, exactly one of two
/// simultaneous creates gets it. Before, each node listed the storage without the other's
/// record and both passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_creates_on_two_nodes_cannot_pass_a_users_limit_together() {
    const ROUNDS: usize = 12;
    let nodes = two_nodes_with(&[("FILES__UPLOADS_IN_PROGRESS_MAX", "1")]);
    let ws: Vec<SocketAddr> = nodes.iter().map(|n| n.ws).collect();
    for round in 0..ROUNDS {
        let (_c, ok) = nodes[round % 2].user(&format!("racer{round}")).await;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let creates: Vec<_> = ws
            .iter()
            .map(|&at| {
                let (token, barrier) = (ok.token.clone(), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    create_status(at, &token)
                })
            })
            .collect();
        let mut statuses: Vec<u16> = creates.into_iter().map(|t| t.join().unwrap()).collect();
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            vec![201, 429],
            "round {round}: one create in progress allowed, one refused too_many_uploads"
        );
    }
}

/// `POST /files` for a small file at `at` as `token`'s user: the status.
fn create_status(at: SocketAddr, token: &str) -> u16 {
    let body = serde_json::json!({
        "name": "race.bin", "size": 10, "mime": "application/octet-stream",
        "sha256": hex(&Sha256::digest(b"0123456789")),
    });
    common::files::agent()
        .post(format!("http://{at}/files"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("files API reachable")
        .status()
        .as_u16()
}

/// A browser sends its next same-origin request on any idle kept-alive connection, a `/files`
/// one included: the page's `fetch('/assign')` there is answered as the shard answers it (200,
/// JSON naming a node), not 404 (the page would then silently stay on its own node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_on_a_kept_alive_file_connection_is_answered_as_on_the_shard() {
    use common::http1::Http1;
    let db = common::store::fresh_database();
    let prefix = format!("rc_files_assign_{}", unique());
    let settings = s3_settings(&prefix);
    let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let nodes: Vec<TestServer> = start_nodes_with(&db, &redis_url(), &prefix, &["f1"], &extra)
        .into_iter()
        .map(|(_, server)| server)
        .collect();
    wait_for_views(&nodes, 1);
    let ws = nodes[0].ws;
    let (_alice, a) = nodes[0].user("alice").await;
    let data = noise(4096);
    let file_id = upload_via(&[ws], &a.token, "a.bin", "application/octet-stream", &data);

    let mut c = Http1::connect(ws).await;
    let file = c
        .request(
            "GET",
            &format!("/files/{file_id}"),
            Some(&a.token),
            &[],
            b"",
        )
        .await
        .unwrap();
    assert_eq!(file.status, 200, "{file:?}");
    assert!(file.body == data);
    let assign = c.request("GET", "/assign", None, &[], b"").await.unwrap();
    assert_eq!(
        assign.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&assign.body)
    );
    assert_eq!(assign.json()["node_id"], "f1");
    assert_eq!(assign.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(assign.header("Cache-Control"), Some("no-store"));
}

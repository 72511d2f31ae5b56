//! Media messages through the real binary: a FileRef is checked when sent (the sender's own
//! file, or forwarded from a message the sender can read; its facts are the stored file's),
//! and recipients download the file through the message that carries it, while they may read
//! that message and it is not recalled.

mod common;

use common::TestServer;
use common::contacts::{ask, code};
use common::files::{download, file_ref, hex, media, message_at, upload};
use common::groups;
use prost::Message as _;
use ringchat_bench::client::conversation_id;
use ringchat_proto::Body;
use ringchat_proto::v1::{self, ContentType, ErrorCode};
use sha2::{Digest, Sha256};

fn acked(reply: Body) -> v1::SendAck {
    match reply {
        Body::SendAck(a) => a,
        other => panic!("expected SendAck, got {other:?}"),
    }
}

#[tokio::test]
async fn a_file_goes_to_those_who_may_read_the_message_that_carries_it() {
    let server = TestServer::start(&[]);
    let (mut alice, a) = server.user("alice").await;
    let (mut bob, b) = server.user("bob").await;
    let (mut carol, c) = server.user("carol").await;
    let pdf = b"%PDF-1.4 not really a pdf, but bytes to check".repeat(50);
    let file_id = upload(&server, &a.token, "report.pdf", "application/pdf", &pdf);

    // Sent with only the id: the server fills in the stored file's facts.
    let mut sent = file_ref(&file_id);
    sent.caption = "the report".into();
    let ack = acked(
        ask(
            &mut alice,
            media("m1", b.user_id, 0, ContentType::File, &sent),
        )
        .await,
    );
    let ab = conversation_id(a.user_id, b.user_id);
    assert_eq!(ack.conversation_id, ab);
    let got = message_at(&mut bob, ab, ack.seq).await;
    let stored = v1::FileRef::decode(got.content.as_ref()).unwrap();
    assert_eq!(stored.file_id, file_id);
    assert_eq!(stored.name, "report.pdf");
    assert_eq!(stored.size, pdf.len() as u64);
    assert_eq!(stored.mime, "application/pdf");
    assert_eq!(stored.sha256, hex(&Sha256::digest(&pdf)));
    assert_eq!(stored.caption, "the report");
    assert_eq!((stored.thumb_width, stored.thumb_height), (0, 0));

    // The recipient downloads through the message; without it, or through a message of a
    // conversation it is not in, or a seq that does not carry the file: 404 all alike.
    let (status, body) = download(&server, &b.token, &file_id, Some((ab, ack.seq)));
    assert_eq!(status, 200);
    assert_eq!(body, pdf);
    assert_eq!(download(&server, &b.token, &file_id, None).0, 404);
    assert_eq!(
        download(&server, &c.token, &file_id, Some((ab, ack.seq))).0,
        404
    );
    let text = acked(
        ask(
            &mut alice,
            ringchat_bench::client::text_message(b.user_id, "t1", "hi"),
        )
        .await,
    );
    assert_eq!(
        download(&server, &b.token, &file_id, Some((ab, text.seq))).0,
        404
    );

    // A client cannot lie about the file: another size, type or name is refused.
    for lie in [
        v1::FileRef {
            size: 1,
            ..file_ref(&file_id)
        },
        v1::FileRef {
            mime: "image/png".into(),
            ..file_ref(&file_id)
        },
        v1::FileRef {
            name: "holiday.jpg".into(),
            ..file_ref(&file_id)
        },
    ] {
        let reply = ask(
            &mut alice,
            media("lie", b.user_id, 0, ContentType::File, &lie),
        )
        .await;
        assert_eq!(code(reply), ErrorCode::InvalidArgument, "{lie:?}");
    }
    // The true values are accepted; a PDF is no IMAGE.
    let honest = v1::FileRef {
        size: pdf.len() as u64,
        mime: "application/pdf".into(),
        ..file_ref(&file_id)
    };
    acked(
        ask(
            &mut alice,
            media("m2", b.user_id, 0, ContentType::File, &honest),
        )
        .await,
    );
    let reply = ask(
        &mut alice,
        media("img", b.user_id, 0, ContentType::Image, &file_ref(&file_id)),
    )
    .await;
    assert_eq!(code(reply), ErrorCode::InvalidArgument);
    // Not a FileRef, not an id, or a file that does not exist.
    let garbage = Body::Send(v1::Send {
        client_msg_id: "g".into(),
        to_user_id: b.user_id,
        content_type: ContentType::File as i32,
        content: vec![0xff; 8].into(),
        ..Default::default()
    });
    assert_eq!(
        code(ask(&mut alice, garbage).await),
        ErrorCode::InvalidArgument
    );
    let reply = ask(
        &mut alice,
        media("x", b.user_id, 0, ContentType::File, &file_ref("../../etc")),
    )
    .await;
    assert_eq!(code(reply), ErrorCode::InvalidArgument);
    let reply = ask(
        &mut alice,
        media(
            "y",
            b.user_id,
            0,
            ContentType::File,
            &file_ref(&"0".repeat(32)),
        ),
    )
    .await;
    assert_eq!(code(reply), ErrorCode::NotFound);

    // Someone else's file is refused (the same answer as for none at all)...
    let reply = ask(
        &mut bob,
        media("b1", c.user_id, 0, ContentType::File, &file_ref(&file_id)),
    )
    .await;
    assert_eq!(code(reply), ErrorCode::NotFound);
    // ... unless forwarded from a message the sender can read; the recipient does not see where
    // it came from, and downloads through its own conversation.
    let forward = v1::FileRef {
        via_conversation_id: ab,
        via_seq: ack.seq,
        ..file_ref(&file_id)
    };
    let fwd = acked(
        ask(
            &mut bob,
            media("b2", c.user_id, 0, ContentType::File, &forward),
        )
        .await,
    );
    let bc = conversation_id(b.user_id, c.user_id);
    let got = message_at(&mut carol, bc, fwd.seq).await;
    let stored = v1::FileRef::decode(got.content.as_ref()).unwrap();
    assert_eq!((stored.via_conversation_id, stored.via_seq), (0, 0));
    assert_eq!(stored.size, pdf.len() as u64);
    assert_eq!(
        download(&server, &c.token, &file_id, Some((bc, fwd.seq))).0,
        200
    );
    // Carol cannot forward through a message she cannot read.
    let stolen = v1::FileRef {
        via_conversation_id: ab,
        via_seq: ack.seq,
        ..file_ref(&file_id)
    };
    let reply = ask(
        &mut carol,
        media("c1", a.user_id, 0, ContentType::File, &stolen),
    )
    .await;
    assert_eq!(code(reply), ErrorCode::NotFound);

    // A recall hides the file from the recipient; the uploader still has it.
    alice.recall(ab, ack.seq).await.unwrap().expect("recalled");
    assert_eq!(
        download(&server, &b.token, &file_id, Some((ab, ack.seq))).0,
        404
    );
    // Bob's forward is stored: its resend (the ack was lost) gets the original ack, though the
    // message it came through is recalled now; a new forward through it is refused.
    let again = acked(
        ask(
            &mut bob,
            media("b2", c.user_id, 0, ContentType::File, &forward),
        )
        .await,
    );
    assert!(again.duplicate);
    assert_eq!((again.seq, again.msg_id), (fwd.seq, fwd.msg_id));
    let reply = ask(
        &mut bob,
        media("b3", c.user_id, 0, ContentType::File, &forward),
    )
    .await;
    assert_eq!(code(reply), ErrorCode::NotFound);
    let (status, body) = download(&server, &a.token, &file_id, None);
    assert_eq!((status, body.len()), (200, pdf.len()));
}

#[tokio::test]
async fn media_and_text_sends_on_one_connection_commit_in_order() {
    let server = TestServer::start(&[]);
    let (mut alice, a) = server.user("alice").await;
    let (_bob, b) = server.user("bob").await;
    let file_id = upload(&server, &a.token, "note.ogg", "audio/ogg", b"OggS voice");
    let mut voice = file_ref(&file_id);
    voice.duration_ms = 1500;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            alice
                .send(media(
                    &format!("v{i}"),
                    b.user_id,
                    0,
                    ContentType::Audio,
                    &voice,
                ))
                .await
                .unwrap(),
        );
        ids.push(
            alice
                .send(ringchat_bench::client::text_message(
                    b.user_id,
                    &format!("t{i}"),
                    "after",
                ))
                .await
                .unwrap(),
        );
    }
    let mut last = 0;
    for id in ids {
        let seq = acked(alice.reply_to(id).await.unwrap()).seq;
        assert_eq!(seq, last + 1, "sends commit in the order they were sent");
        last = seq;
    }
    // duration_ms is for audio only.
    let reply = ask(
        &mut alice,
        media("f", b.user_id, 0, ContentType::File, &voice),
    )
    .await;
    assert_eq!(code(reply), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn group_members_download_only_what_their_history_shows() {
    let server = TestServer::start(&[]);
    let (mut alice, a) = server.user("alice").await;
    let (mut bob, b) = server.user("bob").await;
    let (mut dave, d) = server.user("dave").await;
    let file_id = upload(&server, &a.token, "plan.txt", "text/plain", b"the plan");
    // History hidden from those who join later.
    let g = groups::create(&mut alice, "g", &[b.user_id], v1::JoinPolicy::Open, false)
        .await
        .group
        .unwrap()
        .conversation_id;
    let before = acked(
        ask(
            &mut alice,
            media("g1", 0, g, ContentType::File, &file_ref(&file_id)),
        )
        .await,
    );
    let got = groups::push_at(&mut bob, g, before.seq).await;
    assert_eq!(
        v1::FileRef::decode(got.content.as_ref()).unwrap().file_id,
        file_id
    );
    assert_eq!(
        download(&server, &b.token, &file_id, Some((g, before.seq))).0,
        200
    );
    // Not a member yet: 404; a member who joined after the message: 404 still.
    assert_eq!(
        download(&server, &d.token, &file_id, Some((g, before.seq))).0,
        404
    );
    assert!(matches!(
        ask(&mut dave, groups::join(g)).await,
        Body::GroupOk(_)
    ));
    assert_eq!(
        download(&server, &d.token, &file_id, Some((g, before.seq))).0,
        404
    );
    // Sent again after the join: that message is dave's to read.
    let after = acked(
        ask(
            &mut alice,
            media("g2", 0, g, ContentType::File, &file_ref(&file_id)),
        )
        .await,
    );
    assert_eq!(
        download(&server, &d.token, &file_id, Some((g, after.seq))).0,
        200
    );
    // Bob may forward it from the group to a direct conversation.
    let forward = v1::FileRef {
        via_conversation_id: g,
        via_seq: before.seq,
        ..file_ref(&file_id)
    };
    acked(
        ask(
            &mut bob,
            media("b1", d.user_id, 0, ContentType::File, &forward),
        )
        .await,
    );
}

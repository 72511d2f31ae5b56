//! The test vectors in docs/PROTOCOL.md ("Test vectors") are read from the document itself and
//! checked against the codec, so the document cannot drift from it.
//!
//! Format of the section: one `### <name>` heading per vector, followed by a ```` ```json ````
//! block (the frame in protobuf JSON) and a ```` ```hex ```` block (the bytes on the TCP wire:
//! the 4-byte length prefix alone on the first line, then the encoded `Frame`). `vectors()` below
//! builds the same frames, in the same order, under the same names.

use bytes::BytesMut;
use prost::Message as _;
use ringchat_proto::v1::{self, ContentType, ErrorCode, Platform, login};
use ringchat_proto::{Body, Frame, LEN_PREFIX_BYTES, decode, encode_to_bytes, frame};

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
const SECTION: &str = "## Test vectors";
/// The values the vectors use, as the document names them.
const ALICE: u64 = 100_000_001;
const BOB: u64 = 100_000_002;
const CONVERSATION: u64 = (ALICE << 32) | BOB;
const TIME_MS: u64 = 1_700_000_000_000;

/// The frames the document must show, by heading, in order.
fn vectors() -> Vec<(&'static str, Frame)> {
    let text = || bytes::Bytes::from_static(b"hi");
    vec![
        (
            "Hello",
            frame(
                1,
                Body::Hello(v1::Hello {
                    protocol_version: 1,
                    client_name: "sdk-test".into(),
                }),
            ),
        ),
        (
            "HelloOk",
            frame(
                1,
                Body::HelloOk(v1::HelloOk {
                    protocol_version: 1,
                    frame_bytes_max: 65_536,
                    heartbeat_interval_ms: 30_000,
                    idle_timeout_ms: 60_000,
                    server_name: "ringchat".into(),
                    message_bytes_max: 32_768,
                    sync_page_max: 200,
                }),
            ),
        ),
        (
            "Login",
            frame(
                2,
                Body::Login(v1::Login {
                    account: Some(login::Account::Username("alice".into())),
                    credential: Some(login::Credential::Password("correct horse".into())),
                    device_id: "phone-1".into(),
                    platform: Platform::Ios as i32,
                    ..Default::default()
                }),
            ),
        ),
        (
            "Send",
            frame(
                3,
                Body::Send(v1::Send {
                    client_msg_id: "m-1".into(),
                    to_user_id: BOB,
                    content_type: ContentType::Text as i32,
                    content: text(),
                    ..Default::default()
                }),
            ),
        ),
        (
            "SendAck",
            frame(
                3,
                Body::SendAck(v1::SendAck {
                    msg_id: 1,
                    conversation_id: CONVERSATION,
                    seq: 1,
                    server_time_ms: TIME_MS,
                    duplicate: false,
                }),
            ),
        ),
        (
            "Push",
            frame(
                0,
                Body::Push(v1::Push {
                    message: Some(v1::Message {
                        msg_id: 1,
                        conversation_id: CONVERSATION,
                        seq: 1,
                        from_user_id: ALICE,
                        client_msg_id: "m-1".into(),
                        content_type: ContentType::Text as i32,
                        content: text(),
                        server_time_ms: TIME_MS,
                        recalled: false,
                        to_user_id: BOB,
                        recall_of_seq: 0,
                        ..Default::default()
                    }),
                }),
            ),
        ),
        (
            "Error",
            frame(
                4,
                Body::Error(v1::Error {
                    code: ErrorCode::RateLimited as i32,
                    message: "slow down".into(),
                    retry_after_ms: 100,
                }),
            ),
        ),
        (
            "Ping",
            frame(
                5,
                Body::Ping(v1::Ping {
                    client_time_ms: TIME_MS,
                }),
            ),
        ),
        (
            "Conversations",
            frame(6, Body::Conversations(v1::Conversations::default())),
        ),
        (
            "Login with Resume",
            frame(
                7,
                Body::Login(v1::Login {
                    credential: Some(login::Credential::Token("t0k3n".into())),
                    device_id: "phone-1".into(),
                    platform: Platform::Ios as i32,
                    resume: Some(v1::Resume {
                        since_server_time_ms: TIME_MS,
                        known: vec![v1::ConversationSeq {
                            conversation_id: CONVERSATION,
                            seq: 1,
                        }],
                    }),
                    ..Default::default()
                }),
            ),
        ),
        (
            "Resumed",
            frame(
                7,
                Body::Resumed(v1::Resumed {
                    complete: false,
                    reason: v1::ResumeIncomplete::TooOld as i32,
                    conversations: Vec::new(),
                }),
            ),
        ),
        ("Empty Frame", Frame::default()),
    ]
}

/// One vector as the document shows it.
struct DocVector {
    name: String,
    json: String,
    prefix: Vec<u8>,
    wire: Vec<u8>,
}

/// The text of the fenced block ```` ```<lang> ```` in `text`.
fn fenced<'a>(text: &'a str, lang: &str, name: &str) -> &'a str {
    let open = format!("```{lang}\n");
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("vector {name:?} has no ```{lang} block"))
        + open.len();
    let len = text[start..]
        .find("```")
        .unwrap_or_else(|| panic!("vector {name:?}: ```{lang} block is not closed"));
    text[start..start + len].trim_end()
}

/// Bytes written as two hex digits each, separated by white space.
fn parse_hex(hex: &str, name: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|byte| {
            assert_eq!(
                byte.len(),
                2,
                "vector {name:?}: {byte:?} is not one hex byte"
            );
            u8::from_str_radix(byte, 16)
                .unwrap_or_else(|_| panic!("vector {name:?}: {byte:?} is not a hex byte"))
        })
        .collect()
}

/// Bytes as the document shows them: 16 to a line.
fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn doc_vectors() -> Vec<DocVector> {
    let doc =
        std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("cannot read {DOC_PATH}: {e}"));
    let start = doc
        .find(&format!("\n{SECTION}\n"))
        .unwrap_or_else(|| panic!("{DOC_PATH} has no {SECTION:?} section"));
    let section = &doc[start + 1 + SECTION.len()..];
    let section = section.find("\n## ").map_or(section, |end| &section[..end]);
    section
        .split("\n### ")
        .skip(1)
        .map(|vector| {
            let name = vector.lines().next().unwrap_or_default().trim().to_owned();
            let json = fenced(vector, "json", &name).to_owned();
            let hex_block = fenced(vector, "hex", &name);
            let prefix_line = hex_block.lines().next().unwrap_or_default();
            let prefix = parse_hex(prefix_line, &name);
            let wire = parse_hex(hex_block, &name);
            DocVector {
                name,
                json,
                prefix,
                wire,
            }
        })
        .collect()
}

#[test]
fn the_protocol_document_shows_every_vector() {
    let names_in_doc: Vec<String> = doc_vectors().into_iter().map(|v| v.name).collect();
    let names_here: Vec<&str> = vectors().iter().map(|(name, _)| *name).collect();
    assert!(
        names_here.len() >= 6,
        "the document promises at least 6 vectors"
    );
    assert_eq!(
        names_in_doc, names_here,
        "the vectors in {SECTION:?} of {DOC_PATH} are not the ones this test builds"
    );
}

#[test]
fn the_vectors_are_what_the_codec_encodes_and_decodes() {
    let doc = doc_vectors();
    let built = vectors();
    assert_eq!(doc.len(), built.len(), "vector count in {DOC_PATH}");
    for (v, (name, frame)) in doc.iter().zip(&built) {
        assert_eq!(v.name, *name);
        let encoded = encode_to_bytes(frame);
        let json = serde_json::to_string(frame).expect("frame renders as JSON");
        let fix = format!(
            "vector {name:?}: the codec says\n```json\n{json}\n```\n```hex\n{}\n{}\n```",
            hex(&encoded[..LEN_PREFIX_BYTES]),
            hex(&encoded[LEN_PREFIX_BYTES..])
        );
        assert_eq!(v.prefix.len(), LEN_PREFIX_BYTES, "{fix}");
        assert_eq!(v.wire, encoded.as_ref(), "TCP bytes; {fix}");

        // TCP: the length-prefixed bytes decode to exactly this frame, consuming them all.
        let mut buf = BytesMut::from(v.wire.as_slice());
        assert_eq!(
            decode(&mut buf, 65_536).expect("vector decodes"),
            Some(frame.clone()),
            "{fix}"
        );
        assert!(buf.is_empty(), "vector {name:?}: bytes left over");

        // WebSocket binary: the same bytes without the prefix.
        let payload = &v.wire[LEN_PREFIX_BYTES..];
        assert_eq!(v.prefix, (payload.len() as u32).to_be_bytes(), "{fix}");
        assert_eq!(
            Frame::decode(payload).expect("payload decodes"),
            *frame,
            "{fix}"
        );

        // WebSocket text: the JSON parses to this frame, and the server renders the same JSON.
        let parsed: Frame = serde_json::from_str(&v.json)
            .unwrap_or_else(|e| panic!("vector {name:?}: JSON does not parse: {e}; {fix}"));
        assert_eq!(parsed, *frame, "JSON; {fix}");
        let doc_json: serde_json::Value = serde_json::from_str(&v.json).expect("JSON");
        assert_eq!(
            serde_json::to_value(frame).expect("frame renders as JSON"),
            doc_json,
            "JSON rendering; {fix}"
        );
    }
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use ringchat_proto::{Body, Frame, v1};

use super::{SENT_IN_PART, SENT_WHOLE};
use crate::shard::conn::Listen;
use crate::shard::conn::tests::{client, connect_on, runtime, test_shard, until};

/// Rounds of frames, each one small frame queued once the client has read everything (the
/// first on a fresh socket, which `write_now` sends whole), then a burst far more than the
/// sockets hold (the server's send buffer is 4 KiB, the client's receive buffer too), whose
/// first batch (64 KiB) `write_now` sends in part and `flush` finishes.
const ROUNDS: u64 = 8;
const BIG_ROUND_FRAMES: u64 = 16;
const SMALL_FRAME_BYTES: usize = 100;
const TOTAL: u64 = ROUNDS * (BIG_ROUND_FRAMES + 1);

/// Message bytes of frame `id`: its size varies (so that frame edges fall anywhere in a
/// batch) and every byte depends on the frame and its place, so a lost, doubled or moved byte
/// shows.
fn message(id: u64, small: bool) -> String {
    let bytes = if small {
        SMALL_FRAME_BYTES
    } else {
        1 + (id.wrapping_mul(2_654_435_761) % 20_000) as usize
    };
    (0..bytes)
        .map(|i| char::from(b'a' + ((id as usize * 7 + i) % 26) as u8))
        .collect()
}

fn expected(id: u64) -> Frame {
    let small = id.is_multiple_of(BIG_ROUND_FRAMES + 1);
    ringchat_proto::frame(
        id,
        Body::Error(v1::Error {
            message: message(id, small),
            ..Default::default()
        }),
    )
}

/// The client's end: how it reads one frame (`None`: the stream ended).
type Recv = Box<dyn FnMut() -> Option<Frame> + Send>;

/// Reads `TOTAL` frames slowly (a pause after each), checking each against `expected`, and
/// counting them in `received`.
fn read_all(mut recv: Recv, received: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for id in 0..TOTAL {
            let frame = recv().unwrap_or_else(|| panic!("the stream ended before frame {id}"));
            assert!(
                frame == expected(id),
                "frame {id} differs: {:?}",
                frame.request_id
            );
            received.store(id + 1, Ordering::Release);
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// A backlog far past what the socket takes, to a client that reads slowly: every frame
/// arrives whole and in order, though a burst's first batch went out partly from the
/// synchronous `write_now` and the rest from the async `flush`.
fn a_slow_readers_backlog_arrives_whole(
    listen: Listen,
    connect_client: fn(std::net::TcpStream) -> Recv,
) {
    runtime().block_on(async {
        SENT_IN_PART.with(|n| n.set(0));
        SENT_WHOLE.with(|n| n.set(0));
        let (shard, _requests) = test_shard();
        let (client, shared, _task) = connect_on(&shard, Some(4096), listen).await;
        let received = Arc::new(AtomicU64::new(0));
        let reader = {
            let received = Arc::clone(&received);
            // The WebSocket handshake too runs on the client's thread.
            std::thread::spawn(move || read_all(connect_client(client), received).join())
        };
        // Waits until the client has read `n` frames; a failed client says why itself.
        let read = async |n: u64| {
            until("the client has read what was sent", || {
                received.load(Ordering::Acquire) == n || reader.is_finished()
            })
            .await;
            received.load(Ordering::Acquire) == n
        };
        let mut id = 0;
        for round in 0..ROUNDS {
            if !read(id).await {
                break;
            }
            shard.enqueue(&shared, ringchat_proto::encode_to_bytes(&expected(id)));
            id += 1;
            until("the small frame is sent", || {
                shard.stats.frames_out.get() == id
            })
            .await;
            if round == 0 {
                assert_eq!(
                    SENT_WHOLE.with(std::cell::Cell::get),
                    1,
                    "one small frame on a fresh socket goes whole from write_now"
                );
            }
            for _ in 0..BIG_ROUND_FRAMES {
                shard.enqueue(&shared, ringchat_proto::encode_to_bytes(&expected(id)));
                id += 1;
            }
        }
        until("the client has read everything", || reader.is_finished()).await;
        if let Err(panic) = reader.join().expect("the client's thread") {
            std::panic::resume_unwind(panic);
        }
        assert_eq!(received.load(Ordering::Acquire), TOTAL);
        assert_eq!(shared.close.get(), None);
        // The first burst's first batch at least: 44 KiB or more (frames up to 20 KB) on a
        // socket that had taken a few hundred bytes before; the later ones too when the socket
        // has room again by then (8 of 8 here).
        let in_part = SENT_IN_PART.with(std::cell::Cell::get);
        assert!(
            in_part >= 1,
            "no batch went partly from write_now, the rest from flush"
        );
    });
}

#[test]
fn a_slow_tcp_readers_backlog_arrives_whole_across_the_fast_path() {
    a_slow_readers_backlog_arrives_whole(Listen::Tcp, |mut client| {
        let mut buf = BytesMut::new();
        Box::new(move || client::recv(&mut client, &mut buf))
    });
}

#[test]
fn a_slow_websocket_readers_backlog_arrives_whole_across_the_fast_path() {
    use tokio_tungstenite::tungstenite::{self, Message};
    a_slow_readers_backlog_arrives_whole(Listen::Ws, |client| {
        let (mut ws, _response) =
            tungstenite::client::client("ws://127.0.0.1/ws", client).expect("upgrade");
        Box::new(move || match ws.read().expect("a WebSocket message") {
            Message::Binary(data) => {
                Some(<Frame as prost::Message>::decode(&data[..]).expect("a Frame"))
            }
            Message::Close(_) => None,
            other => panic!("unexpected message {other:?}"),
        })
    });
}

use super::*;

const LIMITS: OutboundLimits = OutboundLimits {
    frames_max: 4,
    bytes_max: 100,
};

const ROOMY: OutboundLimits = OutboundLimits {
    frames_max: 4096,
    bytes_max: 1 << 30,
};

fn frame(bytes: usize) -> Bytes {
    Bytes::from(vec![0; bytes])
}

/// A shard's total and clock, and one connection's backlog tick.
struct Shard {
    total: Cell<u64>,
    since: Cell<u32>,
}

impl Shard {
    fn new(total: u64) -> Self {
        Self {
            total: Cell::new(total),
            since: Cell::new(0),
        }
    }

    fn at(&self, now: u64) -> Books<'_> {
        Books {
            total: &self.total,
            now,
            backlog_since: &self.since,
        }
    }
}

impl Outbound {
    fn push_own(&self, f: Bytes, limits: OutboundLimits, books: &Books<'_>) -> bool {
        self.push(Frame::Own(f), limits, books)
    }

    /// Ticks since the queue last was empty, at shard tick `now`; `None` while it is.
    fn age(&self, shard: &Shard, now: u64) -> Option<u64> {
        (!self.is_empty()).then(|| u64::from((now as u32).wrapping_sub(shard.since.get())))
    }
}

/// A frame shared by many queues is charged to the shard's total once whole, and by its
/// queue entry for each holder; each queue's own bytes (its limit) count it whole; whatever
/// way the entries leave, the total comes back to where it was.
#[test]
fn a_shared_frame_is_charged_to_the_shard_once() {
    let fanout = Fanout::new(frame(32 * 1024));
    let queues: Vec<Outbound> = (0..1000).map(|_| Outbound::default()).collect();
    let shards: Vec<Shard> = (0..1000).map(|_| Shard::new(0)).collect();
    let total = Cell::new(0);
    let books = |i: usize| Books {
        total: &total,
        now: 1,
        backlog_since: &shards[i].since,
    };
    for (i, q) in queues.iter().enumerate() {
        assert!(q.push(Frame::Shared(&fanout), ROOMY, &books(i)));
        assert_eq!(q.bytes(), 32 * 1024, "its own limit counts it whole");
        assert_eq!(q.charged(), SHARED_ENTRY_CHARGE_BYTES);
    }
    let entries = 1000 * u64::from(SHARED_ENTRY_CHARGE_BYTES);
    assert_eq!(total.get(), 32 * 1024 + entries);
    for q in &queues[..500] {
        q.pop_while(|_| true, &total);
    }
    for q in &queues[500..999] {
        q.clear(&total);
    }
    assert_eq!(
        total.get(),
        32 * 1024 + u64::from(SHARED_ENTRY_CHARGE_BYTES),
        "the buffer stays charged while one queue holds it"
    );
    queues[999].clear(&total);
    assert_eq!(total.get(), 0);
    // A frame smaller than an entry is charged its bytes, not more.
    let small = Fanout::new(frame(3));
    assert!(queues[1].push(Frame::Shared(&small), ROOMY, &books(1)));
    assert_eq!(total.get(), 3 + 3);
    queues[1].clear(&total);
    assert_eq!(total.get(), 0);
}

/// Two queues share a frame: whichever lets go first, the buffer stays in the shard's
/// total until the other has too. Before, the frame's bytes went with the queue charged
/// whole, and slow holders kept the buffer uncounted.
#[test]
fn a_shared_frame_stays_charged_until_its_last_holder_lets_go() {
    const LEN: u64 = 32 * 1024;
    let shard = Shard::new(0);
    let (a, b) = (Outbound::default(), Outbound::default());
    let fanout = Fanout::new(frame(LEN as usize));
    assert!(a.push(Frame::Shared(&fanout), ROOMY, &shard.at(1)));
    assert!(b.push(Frame::Shared(&fanout), ROOMY, &shard.at(1)));
    drop(fanout);
    a.pop_while(|_| true, &shard.total);
    assert!(shard.total.get() >= LEN, "{} charged", shard.total.get());
    b.pop_while(|_| true, &shard.total);
    assert_eq!(shard.total.get(), 0);
}

/// Small frames that wait behind a backlog are copied out of the chunks they were encoded
/// in, so the chunks are freed: a backlog of 100-byte frames no longer keeps 64 KiB per
/// frame. Frames queued before the backlog outlived a tick are copied once it has; a
/// connection that keeps up (its queue empties within the tick) copies nothing.
#[test]
fn small_frames_behind_a_backlog_do_not_keep_their_chunks() {
    const CHUNK: usize = 64 * 1024;
    let shard = Shard::new(0);
    let q = Outbound::default();
    let chunk = || Bytes::from(vec![7u8; CHUNK]);
    // Tick 1: a connection that keeps up shares its chunks.
    let kept: Vec<Bytes> = (0..4).map(|_| chunk()).collect();
    for c in &kept {
        assert!(q.push_own(c.slice(..100), ROOMY, &shard.at(1)));
    }
    assert!(
        kept.iter().all(|c| !c.is_unique()),
        "not copied within the tick"
    );
    q.pop_while(|_| true, &shard.total);
    assert!(kept.iter().all(Bytes::is_unique));
    // Tick 1 again: a backlog starts; at tick 2 it is behind.
    let early: Vec<Bytes> = (0..3).map(|_| chunk()).collect();
    for c in &early {
        assert!(q.push_own(c.slice(..100), ROOMY, &shard.at(1)));
    }
    let late: Vec<Bytes> = (0..3).map(|_| chunk()).collect();
    for c in &late {
        assert!(q.push_own(c.slice(..100), ROOMY, &shard.at(2)));
    }
    let fanout_chunk = chunk();
    let fanout = Fanout::new(fanout_chunk.slice(..100));
    let other = Outbound::default();
    let other_shard = Shard::new(0);
    assert!(other.push(Frame::Shared(&fanout), ROOMY, &other_shard.at(2)));
    assert!(q.push(Frame::Shared(&fanout), ROOMY, &shard.at(2)));
    drop(fanout);
    let big = chunk();
    assert!(q.push_own(big.slice(..COPY_BELOW_BYTES), ROOMY, &shard.at(2)));
    assert!(
        late.iter().all(Bytes::is_unique),
        "copied behind the backlog"
    );
    assert!(
        fanout_chunk.is_unique(),
        "a fan-out's frame is copied once, for every holder"
    );
    assert!(!big.is_unique(), "a frame of a quarter chunk is not copied");
    assert!(early.iter().all(|c| !c.is_unique()));
    // The reaper, at the backlog's first tick: what came before is copied too.
    assert_eq!(q.age(&shard, 2), Some(1));
    q.copy_out_small();
    assert!(early.iter().all(Bytes::is_unique));
    // Copies are the same frames, charged the same.
    let mut out = Vec::new();
    let charged = shard.total.get();
    let entry = u64::from(SHARED_ENTRY_CHARGE_BYTES.min(100));
    assert_eq!(charged, 6 * 100 + entry + COPY_BELOW_BYTES as u64);
    q.pop_while(
        |p| {
            out.push(p.frame.clone());
            true
        },
        &shard.total,
    );
    assert_eq!(out.len(), 8);
    assert!(out[..7].iter().all(|f| f.len() == 100 && f[0] == 7));
    // The other queue still holds the fan-out's frame: its buffer (charged with its first
    // holder) and its entry.
    assert_eq!(shard.total.get(), 0);
    assert_eq!(other_shard.total.get(), 100 + entry);
}

/// The queue's bounds, its bytes counted in the shard's total too, and the age of its
/// backlog.
#[test]
fn the_outbound_queue_is_bounded_in_frames_and_in_bytes() {
    let q = Outbound::default();
    let s = Shard::new(1000);
    // One frame is always taken, whatever its size.
    assert!(q.push_own(frame(500), LIMITS, &s.at(5)));
    assert!(!q.push_own(frame(1), LIMITS, &s.at(6)), "past the bytes");
    assert_eq!((q.len(), q.bytes(), s.total.get()), (1, 500, 1500));
    assert_eq!(q.age(&s, 9), Some(4));
    q.pop_while(|_| true, &s.total);
    assert_eq!((q.len(), q.bytes(), s.total.get()), (0, 0, 1000));
    assert_eq!(q.age(&s, 9), None);

    assert!(q.push_own(frame(60), LIMITS, &s.at(10)));
    assert!(
        q.push_own(frame(40), LIMITS, &s.at(11)),
        "exactly at the bound"
    );
    assert!(!q.push_own(frame(1), LIMITS, &s.at(11)));
    q.pop_while(|p| p.frame.len() == 60, &s.total);
    assert_eq!((q.len(), q.bytes(), s.total.get()), (1, 40, 1040));
    assert_eq!(q.charged(), 40);
    // Not empty since tick 10: a backlog that drains only in part keeps its age.
    assert_eq!(q.age(&s, 12), Some(2));
    for _ in 0..3 {
        assert!(q.push_own(frame(1), LIMITS, &s.at(12)));
    }
    assert!(!q.push_own(frame(1), LIMITS, &s.at(12)), "past the frames");
    q.push_last(frame(7), &s.at(12));
    assert_eq!((q.len(), q.bytes(), s.total.get()), (5, 50, 1050));
    q.clear(&s.total);
    assert_eq!(
        (q.len(), q.bytes(), q.charged(), s.total.get()),
        (0, 0, 0, 1000)
    );
    // The clock wraps.
    q.push_last(frame(1), &s.at(u64::from(u32::MAX)));
    assert_eq!(q.age(&s, 1 << 32), Some(1));
}

/// A fan-out's frame for WebSocket clients that speak JSON is rendered once for the shard:
/// every such holder writes the same text message, the frame's JSON; a binary holder writes
/// the protobuf. The rendering is charged to the shard's total until the last holder lets go.
#[test]
fn a_shared_frame_renders_its_json_once_for_all_its_text_clients() {
    use super::super::ws::{self, JSON_RENDERS};
    use bytes::BytesMut;
    use ringchat_proto::v1;

    let push = ringchat_proto::frame(
        0,
        ringchat_proto::Body::Push(v1::Push {
            message: Some(v1::Message {
                msg_id: 42,
                seq: 7,
                content: Bytes::from_static(b"hello, group"),
                ..Default::default()
            }),
        }),
    );
    let encoded = ringchat_proto::codec::encode_to_bytes(&push);
    let json = serde_json::to_vec(&push).unwrap();
    let mut want = BytesMut::new();
    ws::codec::put_header(&mut want, ws::codec::OP_TEXT, json.len());
    want.extend_from_slice(&json);

    let shard = Shard::new(0);
    let fanout = Fanout::new(encoded.clone());
    let queues: Vec<Outbound> = (0..4).map(|_| Outbound::default()).collect();
    for q in &queues {
        assert!(q.push(Frame::Shared(&fanout), ROOMY, &shard.at(1)));
    }
    drop(fanout);
    let len = encoded.len() as u64;
    let entries = |n: u64| n * u64::from(SHARED_ENTRY_CHARGE_BYTES).min(len);
    assert_eq!(shard.total.get(), len + entries(4));

    let write = |q: &Outbound, state: &ws::State| {
        let mut out = BytesMut::new();
        q.pop_while(
            |p| {
                state.put_frame(p.frame, p.text, &mut out);
                true
            },
            &shard.total,
        );
        out
    };
    let text = ws::State::json();
    let renders = JSON_RENDERS.with(std::cell::Cell::get);
    let first = write(&queues[0], &text);
    assert_eq!(&first[..], &want[..], "the frame's JSON, as a text message");
    assert_eq!(
        shard.total.get(),
        len + want.len() as u64 + entries(3),
        "the rendering is charged while the frame is held"
    );
    for q in &queues[1..3] {
        assert_eq!(write(q, &text), first);
    }
    assert_eq!(JSON_RENDERS.with(std::cell::Cell::get) - renders, 1);
    let binary = write(&queues[3], &ws::State::default());
    let body = &encoded[ringchat_proto::LEN_PREFIX_BYTES..];
    assert_eq!(binary[0], 0x80 | ws::codec::OP_BINARY);
    assert!(binary.ends_with(body));
    assert_eq!(
        shard.total.get(),
        0,
        "all of it given back by the last holder"
    );
}

//! How the sequencer takes its queue: everything queued up to the group size, in one take.

use std::time::Duration;

use tokio::sync::mpsc;

use super::take_queued;

#[test]
fn what_is_queued_is_taken_up_to_the_group_size_and_its_room_comes_back() {
    let (tx, mut rx) = mpsc::channel(8);
    for i in 0..5 {
        tx.try_send(i).unwrap();
    }
    let mut batch = vec![9];
    take_queued(&mut rx, &mut batch, 3);
    assert_eq!(batch, [9, 0, 1], "topped up to the group size");
    take_queued(&mut rx, &mut batch, 3);
    assert_eq!(batch, [9, 0, 1], "a full group takes nothing");
    batch.clear();
    take_queued(&mut rx, &mut batch, 3);
    assert_eq!(batch, [2, 3, 4]);
    // Every permit is back: the queue holds its whole capacity again.
    for i in 0..8 {
        tx.try_send(i).unwrap();
    }
    batch.clear();
    take_queued(&mut rx, &mut batch, 100);
    assert_eq!(batch, [0, 1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn an_empty_queue_is_not_waited_for() {
    let (tx, mut rx) = mpsc::channel::<u32>(8);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // On a thread of its own: were it to wait, the deadline below says so.
    let taker = std::thread::spawn(move || {
        let mut batch = Vec::new();
        take_queued(&mut rx, &mut batch, 3);
        done_tx.send(batch).unwrap();
    });
    let batch = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("take_queued returned with the queue empty and its sender alive");
    assert!(batch.is_empty());
    taker.join().unwrap();
    drop(tx);
}

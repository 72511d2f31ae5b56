//! A writer thread behind a bounded queue: logging threads (shards, the sequencer) hand it a
//! line with `try_send` and never wait; a full queue drops the line and counts it, and the
//! writer says how many were dropped in the output itself.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Lines written between flushes, at most (the writer also flushes whenever it is idle).
const BATCH_LINES_MAX: usize = 1024;

/// Where a sink's lines go.
pub trait LineTarget: Send + 'static {
    /// Writes one whole line (ending in `\n`).
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// Says in the output that `n` lines were dropped since the last note.
    fn note_dropped(&mut self, n: u64) -> io::Result<()>;
    /// Says (once per failure, on stderr) that writing fails.
    fn describe(&self) -> String;
}

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Sink {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    name: &'static str,
}

impl Sink {
    /// Starts the writer thread `rc-log-NAME` with room for `capacity` lines.
    pub fn spawn(name: &'static str, capacity: usize, target: impl LineTarget) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name(format!("{}{name}", crate::threads::LOG))
            .spawn(move || run(rx, target, &counter))?;
        Ok(Self { tx, dropped, name })
    }

    /// Queues a line (ending in `\n`); never blocks.
    pub fn send(&self, line: Vec<u8>) {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.count_drop(),
        }
    }

    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ringchat_log_lines_dropped_total", "sink" => self.name).increment(1);
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits (at most `timeout`) until every line queued before this call is written.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Full(_)) => return,
            }
        }
        let _ = ack_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

fn run(rx: Receiver<Msg>, mut target: impl LineTarget, dropped: &AtomicU64) {
    let mut failing = false;
    let mut noted = 0u64;
    let write = |target: &mut dyn LineTarget, r: io::Result<()>, failing: &mut bool| match r {
        Ok(()) => *failing = false,
        Err(err) => {
            if !*failing {
                // Not through tracing: this thread is the one that would write it.
                let _ = writeln!(
                    io::stderr(),
                    "ringchat: writing the {} failed: {err}; lines are dropped until it works again",
                    target.describe()
                );
            }
            *failing = true;
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    };
    while let Ok(first) = rx.recv() {
        let mut acks = Vec::new();
        let mut next = Some(first);
        let mut lines = 0;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(line) => {
                    let r = target.write_line(&line);
                    write(&mut target, r, &mut failing);
                    lines += 1;
                }
                Msg::Flush(ack) => acks.push(ack),
            }
            if lines < BATCH_LINES_MAX {
                next = rx.try_recv().ok();
            }
        }
        let now_dropped = dropped.load(Ordering::Relaxed);
        if now_dropped > noted && !failing {
            let r = target.note_dropped(now_dropped - noted);
            noted = now_dropped;
            write(&mut target, r, &mut failing);
        }
        let r = target.flush();
        write(&mut target, r, &mut failing);
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// The console: the process's stderr.
pub struct Stderr;

impl LineTarget for Stderr {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        io::stderr().lock().write_all(line)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn note_dropped(&mut self, n: u64) -> io::Result<()> {
        writeln!(
            io::stderr().lock(),
            "ringchat: {n} log line(s) dropped: the console did not keep up"
        )
    }
    fn describe(&self) -> String {
        "console (stderr)".into()
    }
}

/// A sink as the `fmt` layer's writer: each event is formatted into a buffer, queued whole.
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            sink: self,
            buf: Vec::new(),
        }
    }
}

/// One event's bytes, queued when dropped.
pub struct EventWriter<'a> {
    sink: &'a Sink,
    buf: Vec<u8>,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink.send(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Collects lines; blocks while `gate` is held, to fill the queue.
    struct Collect(Arc<Mutex<Vec<String>>>, Arc<Mutex<()>>);

    impl LineTarget for Collect {
        fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
            let _wait = self.1.lock().unwrap();
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(line).into_owned());
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn note_dropped(&mut self, n: u64) -> io::Result<()> {
            self.0.lock().unwrap().push(format!("dropped {n}\n"));
            Ok(())
        }
        fn describe(&self) -> String {
            "test".into()
        }
    }

    #[test]
    fn a_full_queue_drops_counts_and_says_so_without_blocking() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let sink = Sink::spawn("test", 4, Collect(Arc::clone(&out), Arc::clone(&gate))).unwrap();
        let started = Instant::now();
        for i in 0..100 {
            sink.send(format!("line {i}\n").into_bytes());
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "send never waits"
        );
        // The writer holds at most one line while blocked, the queue 4: the rest is dropped.
        assert!(sink.dropped() >= 95, "{}", sink.dropped());
        drop(held);
        sink.flush(Duration::from_secs(10));
        sink.send(b"after\n".to_vec());
        sink.flush(Duration::from_secs(10));
        let out = out.lock().unwrap();
        assert!(out.iter().any(|l| l == "after\n"), "{out:?}");
        let noted: u64 = out
            .iter()
            .filter_map(|l| l.strip_prefix("dropped "))
            .map(|n| n.trim().parse::<u64>().unwrap())
            .sum();
        assert_eq!(noted, sink.dropped(), "{out:?}");
    }
}

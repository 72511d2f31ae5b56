//! A child's output pipes read on threads as the output comes: a chatty child never blocks on
//! a full pipe (64 KiB), and a test that gives up on a child still has what it said, or takes
//! its lines with a deadline instead of blocking on the next one.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

/// One pipe, drained into memory by its own thread.
pub struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: JoinHandle<()>,
}

impl Captured {
    pub fn start(mut pipe: impl Read + Send + 'static) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bytes);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self { bytes, reader }
    }

    /// What came so far (the reader goes on).
    pub fn so_far(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// Everything: waits for the pipe's end, so only once the child has exited.
    pub fn finish(self) -> String {
        let Self { bytes, reader } = self;
        reader.join().expect("the pipe's reader");
        String::from_utf8_lossy(&bytes.lock().unwrap()).into_owned()
    }
}

/// The lines of `pipe`, read on a thread, to take with `recv_timeout`; the channel closes at
/// the pipe's end.
pub fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            // Once nobody listens the rest is still read (and dropped): the child never
            // blocks on its pipe.
            let _ = tx.send(line);
        }
    });
    rx
}

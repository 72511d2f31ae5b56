//! A real SMTP server for the e-mail tests: Python's aiosmtpd on loopback (`smtp_sink.py`),
//! installed by scripts/test.sh. Each mail it receives is announced on its stdout; tests wait on
//! those announcements with a deadline.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const MAIL_TIMEOUT: Duration = Duration::from_secs(20);

pub struct SmtpSink {
    child: Child,
    pub port: u16,
    mails: mpsc::Receiver<(PathBuf, String)>,
    /// Mails received so far, in order: (file, recipients).
    pub received: Vec<(PathBuf, String)>,
    _dir: tempfile::TempDir,
}

/// One received mail.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
}

impl Mail {
    /// The 6-digit code: the first run of exactly six digits after the headers.
    pub fn code(&self) -> String {
        let body = self
            .raw
            .split_once("\r\n\r\n")
            .map_or(&*self.raw, |(_, b)| b);
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() {
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                if i - start == 6 {
                    return body[start..i].to_owned();
                }
            } else {
                i += 1;
            }
        }
        panic!("no 6-digit code in the mail:\n{}", self.raw);
    }
}

impl SmtpSink {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 (scripts/test.sh installs aiosmtpd)");
        let stdout = child.stdout.take().expect("piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        let (mail_tx, mails) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("ready ") {
                    let _ = ready_tx.send(port.trim().parse::<u16>().expect("a port"));
                } else if let Some(rest) = line.strip_prefix("mail ") {
                    let (path, rcpt) = rest.split_once(' ').unwrap_or((rest, ""));
                    let _ = mail_tx.send((PathBuf::from(path), rcpt.to_owned()));
                }
            }
        });
        let port = ready_rx.recv_timeout(Duration::from_secs(30)).expect(
            "the SMTP sink (aiosmtpd) did not start: is aiosmtpd installed? run scripts/test.sh",
        );
        Self {
            child,
            port,
            mails,
            received: Vec::new(),
            _dir: dir,
        }
    }

    /// Server settings that send mail here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("EMAIL__SMTP__HOST", "127.0.0.1".to_owned()),
            ("EMAIL__SMTP__PORT", self.port.to_string()),
            ("EMAIL__SMTP__TLS", "none".to_owned()),
            (
                "EMAIL__SMTP__FROM",
                "ringchat <no-reply@ringchat.test>".to_owned(),
            ),
        ]
    }

    /// Waits for the next mail to `to`; mails to others that arrive meanwhile are kept.
    pub fn next_mail_to(&mut self, to: &str) -> Mail {
        let deadline = Instant::now() + MAIL_TIMEOUT;
        let seen = self.received.len();
        loop {
            if let Some((path, _)) = self.received[seen..]
                .iter()
                .find(|(_, rcpt)| rcpt.split(',').any(|r| r.eq_ignore_ascii_case(to)))
            {
                let raw = std::fs::read_to_string(path).expect("read mail");
                return Mail { raw };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.mails.recv_timeout(left) {
                Ok(mail) => self.received.push(mail),
                Err(_) => panic!("no mail to {to} within {MAIL_TIMEOUT:?}"),
            }
        }
    }

    /// Takes in every announcement already made, without waiting.
    pub fn drain(&mut self) -> usize {
        while let Ok(mail) = self.mails.try_recv() {
            self.received.push(mail);
        }
        self.received.len()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The code in the server's log line for a code it could not mail (`code=123456`, maybe
/// quoted, maybe with colour escapes around the field name).
pub fn logged_code(line: &str) -> String {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip an ANSI escape up to its final letter.
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let at = plain
        .find("code=")
        .unwrap_or_else(|| panic!("no code= in {plain:?}"));
    let digits: String = plain[at + 5..]
        .trim_start_matches('"')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(digits.len(), 6, "{plain:?}");
    digits
}

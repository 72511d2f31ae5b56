//! The tracing layer that turns each event (that passed the filter) into a [`LogLine`], once,
//! and hands its JSON to the file writer, the console (in `json` format) and the live tail.
//! Events of [`CONSOLE_ONLY_TARGET`] go to the console alone.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::line::{LogLine, timestamp};
use super::sink::Sink;
use super::tail::Tail;
use super::{CONSOLE_ONLY_TARGET, READY_TARGET};

pub struct Capture {
    pub(super) file: Option<Sink>,
    /// The console, when its format is `json`.
    pub(super) console: Option<Sink>,
    pub(super) tail: Arc<Tail>,
    pub(super) line_bytes_max: usize,
}

impl Capture {
    pub fn new(
        file: Option<Sink>,
        console_json: Option<Sink>,
        tail: Arc<Tail>,
        line_bytes_max: usize,
    ) -> Self {
        Self {
            file,
            console: console_json,
            tail,
            line_bytes_max,
        }
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = LogLine {
            ts: timestamp(SystemTime::now()),
            level: (*meta.level()).into(),
            target: meta.target().to_owned(),
            thread: std::thread::current().name().map(str::to_owned),
            msg: String::new(),
            fields: Map::new(),
        };
        event.record(&mut Fields(&mut line));
        // The tail keeps the cut line too: an event with a huge field costs the ring no more
        // than `log.line_bytes_max`.
        let json = line.fit(self.line_bytes_max);
        let bytes = || {
            let mut b = Vec::with_capacity(json.len() + 1);
            b.extend_from_slice(json.as_bytes());
            b.push(b'\n');
            b
        };
        // The ready line is on stdout already; the console does not repeat it.
        if let Some(console) = &self.console
            && meta.target() != READY_TARGET
        {
            console.send(bytes());
        }
        if meta.target() == CONSOLE_ONLY_TARGET {
            return;
        }
        if let Some(file) = &self.file {
            file.send(bytes());
        }
        self.tail.push(line, json);
    }
}

struct Fields<'a>(&'a mut LogLine);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => match value {
                Value::String(s) => self.0.msg.push_str(&s),
                other => {
                    let _ = write!(self.0.msg, "{other}");
                }
            },
            // What the `log` bridge adds (module, file, line): the target says enough.
            name if name.starts_with("log.") => {}
            name => {
                self.0.fields.insert(name.to_owned(), value);
            }
        }
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn the_tail_keeps_an_event_cut_to_the_line_limit() {
        const LINE_BYTES_MAX: usize = 16 * 1024;
        let tail = Arc::new(Tail::new(4));
        let capture = Capture::new(None, None, Arc::clone(&tail), LINE_BYTES_MAX);
        let subscriber = tracing_subscriber::registry().with(capture);
        let big = "x".repeat(1 << 20);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(big = %big, "one huge field");
        });
        let sub = tail.subscribe(None, 4);
        let [event] = &sub.backlog[..] else {
            panic!("{} events", sub.backlog.len())
        };
        assert!(event.json.len() <= LINE_BYTES_MAX, "{}", event.json.len());
        let kept = serde_json::to_string(&event.line).unwrap();
        assert!(
            kept.len() <= LINE_BYTES_MAX,
            "the tail holds {} bytes",
            kept.len()
        );
        assert!(event.line.fields.contains_key("truncated_from_bytes"));
    }

    #[test]
    fn console_only_events_stay_out_of_the_tail() {
        let tail = Arc::new(Tail::new(4));
        let capture = Capture::new(None, None, Arc::clone(&tail), 16 * 1024);
        let subscriber = tracing_subscriber::registry().with(capture);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: CONSOLE_ONLY_TARGET, code = "123456", "a secret");
            tracing::info!("an ordinary event");
        });
        let sub = tail.subscribe(None, 4);
        let msgs: Vec<_> = sub.backlog.iter().map(|e| e.line.msg.as_str()).collect();
        assert_eq!(msgs, ["an ordinary event"]);
    }
}

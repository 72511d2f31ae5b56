//! The spans of a message's path and the W3C trace context (`traceparent`) that carries a
//! trace from node to node in the link protocol (`node.proto`: `Forward`, `Answer`,
//! `ToUsers`, `ToGroup`). A span is made only when tracing is on and the message is sampled:
//! an unsampled message carries no `traceparent` and the nodes after it make no span.

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue, Value};

/// The W3C trace context of a sampled span: what crosses a link (as `traceparent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Traceparent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// Length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
const TRACEPARENT_LEN: usize = 55;

impl Traceparent {
    /// `00-{trace id}-{span id}-{flags}`, lower-case hex (W3C Trace Context, level 1).
    pub(crate) fn encode(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(TRACEPARENT_LEN);
        s.push_str("00-");
        for b in self.trace_id {
            let _ = write!(s, "{b:02x}");
        }
        s.push('-');
        for b in self.span_id {
            let _ = write!(s, "{b:02x}");
        }
        let _ = write!(s, "-{:02x}", self.flags);
        s
    }

    /// A `traceparent` as W3C Trace Context reads it; `None` for an empty or malformed one
    /// (the message is then simply not traced further). Later versions are read by their
    /// version-00 prefix, as the specification asks.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() < TRACEPARENT_LEN || (b.len() > TRACEPARENT_LEN && b[TRACEPARENT_LEN] != b'-') {
            return None;
        }
        let version = hex::<1>(&b[0..2])?[0];
        if version == 0xff || (version == 0 && b.len() != TRACEPARENT_LEN) {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let trace_id = hex::<16>(&b[3..35])?;
        let span_id = hex::<8>(&b[36..52])?;
        let flags = hex::<1>(&b[53..55])?[0];
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    fn context(&self) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        ))
    }
}

/// Lower-case hex only (W3C: upper case is invalid).
fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        *out.get_mut(i)? = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    (s.len() == 2 * N).then_some(out)
}

/// One recorded span of a message's path, ended when dropped. Boxed: it travels with the
/// write through the sequencer (`WriteOp::trace`) at the size of a pointer.
pub(crate) struct MsgSpan(Box<opentelemetry_sdk::trace::Span>);

impl std::fmt::Debug for MsgSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MsgSpan").field(&self.traceparent()).finish()
    }
}

impl MsgSpan {
    /// A new trace for one message, when tracing is on and the sampler picks it.
    pub(crate) fn root(name: &'static str, kind: SpanKind) -> Option<Self> {
        Self::start(name, kind, &Context::new())
    }

    /// A span on this node of the trace `parent` (a `traceparent` from another node); `None`
    /// when tracing is off here or `parent` is empty or malformed.
    pub(crate) fn child(name: &'static str, kind: SpanKind, parent: &str) -> Option<Self> {
        if parent.is_empty() {
            return None;
        }
        super::tracer()?;
        Self::start(name, kind, &Traceparent::parse(parent)?.context())
    }

    fn start(name: &'static str, kind: SpanKind, parent: &Context) -> Option<Self> {
        let tracer = super::tracer()?;
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(tracer, parent);
        span.span_context()
            .is_sampled()
            .then(|| Self(Box::new(span)))
    }

    /// What the next node's spans name as their parent.
    pub(crate) fn traceparent(&self) -> Traceparent {
        let c = self.0.span_context();
        Traceparent {
            trace_id: c.trace_id().to_bytes(),
            span_id: c.span_id().to_bytes(),
            flags: c.trace_flags().to_u8(),
        }
    }

    pub(crate) fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        self.0.set_attribute(KeyValue::new(key, value));
    }

    /// Marks the span failed (a refusal, a deadline, a link down).
    pub(crate) fn fail(&mut self, why: &'static str) {
        self.0.set_status(Status::error(why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_bad_ones_are_refused() {
        let t = Traceparent {
            trace_id: *b"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36",
            span_id: *b"\x00\xf0\x67\xaa\x0b\xa9\x02\xb7",
            flags: 1,
        };
        let s = t.encode();
        assert_eq!(s, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(Traceparent::parse(&s), Some(t));
        // A later version with more fields is read by its prefix.
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert_eq!(Traceparent::parse(later), Some(t));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Traceparent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn no_span_when_tracing_is_off() {
        assert!(MsgSpan::root("x", SpanKind::Internal).is_none());
        assert!(
            MsgSpan::child(
                "x",
                SpanKind::Server,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            )
            .is_none()
        );
    }
}

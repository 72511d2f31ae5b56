//! `GET /api/logs/stream`: the live tail as Server-Sent Events. Each event is `event: log`,
//! `id: <event id>` (the process's epoch and the event's number: an id from before a restart
//! resumes with the whole ring), `data: <the JSON line>`; a reader that fell behind gets
//! `event: skipped`, `data: {"missed": N}` and goes on with the newest. A stream ends after
//! `log.stream_duration_max_s`: the browser's EventSource reconnects by itself, is
//! authenticated again, and resumes after its `Last-Event-ID`. That deadline is checked when
//! hyper asks for the next event, which it does not while the socket is full: a reader that
//! stops reading is dropped by the listener instead (`admin.write_stall_timeout_ms`,
//! `write_stall.rs`), and its place with the body.
//!
//! A stream also ends once the caller's access does (the API key revoked, the session ended,
//! the operator removed or their password replaced): that is checked before every event and
//! every `CREDENTIAL_RECHECK` while none comes, so nothing is sent past it, and the browser's
//! reconnect is refused.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::Admin;
use super::auth::{Operator, Viewer};
use super::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use super::logs_api::logs;
use crate::logs::filter::LineFilter;
use crate::logs::streams::{StreamPlace, StreamPlaces};
use crate::logs::tail::TailEvent;

/// A comment line this often keeps proxies from closing a quiet stream, and finds readers
/// that went away.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// What EventSource waits before reconnecting.
const RECONNECT: Duration = Duration::from_secs(1);
/// How long a quiet stream may outlive its caller's access (events are checked one by one).
const CREDENTIAL_RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// This level or a more severe one: `trace`, `debug`, `info`, `warn`, `error`.
    pub level: Option<String>,
    /// The target (module path) starts with this.
    pub target: Option<String>,
    /// The message or a field contains this, ignoring case (at most 256 bytes).
    pub q: Option<String>,
    /// Recent events to send first, 0 (default) to `log.tail_events_max`. Ignored on a
    /// reconnect with `Last-Event-ID`, which resumes after that event instead.
    pub backlog: Option<u32>,
}

/// The live tail of new log events (Server-Sent Events), filtered. At most `log.streams_max`
/// streams at once, `log.streams_per_operator_max` of them one operator's.
#[utoipa::path(get, path = "/api/logs/stream", tag = "logs", params(StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event (sent by EventSource on reconnect); an id from before a restart resumes with the whole ring")),
    responses((status = 200, content_type = "text/event-stream", body = String,
               description = "`event: log` (id: the event's id, data: a JSON log line) and `event: skipped` (data: {\"missed\": N})"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn stream_logs(
    State(admin): State<Arc<Admin>>,
    Viewer(op): Viewer,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let logs = logs(&admin)?;
    let filter = LineFilter::parse(
        q.level.as_deref(),
        q.target.as_deref(),
        q.q.as_deref(),
        None,
        None,
    )
    .map_err(ApiError::invalid)?;
    let backlog = q.backlog.unwrap_or(0) as usize;
    if backlog > logs.config.tail_events_max {
        return Err(ApiError::invalid(format!(
            "backlog must be at most {} (log.tail_events_max)",
            logs.config.tail_events_max
        )));
    }
    let after = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID is not an event id of this stream")
                })
        })
        .transpose()?;
    let place = stream_place(&logs.streams, &op.actor())?;
    let sub = logs.tail.subscribe(after, backlog);
    let state = Tailing {
        first: true,
        missed: sub.missed,
        backlog: sub.backlog.into(),
        live: sub.live,
        filter,
        deadline: tokio::time::Instant::now()
            + Duration::from_secs(logs.config.stream_duration_max_s),
        _place: place,
        admin: Arc::clone(&admin),
        op,
    };
    let events = futures_util::stream::unfold(state, |mut st| async move {
        let event = st.next().await?;
        Some((Ok(event), st))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One reader's place in the tail.
struct Tailing {
    first: bool,
    missed: u64,
    backlog: VecDeque<Arc<TailEvent>>,
    live: tokio::sync::broadcast::Receiver<Arc<TailEvent>>,
    filter: LineFilter,
    deadline: tokio::time::Instant,
    /// Holds one of `log.streams_max` places (and of its operator's
    /// `log.streams_per_operator_max`) while the stream lives.
    _place: StreamPlace,
    admin: Arc<Admin>,
    /// Who opened the stream: it ends when their access does.
    op: Operator,
}

impl Tailing {
    /// The next event to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<Event> {
        let event = self.next_event().await?;
        self.allowed().then_some(event)
    }

    fn allowed(&self) -> bool {
        self.admin.auth.still_holds(&self.op)
    }

    async fn next_event(&mut self) -> Option<Event> {
        if std::mem::take(&mut self.first) {
            return Some(
                Event::default()
                    .retry(RECONNECT)
                    .comment("ringchat log tail"),
            );
        }
        if self.missed > 0 {
            return Some(skipped(std::mem::take(&mut self.missed)));
        }
        while let Some(e) = self.backlog.pop_front() {
            if self.filter.matches(&e.line) {
                return Some(log_event(&e));
            }
        }
        loop {
            let wake = self
                .deadline
                .min(tokio::time::Instant::now() + CREDENTIAL_RECHECK);
            match tokio::time::timeout_at(wake, self.live.recv()).await {
                Err(_) if wake < self.deadline && self.allowed() => {}
                Err(_) | Ok(Err(RecvError::Closed)) => return None,
                Ok(Ok(e)) if self.filter.matches(&e.line) => return Some(log_event(&e)),
                Ok(Ok(_)) => {}
                Ok(Err(RecvError::Lagged(n))) => {
                    metrics::counter!("ringchat_log_stream_skipped_total").increment(n);
                    return Some(skipped(n));
                }
            }
        }
    }
}

fn log_event(e: &TailEvent) -> Event {
    Event::default()
        .event("log")
        .id(e.seq.to_string())
        .data(&e.json)
}

fn skipped(n: u64) -> Event {
    Event::default()
        .event("skipped")
        .data(format!("{{\"missed\":{n}}}"))
}

/// The base of `retry_after_ms` when no live-tail place is free (a viewer's tab stays open for
/// minutes: sooner would only be refused again).
const STREAMS_FULL_RETRY_AFTER_MS: u64 = 5_000;

/// A live-tail place for `actor`, or 503 when `log.streams_max` (or the operator's share) are
/// open.
fn stream_place(places: &StreamPlaces, actor: &str) -> ApiResult<StreamPlace> {
    places
        .take(actor)
        .map_err(|no| ApiError::busy(no.to_string(), STREAMS_FULL_RETRY_AFTER_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_stream_places_answer_a_jittered_retry_after() {
        let places = StreamPlaces::new(1, 1);
        let _held = places.take("op").unwrap();
        for actor in ["op", "another"] {
            crate::retry_after::assert_jittered(STREAMS_FULL_RETRY_AFTER_MS, || {
                stream_place(&places, actor)
                    .err()
                    .unwrap()
                    .retry_after_ms
                    .unwrap()
            });
        }
    }
}

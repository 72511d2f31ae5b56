//! A request that may change something runs to its end whatever its client does.
//!
//! hyper drops a request's handler future when the HTTP/1 client closes its side before the
//! answer: it reads the EOF right after the request (a script's timeout, `curl` interrupted, a
//! client that half-closes after sending), often before the handler was first polled. A
//! handler cut between its store write and its follow-ups would leave a half-done change: a
//! disable stored but its sessions not kicked, a notification registered but never run, no
//! audit entry. So the listener (`listener.rs`) starts every request whose method may change
//! state (anything but GET, HEAD, OPTIONS, TRACE) as a task of its own the moment hyper hands
//! it over — "change + follow-ups + audit" whole, extractors included — and only the wait for
//! its answer goes with the connection (dropping a `JoinHandle` does not cancel its task).
//! Reads stay attached: a closed live-tail stream or export ends with its connection.
//!
//! At shutdown ([`Changes`]) new changes are refused (503 with `Retry-After`; reads go on) and
//! those in flight are waited for, before the final flush of the audit log: a change that
//! landed after it would have had its entry queued and never written.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::Method;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use tokio::sync::watch;

use super::error::ApiError;

/// After [`Changes::finish`] cut the changes still running, how long they get to let go.
const CUT_CHANGES_STOP_MAX: Duration = Duration::from_secs(1);

/// Whether a request with `method` may change state (and so must not stop halfway).
pub(super) fn changes_state(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The admin changes in flight, and whether new ones are taken. Each admitted change holds a
/// receiver of `cut` (`true`: stop now); `finish` waits for the last one to go.
pub(crate) struct Changes {
    /// Cloned for each change admitted; `None` once changes are refused.
    admit: Mutex<Option<watch::Receiver<bool>>>,
    cut: watch::Sender<bool>,
}

impl Default for Changes {
    fn default() -> Self {
        let (cut, admit) = watch::channel(false);
        Self {
            admit: Mutex::new(Some(admit)),
            cut,
        }
    }
}

impl Changes {
    /// A place for one change, or `None` once they are refused. Taken under the same lock
    /// `refuse` takes, so none slips in after it.
    fn admit(&self) -> Option<watch::Receiver<bool>> {
        self.admit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// From now on, every change is answered 503 (reads go on).
    pub(crate) fn refuse(&self) {
        self.admit.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Refuses new changes and waits until those in flight have ended, at most `within`; the
    /// ones still running then are cut (their handlers dropped, answered 503) rather than left
    /// to land after the caller's final audit flush. Returns how many were cut.
    pub(crate) async fn finish(&self, within: Duration) -> usize {
        self.refuse();
        if tokio::time::timeout(within, self.cut.closed())
            .await
            .is_ok()
        {
            return 0;
        }
        let running = self.cut.receiver_count();
        let _ = self.cut.send(true);
        let _ = tokio::time::timeout(CUT_CHANGES_STOP_MAX, self.cut.closed()).await;
        running
    }
}

/// What a change gets once the server is stopping.
fn stopping() -> Response {
    ApiError::unavailable(
        "the server is shutting down and takes no more changes: try again once it is back",
        crate::retry_after::unavailable_retry_after_ms(),
    )
    .into_response()
}

/// Handles a request: `handling` (its router future) starts now as its own task when `detach`,
/// so that dropping the returned future leaves it running to its end; else it is returned as
/// it is. A change is admitted by `changes` (refused once the server stops). Call it where
/// hyper hands the request over, not inside a future hyper may drop before polling it.
pub(super) fn handle<F>(
    detach: bool,
    changes: &Changes,
    handling: F,
) -> impl Future<Output = Result<Response, Infallible>> + Send + use<F>
where
    F: Future<Output = Result<Response, Infallible>> + Send + 'static,
{
    if !detach {
        return Either::Right(handling);
    }
    let task = changes.admit().map(|mut place| {
        tokio::spawn(async move {
            let cut = async move {
                // The sender lives as long as the admin application: no cut without it.
                if place.wait_for(|cut| *cut).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                biased;
                answer = handling => answer,
                () = cut => Ok(stopping()),
            }
        })
    });
    Either::Left(async move {
        let Some(task) = task else {
            return Ok(stopping());
        };
        match task.await {
            Ok(answer) => answer,
            // A panic in the handler: an internal error, logged, instead of a dropped connection.
            Err(err) => Ok(ApiError::internal("an admin request's task", err).into_response()),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_detached_request_runs_to_its_end_when_its_answer_is_not_awaited() {
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let changes = Changes::default();
        let answer = handle(true, &changes, async move {
            let _ = go_rx.await;
            let _ = done_tx.send(());
            Ok(Response::default())
        });
        // hyper dropped the request before polling it once.
        drop(answer);
        go_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), done_rx)
            .await
            .expect("the request ran on after its answer was dropped")
            .unwrap();
    }

    #[tokio::test]
    async fn a_panic_in_a_detached_request_is_an_internal_error() {
        let answer = handle(true, &Changes::default(), async {
            if answer_is_lost() {
                panic!("in a handler");
            }
            Ok(Response::default())
        })
        .await
        .unwrap();
        assert_eq!(answer.status(), 500);
    }

    /// Once changes are refused a new one is a 503 that never runs, one in flight is waited
    /// for, and one still running at the bound is cut (answered 503, its handler dropped).
    #[tokio::test]
    async fn at_shutdown_changes_are_refused_waited_for_then_cut() {
        let changes = std::sync::Arc::new(Changes::default());
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let in_flight = tokio::spawn(handle(true, &changes, async move {
            let _ = go_rx.await;
            Ok(Response::default())
        }));
        changes.refuse();
        let refused = handle(true, &changes, async {
            unreachable!("a refused change never runs")
        })
        .await
        .unwrap();
        assert_eq!(refused.status(), 503);
        let c = std::sync::Arc::clone(&changes);
        let finished = tokio::spawn(async move { c.finish(Duration::from_secs(60)).await });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!finished.is_finished(), "a change is still in flight");
        go_tx.send(()).unwrap();
        assert_eq!(in_flight.await.unwrap().unwrap().status(), 200);
        let cut = tokio::time::timeout(Duration::from_secs(10), finished)
            .await
            .expect("finish ends once the change has")
            .unwrap();
        assert_eq!(cut, 0);

        let changes = Changes::default();
        let stuck = handle(true, &changes, std::future::pending());
        assert_eq!(changes.finish(Duration::from_millis(50)).await, 1);
        assert_eq!(stuck.await.unwrap().status(), 503);
    }

    fn answer_is_lost() -> bool {
        true
    }

    #[test]
    fn reads_stay_attached() {
        assert!(!changes_state(&Method::GET));
        assert!(!changes_state(&Method::HEAD));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(changes_state(&m), "{m}");
        }
    }
}

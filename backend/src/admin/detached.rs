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

use std::convert::Infallible;
use std::future::Future;

use axum::http::Method;
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;

use super::error::ApiError;

/// Whether a request with `method` may change state (and so must not stop halfway).
pub(super) fn changes_state(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Handles a request: `handling` (its router future) starts now as its own task when `detach`,
/// so that dropping the returned future leaves it running to its end; else it is returned as
/// it is. Call it where hyper hands the request over, not inside a future hyper may drop
/// before polling it.
pub(super) fn handle<F>(
    detach: bool,
    handling: F,
) -> impl Future<Output = Result<Response, Infallible>> + Send
where
    F: Future<Output = Result<Response, Infallible>> + Send + 'static,
{
    if !detach {
        return Either::Right(handling);
    }
    let task = tokio::spawn(handling);
    Either::Left(async move {
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
        let answer = handle(true, async move {
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
        let answer = handle(true, async {
            if answer_is_lost() {
                panic!("in a handler");
            }
            Ok(Response::default())
        })
        .await
        .unwrap();
        assert_eq!(answer.status(), 500);
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

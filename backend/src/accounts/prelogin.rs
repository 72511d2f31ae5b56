//! What the requests of connections not yet logged in may hold in the backend: Register, and
//! RequestEmailCode and ResetPassword, each run on a task of their own.
//!
//! The shard's pre-login slots (`gateway.logins_in_flight_per_shard_max`) are given back when
//! the connection closes, but the backend's task goes on: without a bound here, clients that
//! send a Register and hang up would pile up tasks waiting for the registration hasher without
//! end, and every one of them would still create its account, long after its client stopped
//! waiting. So each kind holds at most `accounts.registrations_waiting_max` places, from the
//! request queue to the answer (past them `UNAVAILABLE` with a jittered `retry_after_ms`, the
//! one rule of `retry_after.rs`), and a request whose client has gone is dropped before its
//! work: at the start, and a Register again once its turn at the hasher comes.

use std::net::IpAddr;
use std::sync::Arc;

use ringchat_proto::Body;
use ringchat_proto::v1::{self, ErrorCode};
use tokio::sync::oneshot;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Refusal;
use crate::Backend;
use crate::api::AccountRequest;

/// Places of the requests before login, by kind (`accounts.registrations_waiting_max` each):
/// a flood of registrations never takes the places of password resets.
pub(super) struct PreLogin {
    registers: Arc<Semaphore>,
    account_requests: Arc<Semaphore>,
}

impl PreLogin {
    pub(super) fn new(waiting_max: usize) -> Self {
        Self {
            registers: Arc::new(Semaphore::new(waiting_max)),
            account_requests: Arc::new(Semaphore::new(waiting_max)),
        }
    }
}

/// A place among `places` (of `kind`, the metric's label: what the client is told), or the
/// answer when they are all taken.
fn place(
    places: &Arc<Semaphore>,
    kind: &'static str,
    what: &str,
) -> Result<OwnedSemaphorePermit, Refusal> {
    Arc::clone(places).try_acquire_owned().map_err(|_| {
        metrics::counter!("ringchat_account_requests_refused_total", "kind" => kind).increment(1);
        Refusal {
            code: ErrorCode::Unavailable,
            message: format!("too many {what} waiting; retry after retry_after_ms"),
            retry_after_ms: crate::retry_after::unavailable_retry_after_ms(),
        }
    })
}

/// What a request of a client that has gone answers: nobody reads it.
pub(super) fn client_gone() -> Refusal {
    Refusal::new(ErrorCode::Unavailable, "the client has gone")
}

impl Backend {
    /// A Register from the request queue: answered at once when its kind's places are all
    /// taken, else run on a task of its own holding one.
    pub(crate) fn spawn_register(
        self: &Arc<Self>,
        peer: IpAddr,
        body: v1::Register,
        reply: oneshot::Sender<Body>,
    ) {
        let place = match place(
            &self.accounts.prelogin.registers,
            "register",
            "registrations",
        ) {
            Ok(place) => place,
            Err(refusal) => {
                let _ = reply.send(Body::Error(refusal.into_error()));
                return;
            }
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _place = place;
            if reply.is_closed() {
                return;
            }
            let gone = || reply.is_closed();
            let body = match this.accounts.register_unless_gone(peer, body, &gone).await {
                Ok(ok) => {
                    this.observe.registered();
                    Body::RegisterOk(ok)
                }
                Err(refusal) => Body::Error(refusal.into_error()),
            };
            // The connection may have gone meanwhile; nothing to do then.
            let _ = reply.send(body);
        });
    }

    /// A RequestEmailCode or ResetPassword from the request queue, bounded as a Register is.
    pub(crate) fn spawn_account(
        self: &Arc<Self>,
        peer: IpAddr,
        request: AccountRequest,
        reply: oneshot::Sender<Body>,
    ) {
        let places = &self.accounts.prelogin.account_requests;
        let place = match place(places, "account", "e-mail code and password reset requests") {
            Ok(place) => place,
            Err(refusal) => {
                let _ = reply.send(Body::Error(refusal.into_error()));
                return;
            }
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let _place = place;
            if reply.is_closed() {
                return;
            }
            let body = this.account(peer, request).await;
            let _ = reply.send(body);
        });
    }
}

#[cfg(test)]
mod tests;

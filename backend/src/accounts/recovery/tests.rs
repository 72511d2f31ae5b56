//! RequestEmailCode over a real backend (embedded store, real accounts, codes logged, not
//! mailed): what the answer may tell a stranger, and which addresses it takes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ringchat_proto::v1::{self, EmailCodePurpose, ErrorCode};

use crate::config::{EmailVerification, Registration, Settings};
use crate::service::Backend;

fn backend(dir: &tempfile::TempDir, registration: Registration) -> Arc<Backend> {
    let mut settings = Settings::default();
    settings.storage.data_dir = dir.path().join("data");
    settings.accounts.argon2_memory_kib = 8;
    settings.accounts.argon2_iterations = 1;
    settings.accounts.registration = registration;
    settings.email.verification = EmailVerification::Required;
    assert_eq!(settings.problems(), Vec::<String>::new());
    Backend::open(settings, Vec::new()).expect("backend opens")
}

fn peer() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
}

async fn request_code(b: &Backend, email: &str) -> Result<v1::EmailCodeSent, ErrorCode> {
    let req = v1::RequestEmailCode {
        email: email.into(),
        purpose: EmailCodePurpose::Register as i32,
    };
    (b.accounts.request_email_code(peer(), req).await).map_err(|r| r.code)
}

async fn existing_account(b: &Backend) {
    (b.accounts)
        .create_by_operator("alice".into(), "correct horse".into(), "a@x.io".into())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_closed_server_mails_no_registration_codes() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir, Registration::Closed);
    existing_account(&b).await;
    assert_eq!(
        request_code(&b, "a@x.io").await.unwrap_err(),
        ErrorCode::RegistrationClosed,
        "not EMAIL_TAKEN: that would tell a stranger who has an account"
    );
    assert_eq!(
        request_code(&b, "free@x.io").await.unwrap_err(),
        ErrorCode::RegistrationClosed
    );
}

#[tokio::test]
async fn an_invite_server_answers_taken_and_free_addresses_alike() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir, Registration::Invite);
    existing_account(&b).await;
    let taken = request_code(&b, "A@x.io").await;
    let free = request_code(&b, "free@x.io").await;
    let (taken, free) = (taken.unwrap(), free.unwrap());
    assert_eq!(taken.tries_max, free.tries_max);
}

#[tokio::test]
async fn an_open_server_still_says_an_address_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir, Registration::Open);
    existing_account(&b).await;
    assert_eq!(
        request_code(&b, "a@x.io").await.unwrap_err(),
        ErrorCode::EmailTaken
    );
    assert!(request_code(&b, "free@x.io").await.is_ok());
}

#[tokio::test]
async fn addresses_the_mailer_would_refuse_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir, Registration::Open);
    for bad in ["a@b@c.io", "a@.io"] {
        assert_eq!(
            request_code(&b, bad).await.unwrap_err(),
            ErrorCode::InvalidArgument,
            "{bad}"
        );
        let req = v1::Register {
            username: "bob".into(),
            password: "correct horse".into(),
            email: bad.into(),
            email_code: "123456".into(),
            ..Default::default()
        };
        let refused = b.accounts.register(peer(), req).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidArgument, "{bad}");
    }
}

/// Refused together by a full mailer, clients come back spread over [1, 2) s.
#[test]
fn a_full_mailers_refusals_are_jittered() {
    assert_eq!(super::mailer_full().code, ErrorCode::Unavailable);
    crate::retry_after::assert_jittered(super::MAILER_FULL_RETRY_AFTER_MS, || {
        super::mailer_full().retry_after_ms
    });
}

//! Account e-mail: registration codes (off / optional / required), password reset by code,
//! expiry, the wrong-code limit, rate limits, login by e-mail address. Mail goes through a real
//! SMTP server on loopback (aiosmtpd) and the codes are read from the received mails.

mod common;

use common::account::{error_code, hello, login_email, other_than, register, request_code, reset};
use common::mail::SmtpSink;
use common::{PASSWORD, TestServer, expect_kicked_then_closed};
use ringchat_proto::Body;
use ringchat_proto::v1::{self, EmailCodePurpose, ErrorCode, KickReason, login};

const REGISTER: EmailCodePurpose = EmailCodePurpose::Register;
const RESET: EmailCodePurpose = EmailCodePurpose::ResetPassword;

fn server_with(sink: &SmtpSink, extra: &[(&str, &str)]) -> TestServer {
    let env = sink.env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    TestServer::start(&all)
}

/// The e-mail code a server without an SMTP relay wrote to its console. The line is written
/// beside the reply, not before it: waited for.
async fn code_on_the_console(server: &TestServer) -> String {
    let mut line = None;
    common::wait_until_async("the code on the console", || {
        line = server
            .log_tail()
            .lines()
            .find(|l| l.contains("logged, not sent"))
            .map(str::to_owned);
        line.is_some()
    })
    .await;
    common::mail::logged_code(line.as_deref().unwrap())
}

#[tokio::test]
async fn registration_in_required_mode_takes_the_mailed_code_then_login_by_email_works() {
    let mut sink = SmtpSink::start();
    let server = server_with(&sink, &[("EMAIL__VERIFICATION", "required")]);
    let mut c = hello(&server).await;

    // Without an address, or without its code: refused before anything is hashed or stored.
    for (email, code) in [("", ""), ("alice@example.com", ""), ("", "123456")] {
        let refused = register(&mut c, "alice", email, code).await;
        assert_eq!(
            error_code(&refused),
            ErrorCode::EmailCodeRequired,
            "{email:?}/{code:?}"
        );
    }

    let sent = request_code(&mut c, "Alice@Example.com", REGISTER).await;
    let Body::EmailCodeSent(sent) = sent else {
        panic!("{sent:?}")
    };
    assert_eq!(sent.tries_max, 5);
    assert!(sent.expires_at_ms > 0);
    let mail = sink.next_mail_to("Alice@Example.com");
    assert!(mail.raw.contains("multipart/alternative"), "{}", mail.raw);
    assert!(mail.raw.contains("text/plain") && mail.raw.contains("text/html"));
    assert!(mail.raw.contains("From: ringchat <no-reply@ringchat.test>"));
    let code = mail.code();

    let wrong = register(&mut c, "alice", "alice@example.com", &other_than(&code)).await;
    assert_eq!(error_code(&wrong), ErrorCode::EmailCodeInvalid);
    // The code is bound to the address (any case), not to the request.
    let ok = register(&mut c, "alice", "ALICE@example.com", &code).await;
    let Body::RegisterOk(ok) = ok else {
        panic!("{ok:?}")
    };
    let reused = register(&mut c, "alice2", "alice@example.com", &code).await;
    assert_eq!(
        error_code(&reused),
        ErrorCode::EmailTaken,
        "the address is taken now"
    );
    let again = request_code(&mut c, "alice@EXAMPLE.com", REGISTER).await;
    assert_eq!(error_code(&again), ErrorCode::EmailTaken);

    // Log in with the address, in any case, as with the name.
    let mut d = hello(&server).await;
    let wrong = login_email(&mut d, "alice@example.com", "not the password", "web").await;
    assert_eq!(error_code(&wrong), ErrorCode::InvalidCredentials);
    let unknown = login_email(&mut d, "nobody@example.com", PASSWORD, "web").await;
    assert_eq!(error_code(&unknown), ErrorCode::InvalidCredentials);
    let Body::LoginOk(by_email) = login_email(&mut d, "aLiCe@example.COM", PASSWORD, "web").await
    else {
        panic!("login by e-mail")
    };
    assert_eq!(by_email.user_id, ok.user_id);
    // A token login may name the account by address too.
    let mut t = hello(&server).await;
    let by_token = t
        .login(v1::Login {
            account: Some(login::Account::Email("alice@example.com".into())),
            credential: Some(login::Credential::Token(by_email.token.clone())),
            device_id: "web".into(),
            platform: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_token.user_id, ok.user_id);
}

#[tokio::test]
async fn optional_mode_verifies_a_given_address_and_off_mode_takes_it_as_typed() {
    let mut sink = SmtpSink::start();
    let server = server_with(&sink, &[("EMAIL__VERIFICATION", "optional")]);
    let mut c = hello(&server).await;
    assert!(matches!(
        register(&mut c, "nomail", "", "").await,
        Body::RegisterOk(_)
    ));
    let unverified = register(&mut c, "carol", "carol@example.com", "").await;
    assert_eq!(error_code(&unverified), ErrorCode::EmailCodeRequired);
    request_code(&mut c, "carol@example.com", REGISTER).await;
    let code = sink.next_mail_to("carol@example.com").code();
    assert!(matches!(
        register(&mut c, "carol", "carol@example.com", &code).await,
        Body::RegisterOk(_)
    ));
    drop(server);

    let server = server_with(&sink, &[("EMAIL__VERIFICATION", "off")]);
    let mut c = hello(&server).await;
    let off = request_code(&mut c, "dave@example.com", REGISTER).await;
    assert_eq!(error_code(&off), ErrorCode::EmailVerificationOff);
    assert!(matches!(
        register(&mut c, "dave", "Dave@Example.com", "").await,
        Body::RegisterOk(_)
    ));
    let taken = register(&mut c, "dave2", "dave@example.COM", "").await;
    assert_eq!(
        error_code(&taken),
        ErrorCode::EmailTaken,
        "unique, case-folded"
    );
    assert!(matches!(
        login_email(&mut c, "dave@example.com", PASSWORD, "web").await,
        Body::LoginOk(_)
    ));
}

#[tokio::test]
async fn a_password_reset_by_code_signs_out_every_device_and_tells_strangers_nothing() {
    let mut sink = SmtpSink::start();
    let server = server_with(&sink, &[]);
    let mut c = hello(&server).await;
    assert!(matches!(
        register(&mut c, "alice", "alice@example.com", "").await,
        Body::RegisterOk(_)
    ));
    let (mut phone, phone_ok) = server.device("alice", "phone").await;
    let (mut laptop, _) = server.device("alice", "laptop").await;

    // An address without an account gets the same answer, and no mail.
    let unknown = request_code(&mut c, "nobody@example.com", RESET).await;
    let known = request_code(&mut c, "ALICE@example.com", RESET).await;
    let (Body::EmailCodeSent(u), Body::EmailCodeSent(k)) = (&unknown, &known) else {
        panic!("{unknown:?} / {known:?}")
    };
    assert_eq!(u.tries_max, k.tries_max);
    let code = sink.next_mail_to("ALICE@example.com").code();
    assert_eq!(sink.drain(), 1, "only the account's address was mailed");
    let guess = reset(&mut c, "nobody@example.com", &code, "a new password").await;
    assert_eq!(error_code(&guess), ErrorCode::EmailCodeInvalid);

    let short = reset(&mut c, "alice@example.com", &code, "short").await;
    assert_eq!(error_code(&short), ErrorCode::InvalidArgument);
    let wrong = reset(
        &mut c,
        "alice@example.com",
        &other_than(&code),
        "a new password",
    )
    .await;
    assert_eq!(error_code(&wrong), ErrorCode::EmailCodeInvalid);
    let ok = reset(&mut c, "alice@example.com", &code, "a new password").await;
    let Body::ResetPasswordOk(ok) = ok else {
        panic!("{ok:?}")
    };
    assert_eq!(ok.user_id, phone_ok.user_id);
    assert_eq!(
        expect_kicked_then_closed(&mut phone).await,
        KickReason::PasswordChanged
    );
    assert_eq!(
        expect_kicked_then_closed(&mut laptop).await,
        KickReason::PasswordChanged
    );
    let used = reset(&mut c, "alice@example.com", &code, "another password").await;
    assert_eq!(
        error_code(&used),
        ErrorCode::EmailCodeInvalid,
        "a code works once"
    );

    let mut d = hello(&server).await;
    let old_token = d
        .login_token(phone_ok.user_id, &phone_ok.token, "phone")
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        old_token.code(),
        ErrorCode::InvalidCredentials,
        "tokens revoked"
    );
    let old = d.login_password("alice", PASSWORD, "phone").await.unwrap();
    assert_eq!(old.unwrap_err().code(), ErrorCode::InvalidCredentials);
    let new = d
        .login_password("alice", "a new password", "phone")
        .await
        .unwrap();
    assert_eq!(new.unwrap().user_id, phone_ok.user_id);
}

/// A reset code goes to the address stored on the account, never to the address as typed:
/// "\u{212A}ate@…" (a Kelvin sign) folds to kate@…'s key, but names another mailbox.
#[tokio::test]
async fn a_reset_code_goes_to_the_stored_address_not_the_typed_one() {
    let mut sink = SmtpSink::start();
    let server = server_with(&sink, &[]);
    let mut c = hello(&server).await;
    assert!(matches!(
        register(&mut c, "kate", "kate@example.com", "").await,
        Body::RegisterOk(_)
    ));
    let sent = request_code(&mut c, "\u{212A}ate@example.com", RESET).await;
    assert!(matches!(sent, Body::EmailCodeSent(_)), "{sent:?}");
    let code = sink.next_mail_to("kate@example.com").code();
    let ok = reset(&mut c, "kate@example.com", &code, "a new password").await;
    assert!(matches!(ok, Body::ResetPasswordOk(_)), "{ok:?}");
}

#[tokio::test]
async fn codes_expire() {
    let mut sink = SmtpSink::start();
    let server = server_with(&sink, &[("EMAIL__CODE_TTL_S", "1")]);
    let mut c = hello(&server).await;
    register(&mut c, "alice", "alice@example.com", "").await;
    let Body::EmailCodeSent(sent) = request_code(&mut c, "alice@example.com", RESET).await else {
        panic!("code sent")
    };
    let code = sink.next_mail_to("alice@example.com").code();
    // The server said when the code stops working: wait past that instant.
    let now = ringchat_backend::api::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(
        sent.expires_at_ms.saturating_sub(now) + 50,
    ))
    .await;
    let late = reset(&mut c, "alice@example.com", &code, "a new password").await;
    assert_eq!(error_code(&late), ErrorCode::EmailCodeExpired);
    let gone = reset(&mut c, "alice@example.com", &code, "a new password").await;
    assert_eq!(
        error_code(&gone),
        ErrorCode::EmailCodeInvalid,
        "an expired code is dropped"
    );
}

#[tokio::test]
async fn wrong_codes_use_up_the_tries_and_void_the_code() {
    let mut sink = SmtpSink::start();
    let server = server_with(&sink, &[("EMAIL__CODE_TRIES_MAX", "3")]);
    let mut c = hello(&server).await;
    register(&mut c, "alice", "alice@example.com", "").await;
    let Body::EmailCodeSent(sent) = request_code(&mut c, "alice@example.com", RESET).await else {
        panic!("code sent")
    };
    assert_eq!(sent.tries_max, 3);
    let code = sink.next_mail_to("alice@example.com").code();
    let bad = other_than(&code);
    for _ in 0..2 {
        let e = reset(&mut c, "alice@example.com", &bad, "a new password").await;
        assert_eq!(error_code(&e), ErrorCode::EmailCodeInvalid);
    }
    let last = reset(&mut c, "alice@example.com", &bad, "a new password").await;
    assert_eq!(error_code(&last), ErrorCode::EmailCodeTriesExhausted);
    let right = reset(&mut c, "alice@example.com", &code, "a new password").await;
    assert_eq!(
        error_code(&right),
        ErrorCode::EmailCodeInvalid,
        "void, even the right code"
    );
    // The password did not change.
    let mut d = hello(&server).await;
    assert!(
        d.login_password("alice", PASSWORD, "x")
            .await
            .unwrap()
            .is_ok()
    );
}

#[tokio::test]
async fn code_requests_are_rate_limited_per_address_and_per_client_address() {
    let mut sink = SmtpSink::start();
    let server = server_with(
        &sink,
        &[
            ("EMAIL__VERIFICATION", "required"),
            ("EMAIL__CODE_RESEND_INTERVAL_S", "30"),
        ],
    );
    let mut c = hello(&server).await;
    assert!(matches!(
        request_code(&mut c, "a@example.com", REGISTER).await,
        Body::EmailCodeSent(_)
    ));
    let Body::Error(soon) = request_code(&mut c, "A@example.com", REGISTER).await else {
        panic!("a resend at once is refused")
    };
    assert_eq!(soon.code, ErrorCode::RateLimited as i32);
    assert!(
        (1..=30_000).contains(&soon.retry_after_ms),
        "{}",
        soon.retry_after_ms
    );
    drop(server);

    let server = server_with(
        &sink,
        &[
            ("EMAIL__VERIFICATION", "required"),
            ("EMAIL__CODE_RESEND_INTERVAL_S", "0"),
            ("EMAIL__CODES_PER_ADDRESS_MAX", "2"),
            ("EMAIL__CODES_PER_IP_MAX", "4"),
        ],
    );
    let mut c = hello(&server).await;
    for _ in 0..2 {
        let sent = request_code(&mut c, "a@example.com", REGISTER).await;
        assert!(matches!(sent, Body::EmailCodeSent(_)), "{sent:?}");
    }
    let Body::Error(per_address) = request_code(&mut c, "a@example.com", REGISTER).await else {
        panic!("a third code to one address is refused")
    };
    assert_eq!(per_address.code, ErrorCode::RateLimited as i32);
    assert!(per_address.retry_after_ms > 0);
    // The same client, other addresses: four codes in all (the refused one counted too).
    let sent = request_code(&mut c, "b@example.com", REGISTER).await;
    assert!(matches!(sent, Body::EmailCodeSent(_)), "{sent:?}");
    let per_ip = request_code(&mut c, "c@example.com", REGISTER).await;
    assert_eq!(error_code(&per_ip), ErrorCode::RateLimited);
    // Still answered on the same connection: a limit is an error, never a disconnect.
    c.ping().await.unwrap();
    drop(server);

    // "Taken" answers are counted too: they cannot test addresses past the budget.
    let server = server_with(
        &sink,
        &[
            ("EMAIL__VERIFICATION", "optional"),
            ("EMAIL__CODE_RESEND_INTERVAL_S", "0"),
            ("EMAIL__CODES_PER_IP_MAX", "3"),
        ],
    );
    let mut c = hello(&server).await;
    let sent = request_code(&mut c, "taken@example.com", REGISTER).await;
    assert!(matches!(sent, Body::EmailCodeSent(_)), "{sent:?}");
    let code = sink.next_mail_to("taken@example.com").code();
    assert!(matches!(
        register(&mut c, "taken", "taken@example.com", &code).await,
        Body::RegisterOk(_)
    ));
    for _ in 0..2 {
        let taken = request_code(&mut c, "taken@example.com", REGISTER).await;
        assert_eq!(error_code(&taken), ErrorCode::EmailTaken);
    }
    let spent = request_code(&mut c, "taken@example.com", REGISTER).await;
    assert_eq!(error_code(&spent), ErrorCode::RateLimited);
}

#[tokio::test]
async fn without_smtp_codes_are_only_logged_and_the_server_says_so() {
    let server = TestServer::start(&[("EMAIL__VERIFICATION", "required")]);
    assert!(
        server.log_lines_with("e-mail codes are NOT sent, only shown on the console") >= 1,
        "{}",
        server.log_tail()
    );
    let mut c = hello(&server).await;
    assert!(matches!(
        request_code(&mut c, "a@example.com", REGISTER).await,
        Body::EmailCodeSent(_)
    ));
    let code = code_on_the_console(&server).await;
    assert!(matches!(
        register(&mut c, "alice", "a@example.com", &code).await,
        Body::RegisterOk(_)
    ));
}

/// Without a relay, a reset code is on the console only: a viewer (the log API's read-only
/// role) who could read it from the files or the live tail could take over the account.
#[tokio::test]
async fn without_smtp_a_reset_code_stays_out_of_the_log_api() {
    let server = TestServer::start(&[]);
    let mut c = hello(&server).await;
    assert!(matches!(
        register(&mut c, "alice", "alice@example.com", "").await,
        Body::RegisterOk(_)
    ));
    assert!(matches!(
        request_code(&mut c, "alice@example.com", RESET).await,
        Body::EmailCodeSent(_)
    ));
    let code = code_on_the_console(&server).await;

    // An event logged after the code's: once a reader has it, the code's line was written too
    // (one writer, in order), had it gone to the files or the tail.
    let admin = server.api_key("ops", "admin");
    let viewer_key = {
        let out = server.admin_cli(&["add-key", "watch", "--role", "viewer"], "");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let viewer = common::admin::AdminClient::new(&server).with_key(&viewer_key);
    let marker = "codemarker3";
    let (status, body) = admin.call(
        "PUT",
        "/api/logs/filter",
        Some(serde_json::json!({ "filter": format!("info,{marker}=debug") }).to_string()),
    );
    assert_eq!(status, 200, "{body}");
    common::wait_until_async("the marker in the log files", || {
        viewer.get(&format!("/api/logs?q={marker}")).1["items"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    for q in [code.as_str(), "logged, not sent"] {
        let (status, page) = viewer.get(&format!("/api/logs?q={}", q.replace(' ', "%20")));
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["items"], serde_json::json!([]), "{q:?} is searchable");
    }
    let (status, _, export) = viewer.get_text("/api/logs/export");
    assert_eq!(status, 200);
    assert!(export.contains(marker), "the export has the marker");
    assert!(!export.contains(&code), "the code is in the export");
    // The live tail's ring, oldest first, up to the marker: no code.
    let tail = common::sse::Sse::open(server.admin, Some(&viewer_key), "backlog=2048", None);
    assert_eq!(tail.status, 200);
    loop {
        let (_, event) = tail.next_log();
        let text = event.to_string();
        assert!(
            !text.contains(&code),
            "the code is in the live tail: {text}"
        );
        if text.contains(marker) {
            break;
        }
    }
}

#[tokio::test]
async fn operator_templates_replace_the_built_in_mail() {
    let mut sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("reset_password.subject"),
        "Reset at {{server_name}}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("reset_password.txt"),
        "Custom plain text. Code {{code}} for {{email}}, {{minutes}} min.",
    )
    .unwrap();
    let templates = dir.path().display().to_string();
    let server = server_with(&sink, &[("EMAIL__TEMPLATES_DIR", &templates)]);
    let mut c = hello(&server).await;
    register(&mut c, "alice", "alice@example.com", "").await;
    request_code(&mut c, "alice@example.com", RESET).await;
    let mail = sink.next_mail_to("alice@example.com");
    assert!(
        mail.raw.contains("Subject: Reset at ringchat"),
        "{}",
        mail.raw
    );
    assert!(
        mail.raw.contains("Custom plain text. Code "),
        "{}",
        mail.raw
    );
    assert!(
        mail.raw.contains("for alice@example.com, 10 min."),
        "{}",
        mail.raw
    );
    assert!(
        mail.raw.contains("text/html"),
        "the built-in HTML part stays"
    );
    let code = mail.code();
    assert!(matches!(
        reset(&mut c, "alice@example.com", &code, "a new password").await,
        Body::ResetPasswordOk(_)
    ));
}

#[tokio::test]
async fn bad_code_requests_get_clear_errors() {
    let server = TestServer::start(&[("EMAIL__VERIFICATION", "optional")]);
    let mut c = hello(&server).await;
    for (email, purpose) in [
        ("", REGISTER as i32),
        ("not an address", REGISTER as i32),
        ("a@example.com", EmailCodePurpose::Unspecified as i32),
        ("a@example.com", 99),
    ] {
        let body = c
            .request(Body::RequestEmailCode(v1::RequestEmailCode {
                email: email.into(),
                purpose,
            }))
            .await
            .unwrap();
        assert_eq!(
            error_code(&body),
            ErrorCode::InvalidArgument,
            "{email:?} {purpose}"
        );
    }
    let no_email = reset(&mut c, "", "123456", "a new password").await;
    assert_eq!(error_code(&no_email), ErrorCode::InvalidArgument);
    // Before and after login.
    let (mut alice, _) = server.user("alice").await;
    let after = request_code(&mut alice, "a@example.com", RESET).await;
    assert_eq!(error_code(&after), ErrorCode::AlreadyAuthenticated);
    let mut fresh = server.client().await;
    let before_hello = fresh
        .request(Body::RequestEmailCode(v1::RequestEmailCode {
            email: "a@example.com".into(),
            purpose: RESET as i32,
        }))
        .await
        .unwrap();
    assert_eq!(error_code(&before_hello), ErrorCode::HelloRequired);
}
